"""Runtime behaviour: compaction, ordering, early stop, no-copy, and input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import eeopt
from eeopt.errors import DataError, UsageError

import topologies as T


@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> eeopt.Program:
    model = T.make("masked", 3)
    d = tmp_path_factory.mktemp("masked") / "program"
    return eeopt.compile(model, d, example_inputs=T.example("masked", 4, 0), threshold=0.5)


def _feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    x, mask = T.example("masked", batch, seed)
    return {"x": x.numpy(), "mask": mask.numpy()}


class _Spy:
    """Records what each stage was fed and how many rows it ran (through
    ``OrtProgram.instrument``)."""

    def __init__(self, prog: eeopt.Program) -> None:
        self.calls: list[tuple[int, dict[str, np.ndarray]]] = []
        spy = self

        class Run:
            def __init__(self, k: int, inner: object) -> None:
                self.k, self.inner = k, inner

            def __call__(self, fetch, feeds, options):  # type: ignore[no-untyped-def]
                spy.calls.append((self.k, dict(feeds)))
                return self.inner(fetch, feeds, options)  # type: ignore[operator]

        prog.instrument(Run)  # type: ignore[attr-defined]


def test_rows_come_back_in_original_order(masked: eeopt.Program) -> None:
    feeds = _feeds(40, 1)
    perm = np.random.default_rng(0).permutation(40)
    thr = [0.4, 0.45]
    a = masked.run(feeds, thresholds=thr)
    b = masked.run({k: v[perm] for k, v in feeds.items()}, thresholds=thr)
    assert len(np.unique(a.exit)) >= 2
    np.testing.assert_array_equal(b.exit, a.exit[perm])
    np.testing.assert_allclose(b.logits, a.logits[perm], rtol=1e-5, atol=1e-6)


def test_exited_rows_leave_the_batch(masked: eeopt.Program) -> None:
    prog = eeopt.load(masked.path)
    spy = _Spy(prog)
    res = prog.run(_feeds(64, 2), thresholds=[0.4, 0.45])
    counts = np.bincount(res.exit, minlength=3)
    assert counts[0] > 0 and counts[0] < 64
    rows = {k: next(iter(f.values())).shape[0] for k, f in spy.calls}
    assert rows[0] == 64
    assert rows[1] == 64 - counts[0]
    if 2 in rows:
        assert rows[2] == counts[2]
    # the mask that later layers read arrives compacted, row for row
    stage1_feeds = spy.calls[1][1]
    for name, arr in stage1_feeds.items():
        if name != "eeopt_threshold":
            assert arr.shape[0] == 64 - counts[0], name


def test_stops_when_no_row_remains(masked: eeopt.Program) -> None:
    prog = eeopt.load(masked.path)
    spy = _Spy(prog)
    res = prog.run(_feeds(16), thresholds=[1e-6, 1e-6])
    assert (res.exit == 0).all()
    assert [k for k, _ in spy.calls] == [0]


def test_no_copy_when_no_row_exits(masked: eeopt.Program) -> None:
    prog = eeopt.load(masked.path)
    spy = _Spy(prog)
    prog.run(_feeds(8), thresholds=[2.0, 2.0])
    assert [k for k, _ in spy.calls] == [0, 1, 2]
    # the tensors stage 0 made reach stage 1 as the very same arrays
    s1 = spy.calls[1][1]
    s2 = spy.calls[2][1]
    shared = set(s1) & set(s2) - {"eeopt_threshold"}
    assert shared
    for name in shared:
        assert s1[name] is s2[name]


def test_empty_batch(masked: eeopt.Program) -> None:
    res = masked.run(_feeds(0))
    assert res.logits.shape == (0, masked.num_classes) and res.exit.shape == (0,)


def test_missing_input(masked: eeopt.Program) -> None:
    feeds = _feeds(3)
    del feeds["mask"]
    with pytest.raises(DataError, match="missing input 'mask'"):
        masked.run(feeds)


def test_unknown_input(masked: eeopt.Program) -> None:
    with pytest.raises(DataError, match="unknown input 'y'"):
        masked.run({**_feeds(3), "y": np.zeros(3, np.float32)})


def test_wrong_dtype(masked: eeopt.Program) -> None:
    feeds = _feeds(3)
    feeds["x"] = feeds["x"].astype(np.float64)
    with pytest.raises(DataError, match="dtype float64, expected float32"):
        masked.run(feeds)


def test_wrong_shape(masked: eeopt.Program) -> None:
    feeds = _feeds(3)
    feeds["x"] = feeds["x"][:, :, :4].copy()
    with pytest.raises(DataError, match="axis 2 must be 6"):
        masked.run(feeds)
    feeds = _feeds(3)
    feeds["mask"] = feeds["mask"][None]
    with pytest.raises(DataError, match="rank 2"):
        masked.run(feeds)


def test_batch_mismatch_between_inputs(masked: eeopt.Program) -> None:
    feeds = _feeds(3)
    feeds["mask"] = _feeds(4)["mask"]
    with pytest.raises(DataError, match="batch size"):
        masked.run(feeds)


def test_bare_array_for_two_inputs(masked: eeopt.Program) -> None:
    with pytest.raises(DataError, match="pass a dict"):
        masked.run(_feeds(3)["x"])


def test_threshold_count_override(masked: eeopt.Program) -> None:
    with pytest.raises(UsageError, match="2 gated exits"):
        masked.run(_feeds(3), thresholds=[0.5])


def test_program_repr_and_properties(masked: eeopt.Program, tmp_path: Path) -> None:
    assert masked.num_exits == 3 and masked.num_classes == 3
    assert [s.name for s in masked.input_specs] == ["x", "mask"]
    assert "exits=3" in repr(masked)


@pytest.mark.parametrize("thr", [[1e-6, 1e-6], [2.0, 2.0], [0.5, 0.6], [0.7, 1e-6]])
def test_one_row_path_matches_the_batched_path(masked: eeopt.Program, thr: list[float]) -> None:
    """A single row takes its own lean path; row by row it must give what the batch gives."""
    feeds = _feeds(12, seed=3)
    whole = masked.run(feeds, thresholds=thr)
    for i in range(12):
        one = masked.run({k: v[i:i + 1] for k, v in feeds.items()}, thresholds=thr)
        assert one.logits.dtype == np.float32 and one.logits.shape == (1, masked.num_classes)
        assert one.exit.dtype == np.int64 and one.exit.shape == (1,)
        assert one.exit[0] == whole.exit[i]
        np.testing.assert_allclose(one.logits[0], whole.logits[i], rtol=1e-5, atol=1e-6)


def test_one_row_runs_only_up_to_its_exit(masked: eeopt.Program) -> None:
    prog = eeopt.load(masked.path)
    spy = _Spy(prog)
    row = {k: v[:1] for k, v in _feeds(1).items()}
    assert prog.run(row, thresholds=[2.0, 1e-6]).exit[0] == 1
    assert [k for k, _ in spy.calls] == [0, 1]


@pytest.fixture(scope="module")
def single_input(tmp_path_factory: pytest.TempPathFactory) -> eeopt.Program:
    d = tmp_path_factory.mktemp("residual") / "program"
    return eeopt.compile(T.make("residual", 0), d, example_inputs=T.example("residual", 4, 0),
                         threshold=0.5)


def test_single_input_checks(single_input: eeopt.Program) -> None:
    x = T.example("residual", 3, 1)[0].numpy()
    assert single_input.run(x).exit.shape == (3,)
    with pytest.raises(DataError, match="dtype|float"):
        single_input.run(x.astype(np.float64))
    with pytest.raises(DataError, match="shape|dim"):
        single_input.run(x[:, :, :-1])
    with pytest.raises(DataError):
        single_input.run(x[0])  # the batch axis dropped
    with pytest.raises(DataError):
        single_input.run(np.float32(1.0))  # type: ignore[arg-type]
    one = x[:1]  # the one-row fast path checks the same things
    assert single_input.run(one).exit.shape == (1,)
    with pytest.raises(DataError, match="dtype|float"):
        single_input.run(one.astype(np.float64))
    with pytest.raises(DataError, match="shape|dim"):
        single_input.run(one[:, :, :-1])
    with pytest.raises(DataError):
        single_input.run(one[..., None])


def test_fast_run_falls_back_to_the_public_run() -> None:
    """Without ONNX Runtime's ``_sess`` binding, stage calls use ``InferenceSession.run``,
    which takes the same arguments."""
    from eeopt.runtime import fast_run

    class Public:
        def run(self, fetch, feeds, options=None):  # type: ignore[no-untyped-def]
            return ["public", fetch, feeds, options]

    class Bound(Public):
        class _Binding:
            def run(self, fetch, feeds, options):  # type: ignore[no-untyped-def]
                return ["binding", fetch, feeds, options]

        _sess = _Binding()

    assert fast_run(Public())(["y"], {"x": 1}, None)[0] == "public"
    assert fast_run(Bound())(["y"], {"x": 1}, None)[0] == "binding"


def test_result_is_immutable(masked: eeopt.Program) -> None:
    res = masked.run(_feeds(3))
    with pytest.raises(AttributeError):
        res.exit = np.zeros(3, dtype=np.int64)  # type: ignore[misc]
    logits, exits = res
    assert logits is res.logits and exits is res.exit


def test_one_row_path_does_not_touch_the_callers_feeds(masked: eeopt.Program) -> None:
    row = {k: v[:1] for k, v in _feeds(1).items()}
    before = dict(row)
    masked.run(row, thresholds=[2.0, 2.0])  # every stage runs, carried tensors pass along
    assert row.keys() == before.keys() and all(row[k] is before[k] for k in row)


def test_stage_calls_are_the_stages_with_no_exit(masked: eeopt.Program) -> None:
    """Each bare stage call gives that stage's logits for every row (what run_all gives), and
    the first one takes other rows of the graph inputs in place of its own."""
    feeds = _feeds(5, seed=2)
    calls = masked.stage_calls(feeds)
    want = masked.run_all(feeds)
    assert len(calls) == masked.num_exits
    for call, w in zip(calls, want, strict=True):
        np.testing.assert_allclose(call()[0], w, rtol=1e-6, atol=1e-6)
    other = _feeds(5, seed=3)
    np.testing.assert_allclose(calls[0](other)[0], masked.run_all(other)[0], rtol=1e-6,
                               atol=1e-6)


def test_one_row_at_a_time_matches_the_batch(single_input: eeopt.Program,
                                             tmp_path: Path) -> None:
    """Row by row (the one-row fast path, which calls the first stage itself) gives the
    batch run's exits and logits, for rows that leave at every exit."""
    x = T.example("residual", 64, 5)[0].numpy()
    thr = []  # each gated exit's median max-probability: about half the rows leave there
    for z in single_input.run_all(x)[:-1]:
        p = np.exp(z - z.max(axis=1, keepdims=True))
        thr.append(float(np.median(p.max(axis=1) / p.sum(axis=1))))
    prog = eeopt.compile(T.make("residual", 0), tmp_path / "p",
                         example_inputs=T.example("residual", 4, 0), thresholds=thr)
    assert prog.one_row_fast_path  # type: ignore[attr-defined]
    batch = prog.run(x)
    assert set(batch.exit.tolist()) == set(range(prog.num_exits))
    name = prog.input_specs[0].name
    for i in range(x.shape[0]):
        for one in (prog.run(x[i:i + 1]), prog.run({name: x[i:i + 1]})):
            assert one.exit.tolist() == [batch.exit[i]]
            np.testing.assert_allclose(one.logits[0], batch.logits[i], rtol=1e-5, atol=1e-5)
