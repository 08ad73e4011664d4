"""A pure-torch reference of a learned policy: every exit of the original model on every row
(ONNX Runtime on the uncut model), the gates' features and networks in torch, and each row's
first firing exit. The compiled program must reproduce its exits and logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eeopt.frontend import capture
from eeopt.gates._nets import gate_net_from, import_torch, torch_logit_features, torch_pool
from eeopt.gates._policies import GateSet
from eeopt.passes import ExposeTensors
from eeopt.runtime import make_session

__all__ = ["reference_run", "reference_scores"]


def _model_tensors(model: Any, feeds: dict[str, np.ndarray], names: Sequence[str]
                   ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    graph = capture(model)
    outs = list(graph.output_names)
    extra = [t for t in dict.fromkeys(names) if t not in outs and t not in feeds]
    tap = ExposeTensors(extra)(graph).graph
    res = make_session(tap.model.SerializeToString()).run(outs + extra, feeds)
    got = dict(zip(outs + extra, res, strict=True))
    got.update({k: v for k, v in feeds.items() if k in names})
    return [np.asarray(got[o], dtype=np.float32) for o in outs], got


def reference_scores(model: Any, gates: GateSet, feeds: dict[str, np.ndarray]
                     ) -> tuple[list[np.ndarray], np.ndarray]:
    """Every exit's logits and ``[K-1, N]`` gate scores, computed in torch."""
    torch = import_torch()
    names = [t for t in gates.tensor_names if t] + ([gates.route_input] if gates.route_input
                                                    else [])
    logits, tensors = _model_tensors(model, feeds, names)
    with torch.no_grad():
        if gates.policy == "twin":
            assert gates.route_input is not None
            x = torch_pool(tensors[gates.route_input], gates.route_pool)
            z = gate_net_from(gates.mlps[0])(x).double()
            cum = torch.cumsum(torch.softmax(z, dim=1), dim=1)[:, : gates.num_exits - 1]
            return logits, cum.T.float().numpy()
        scores = []
        for k, mlp in enumerate(gates.mlps):
            f = torch_logit_features(torch.as_tensor(logits[k]))
            if gates.sources[k] == "tensor+logits":
                name = gates.tensor_names[k]
                assert name is not None
                f = torch.cat([torch_pool(tensors[name]), f], dim=1)
            scores.append(torch.sigmoid(gate_net_from(mlp)(f)[:, 0]).numpy())
        return logits, np.stack(scores)


def reference_run(model: Any, gates: GateSet, feeds: dict[str, np.ndarray],
                  thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(exits [N], logits [N, C])``: each row leaves at the first early exit whose score
    reaches its threshold, else at the final exit."""
    logits, scores = reference_scores(model, gates, feeds)
    n = logits[0].shape[0]
    exits = np.full(n, len(logits) - 1, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    for k, t in enumerate(thresholds):
        fire = open_ & (scores[k] >= np.float32(t))
        exits[fire] = k
        open_ &= ~fire
    out = np.stack(logits)[exits, np.arange(n)]
    return exits, out
