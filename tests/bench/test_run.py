"""eeopt bench's parts: the ideal's bare stage calls and the ECE."""

from __future__ import annotations

import numpy as np
import pytest

from eeopt.bench import bare_stages, ece


def test_ece() -> None:
    """0 when confidence equals accuracy in every bin; the gap when it does not."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1000)
    # every row 70% confident (log-odds chosen so), right on exactly 70% of the rows
    z = np.full((1000, 4), 0.0)
    pred = labels.copy()
    wrong = np.arange(1000) % 10 >= 7
    pred[wrong] = (labels[wrong] + 1) % 4
    z[np.arange(1000), pred] = np.log(0.7 * 3 / 0.3)
    assert ece(z, labels) == pytest.approx(0.0, abs=1e-9)
    assert ece(z, pred) == pytest.approx(0.3, abs=1e-9)  # 70% confident, always right


def test_bare_stages_weight_each_stage_by_how_often_it_runs() -> None:
    """At batch 1 a stage's weight is the fraction of rows that reach it; at batch b it is
    P(any of b rows reaches it) / b, timed at the expected rows per such call; stages no row
    reaches are left out."""
    class _Prog:
        supports_stage_calls = True

        class manifest:  # noqa: N801 - stands in for the Manifest attribute
            stages = (0, 1, 2)

        def __init__(self) -> None:
            self.rows: list[int] = []

        def stage_calls(self, feeds):  # type: ignore[no-untyped-def]
            n = feeds["x"].shape[0]
            self.rows.append(n)
            return [lambda f=None, n=n: n] * 3

    feeds = {"x": np.zeros((100, 1), dtype=np.float32)}
    fr = np.array([0.8, 0.2, 0.0])
    prog = _Prog()
    one = bare_stages(prog, feeds, fr, 1)
    assert list(one) == ["stage0", "stage1"]
    assert one["stage0"][0] == 1.0 and one["stage1"][0] == pytest.approx(0.2)
    prog.rows.clear()
    many = bare_stages(prog, feeds, fr, 64)
    called = 1 - 0.8 ** 64
    assert many["stage0"][0] == pytest.approx(1 / 64)
    assert many["stage1"][0] == pytest.approx(called / 64)
    assert prog.rows == [64, round(64 * 0.2 / called)]

    class _NoBareCalls(_Prog):  # a runtime without bare stage calls: none are asked for
        supports_stage_calls = False

        def stage_calls(self, feeds):  # type: ignore[no-untyped-def]
            raise AssertionError("bare_stages asked a runtime that has none")

    assert bare_stages(_NoBareCalls(), feeds, fr, 1) == {}
