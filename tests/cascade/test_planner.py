"""The planner on a cascade: it prices every network a row runs, keeps the cheap model's gate
when it pays, and the planned program still equals the reference of the kept models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cascade._models import mlp

from eeopt.cascade import compile_cascade, reference_run
from eeopt.kernels.reference import gate_features
from eeopt.runtime import make_session


def test_planned_cascade_matches_reference(tmp_path: Path) -> None:
    cheap, costly = mlp(0, hidden=4), mlp(1, hidden=512, depth=8)  # ~2 M MACs vs ~50
    rng = np.random.default_rng(0)
    x = rng.random((1000, 6), dtype=np.float32)
    z0, z1 = (make_session(m.SerializeToString()).run(None, {"x": x})[0] for m in (cheap, costly))
    conf = gate_features(z0)[:, 0]
    # the cheap model is right where it is confident (top half), the costly one elsewhere
    y = np.where(conf >= np.median(conf), z0.argmax(1), z1.argmax(1))
    program = compile_cascade([cheap, costly], tmp_path / "p", calib=({"x": x[:800]}, y[:800]),
                              budget=1.0, threads=1)
    plan = program.manifest.plan
    assert plan is not None and plan.kept_outputs == ("m0/exit0", "m1/exit0")
    assert plan.predicted_speedup > 1.5  # half the rows never run the costly model
    assert plan.predicted_loss_pp <= 1.0

    res = program.run(x[800:])
    want_logits, want_exit = reference_run([cheap, costly], {"x": x[800:]},
                                           list(program.thresholds))
    assert 0 < (want_exit == 0).sum() < 200
    np.testing.assert_array_equal(res.exit, want_exit)
    np.testing.assert_allclose(res.logits, want_logits, rtol=1e-4, atol=1e-4)
