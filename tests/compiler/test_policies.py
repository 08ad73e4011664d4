"""Every gate policy, compiled, against a pure numpy/torch reference of the same policy
(``eeopt.online.replay_exits``: ``kernels.reference``'s gates chained in numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import eeopt
from eeopt.kernels.reference import gate_features
from eeopt.online import replay_exits

import topologies as T


@pytest.mark.parametrize("policy", ["entropy", "margin", "patience"])
@pytest.mark.parametrize("name", ["longskip", "masked"])
def test_policy_matches_reference(policy: str, name: str, tmp_path: Path) -> None:
    model = T.make(name, 4)
    inputs = T.example(name, 64, 21)
    with torch.no_grad():
        ref = [o.numpy() for o in model(*inputs)]
    k = len(ref) - 1
    rng = np.random.default_rng(0)
    if policy == "patience":
        thr = [2.0] * k
    else:
        col = {"entropy": 1, "margin": 2}[policy]
        thr = [float(np.quantile(gate_features(z)[:, col], rng.uniform(0.3, 0.7)))
               for z in ref[:-1]]
    prog = eeopt.compile(model, tmp_path / "p", example_inputs=T.example(name, 4, 0),
                         thresholds=thr, policy=policy)
    assert {s.gate.policy for s in prog.manifest.stages if s.gate} == {policy}
    feeds = {s.name: t.numpy() for s, t in zip(prog.input_specs, inputs, strict=True)}
    res = prog.run(feeds)
    want = replay_exits(ref, [policy] * len(thr), thr)  # kernels.reference's gates, in numpy
    assert len(np.unique(want)) >= 2  # the thresholds really split the rows
    np.testing.assert_array_equal(res.exit, want)
    for i in range(64):
        np.testing.assert_allclose(res.logits[i], ref[res.exit[i]][i], rtol=1e-4, atol=1e-5)


def test_policy_threshold_ranges(tmp_path: Path) -> None:
    from eeopt.cli.common import FLAGS
    from eeopt.errors import UsageError

    model, ex = T.make("longskip", 0), T.example("longskip", 3, 0)
    with pytest.raises(UsageError, match="entropy threshold must be >= 0"):
        eeopt.compile(model, tmp_path / "a", example_inputs=ex, threshold=-0.1,
                      policy="entropy")
    with pytest.raises(UsageError, match="patience must be >= 1"):
        eeopt.compile(model, tmp_path / "b", example_inputs=ex, threshold=0.5,
                      policy="patience")
    with pytest.raises(UsageError, match="unknown policy 'vibes'") as info:
        eeopt.compile(model, tmp_path / "c", example_inputs=ex, threshold=0.5, policy="vibes")
    assert info.value.render(FLAGS).startswith("unknown --policy")  # as the command line says it
    eeopt.compile(model, tmp_path / "d", example_inputs=ex, threshold=1.7, policy="entropy")
