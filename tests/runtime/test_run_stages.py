"""``Program.run_stages``: a run cut at any stage and resumed from what crossed gives every row
the exit and logits of the whole run; what crosses is exactly the rows that go on and what the
later stages read; a resumed run checks what it is handed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import eeopt
from eeopt.errors import DataError, UsageError
from tests.runtime.test_trim_padding import SEQ
from tests.runtime.test_trim_padding import _feeds as text_feeds

import topologies as T


@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> eeopt.Program:
    model = T.make("masked", 3)
    d = tmp_path_factory.mktemp("masked") / "program"
    return eeopt.compile(model, d, example_inputs=T.example("masked", 4, 0), threshold=0.5)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> eeopt.Program:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("trim") / "p"
    return eeopt.compile(T.TinyEncoder().eval(), out, example_inputs=T.token_batch(4, 37, seed=1),
                         threshold=0.5, dynamic_shapes=SEQ)


def _masked_feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    x, mask = T.example("masked", batch, seed)
    return {"x": x.numpy(), "mask": mask.numpy()}


def _resume(prog: eeopt.Program, feeds: Any, split: int, thr: Any = None) -> tuple[Any, Any]:
    head = prog.run_stages(feeds, 0, split, thresholds=thr)
    logits, exits = head.logits.copy(), head.exit.copy()
    assert (exits[head.rows] == -1).all() and (np.delete(exits, head.rows) >= 0).all()
    if head.rows.size:
        assert set(head.carried) == {s.name for s in prog.carried_specs(split)}
        for t in head.carried.values():
            assert t.shape[0] == head.rows.size
        tail = prog.run_stages(head.carried, split, thresholds=thr)
        assert (tail.exit >= split).all() and tail.rows.size == 0 and not tail.carried
        logits[head.rows] = tail.logits
        exits[head.rows] = tail.exit
    return logits, exits


@pytest.mark.parametrize("thr", [None, [0.3, 0.6], [2.0, 0.2]])
@pytest.mark.parametrize("rows", [1, 2, 37])
def test_a_run_cut_anywhere_is_the_whole_run(masked: eeopt.Program, thr: Any, rows: int) -> None:
    feeds = _masked_feeds(rows, seed=rows)
    whole = masked.run(feeds, thresholds=thr)
    for split in range(1, masked.num_exits):
        logits, exits = _resume(masked, feeds, split, thr)
        np.testing.assert_array_equal(exits, whole.exit)
        np.testing.assert_array_equal(logits, whole.logits)


def test_text_rows_cross_trimmed_to_their_longest_and_resume_exactly(text: eeopt.Program
                                                                     ) -> None:
    feeds = text_feeds(40, 64, seed=3)
    whole = text.run(feeds)
    assert 0 < (whole.exit == 0).sum() < 40  # some rows leave before the cut
    head = text.run_stages(feeds, 0, 1)
    longest = int(feeds["attention_mask"][head.rows].sum(axis=1).max())
    assert head.carried["attention_mask"].shape == (head.rows.size, longest)
    logits, exits = _resume(text, feeds, 1)
    np.testing.assert_array_equal(exits, whole.exit)
    np.testing.assert_allclose(logits, whole.logits, rtol=0, atol=1e-6)


def test_the_whole_range_is_run(masked: eeopt.Program) -> None:
    feeds = _masked_feeds(9)
    part = masked.run_stages(feeds)
    whole = masked.run(feeds)
    np.testing.assert_array_equal(part.exit, whole.exit)
    assert part.rows.size == 0 and not part.carried


def test_a_resumed_run_checks_what_it_is_handed(masked: eeopt.Program) -> None:
    head = masked.run_stages(_masked_feeds(16, seed=5), 0, 1, thresholds=[2.0, 2.0])
    assert head.rows.size == 16  # nothing left
    carried = dict(head.carried)
    name = sorted(carried)[0]
    with pytest.raises(DataError, match="missing input"):
        masked.run_stages({k: v for k, v in carried.items() if k != name}, 1)
    with pytest.raises(DataError, match="dtype"):
        masked.run_stages({**carried, name: carried[name].astype(np.float64)}, 1)
    with pytest.raises(DataError, match="unknown input"):
        masked.run_stages({**carried, "stranger": carried[name]}, 1)
    with pytest.raises(DataError, match="dict"):
        masked.run_stages(carried[name], 1)
    for start, stop in [(2, 1), (-1, 2), (0, 9), (3, 3)]:
        with pytest.raises(UsageError, match="not a range"):
            masked.run_stages(carried, start, stop)
    none = masked.run_stages(carried, 1, 1)  # no stage: every row goes on, checked
    assert (none.exit == -1).all() and none.rows.tolist() == list(range(16))
    assert none.carried.keys() == carried.keys()
    with pytest.raises(DataError, match="missing input"):
        masked.run_stages({}, 1, 1)
    with pytest.raises(UsageError, match="split point"):
        masked.carried_specs(0)
