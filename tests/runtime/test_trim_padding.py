"""Right padding is cut to the longest remaining row: at the start of a run and after every
compaction. The exits and logits are those of the untrimmed run; left padding is refused, and
a model whose exits read padded positions gets no trimming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eeopt
from eeopt.errors import DataError, ManifestError, UsageError

from topologies import TinyEncoder, token_batch

SEQ = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


class PoolsOverPadding(TinyEncoder):
    """Its last exit averages every position, padding included: padding changes it."""

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = super().forward(input_ids, attention_mask)
        h = self.embed(input_ids).mean(dim=1)
        return (*outs[:-1], outs[-1] + self.exits[-1](h))


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("trim") / "p"
    return eeopt.compile(TinyEncoder().eval(), out, example_inputs=token_batch(4, 37, seed=1),
                         threshold=0.5, dynamic_shapes=SEQ)


def _feeds(rows: int, length: int, seed: int, longest: int | None = None) -> dict[str, Any]:
    ids, mask = token_batch(rows, longest or length, seed=seed)
    pad = length - mask.shape[1]
    ids, mask = (torch.nn.functional.pad(t, (0, pad)) for t in (ids, mask))
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def test_the_compile_finds_the_sequence_axis(program: Any) -> None:
    seq = program.manifest.sequence
    assert seq is not None and seq.mask == "attention_mask"
    assert seq.axes["input_ids"] == 1 and seq.axes["attention_mask"] == 1
    assert len(seq.axes) > 2  # carried hidden states too
    assert program.trim_padding


@pytest.mark.parametrize("seed", range(3))
def test_trimmed_equals_untrimmed_and_each_stage_sees_the_longest_remaining_row(
        program: Any, seed: int) -> None:
    feeds = _feeds(48, 64, seed=seed)
    lengths = feeds["attention_mask"].sum(axis=1)
    seq_axes = program.manifest.sequence.axes
    seen: list[tuple[int, int]] = []

    def wrap(k: int, run: Any) -> Any:
        def call(fetch: Any, sfeeds: dict[str, np.ndarray], ro: Any) -> Any:
            name = next(n for n in sfeeds if n in seq_axes)
            seen.append((k, sfeeds[name].shape[seq_axes[name]]))
            return run(fetch, sfeeds, ro)
        return call

    rng = np.random.default_rng(seed)
    trimmed_somewhere = False
    for _ in range(6):
        thr = [float(t) for t in rng.uniform(0.34, 0.5, 2)]
        seen.clear()
        program.instrument(wrap)
        try:
            a = program.run(feeds, thresholds=thr)
        finally:
            program.instrument(None)
        program.trim_padding = False
        try:
            b = program.run(feeds, thresholds=thr)
        finally:
            program.trim_padding = True
        np.testing.assert_array_equal(a.exit, b.exit)
        np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
        for k, got in seen:  # exactly the longest row that reaches stage k
            assert got == lengths[a.exit >= k].max()
            trimmed_somewhere |= got < 64
    assert trimmed_somewhere


def test_a_batch_of_short_rows_is_cut_before_the_first_stage(program: Any) -> None:
    feeds = _feeds(5, 64, seed=9, longest=10)
    program.trim_padding = False
    try:
        want = program.run(feeds)
        one = program.run({k: v[:1] for k, v in feeds.items()})
    finally:
        program.trim_padding = True
    got = program.run(feeds)
    np.testing.assert_array_equal(got.exit, want.exit)
    np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-5)
    got1 = program.run({k: v[:1] for k, v in feeds.items()})  # the one-row path trims too
    np.testing.assert_allclose(got1.logits, one.logits, rtol=0, atol=1e-5)


def test_left_padding_is_refused_while_trimming(program: Any) -> None:
    feeds = _feeds(4, 16, seed=2)
    left = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in feeds.items()}
    row = int(np.flatnonzero(left["attention_mask"][:, 0] == 0)[0])
    with pytest.raises(DataError, match=f"row {row} has a token after padding.*padding_side"):
        program.run(left)
    program.trim_padding = False
    try:
        program.run(left)  # without trimming the model's own mask handles it
    finally:
        program.trim_padding = True


def test_a_model_that_reads_padding_is_not_trimmed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    prog = eeopt.compile(PoolsOverPadding().eval(), tmp_path / "p", threshold=0.5,
                         example_inputs=token_batch(4, 37, seed=1), dynamic_shapes=SEQ)
    assert prog.manifest.sequence is None and not prog.trim_padding
    with pytest.raises(UsageError, match="no sequence axis to trim"):
        prog.trim_padding = True


def test_a_tampered_sequence_is_refused_at_load(program: Any, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "p"
    shutil.copytree(program.path, d)
    m = json.loads((d / "manifest.json").read_text())
    m["sequence"]["axes"]["nowhere"] = 1
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="sequence.axes names 'nowhere'"):
        eeopt.load(d)
    m["sequence"]["axes"].pop("nowhere")
    m["sequence"]["axes"]["input_ids"] = 0  # the batch axis
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="not one of its non-batch axes"):
        eeopt.load(d)


@pytest.mark.parametrize("buckets", [True, False])
def test_batches_of_similar_length_return_every_row_in_order(program: Any,
                                                            buckets: bool) -> None:
    feeds = _feeds(50, 64, seed=11)
    want = program.run(feeds, thresholds=[0.4, 0.45])
    got = program.run_in_batches(feeds, 8, buckets=buckets, thresholds=[0.4, 0.45])
    np.testing.assert_array_equal(got.exit, want.exit)
    np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-5)


def test_eeopt_run_buckets_text_rows(program: Any, tmp_path: Path) -> None:
    from eeopt.cli import main

    feeds = _feeds(40, 64, seed=12)
    np.savez(tmp_path / "x.npz", **feeds)
    want = program.run(feeds)
    for extra in ([], ["--no-buckets"]):
        out = tmp_path / f"out{len(extra)}.npz"
        assert main(["run", str(program.path), "--input", str(tmp_path / "x.npz"), "--output",
                     str(out), "--batch-size", "6", *extra]) == 0
        with np.load(out) as z:
            np.testing.assert_array_equal(z["exit"], want.exit)
            np.testing.assert_allclose(z["logits"], want.logits, rtol=0, atol=1e-5)


def test_bench_batches_text_by_length_against_a_cut_plain_network(tmp_path: Path) -> None:
    import onnx

    from eeopt.bench import format_bench, run_bench
    from eeopt.frontend import export_torch

    torch.manual_seed(0)
    proto = export_torch(TinyEncoder().eval(), token_batch(4, 37, seed=1), dynamic_shapes=SEQ)
    onnx.save(proto, tmp_path / "m.onnx")
    feeds = _feeds(96, 48, seed=13)
    labels = np.random.default_rng(0).integers(0, 3, 96)
    np.savez(tmp_path / "data.npz", y=labels, **feeds)
    eeopt.compile(tmp_path / "m.onnx", tmp_path / "p", threshold=0.4)
    res = run_bench(str(tmp_path / "p"), str(tmp_path / "data.npz"), batches=(1, 16),
                    passes=1, progress=False)
    assert res["text"]["mask"] == "attention_mask"
    assert res["accuracy"]["plain"] == pytest.approx(
        float((eeopt.load(tmp_path / "p").run(feeds, thresholds=1.0).prediction
               == labels).mean()))
    assert "text: batches of rows of similar length" in format_bench(res)


@pytest.mark.parametrize("policy", ["patience", "entropy", "jei", "gate-unit"])
def test_every_text_policy_trims_to_the_untrimmed_result(policy: str, tmp_path: Path) -> None:
    """Patience carries per-row state across compactions; the learned gates pool the hidden
    state the head reads. Both must see the same rows whether padding is cut or not."""
    torch.manual_seed(3)
    model = TinyEncoder(layers=4).eval()
    ids, mask = token_batch(200, 24, seed=4)
    with torch.no_grad():
        labels = model(ids, mask)[-1].argmax(1).numpy()
    kw: dict[str, Any] = {"threshold": {"patience": 2, "entropy": 1.09}.get(policy, 0.5)}
    if policy in ("jei", "gate-unit"):
        kw["calib"] = ({"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, labels)
    prog = eeopt.compile(model, tmp_path / "p", example_inputs=token_batch(4, 37, seed=1),
                         dynamic_shapes=SEQ, policy=policy, **kw)
    assert prog.trim_padding
    feeds = _feeds(64, 48, seed=5)
    a = prog.run(feeds)
    prog.trim_padding = False
    b = prog.run(feeds)
    np.testing.assert_array_equal(a.exit, b.exit)
    np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
    assert len(set(a.exit.tolist())) > 1, np.bincount(a.exit)  # some rows left early
