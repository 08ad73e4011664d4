"""The fused gate in torch ops, and the ``eeopt::gate`` custom op around it.

``gate_torch`` is what a torch-side stage (``backend="aoti"``) appends after its exit head: it
traces into plain aten ops, so ``torch.export`` + AOTInductor compile it into the stage on any
device. From ``[N, C]`` logits it computes, like ``reference.py``:

- ``features`` ``[N, 3]`` float32: softmax max probability, entropy (nats), margin;
- ``decision`` ``[N]`` bool: does the row leave here (``maxprob``/``entropy``/``margin``);
- ``order`` ``[N]`` int64 and ``count`` ``[]`` int64: the compaction indices from a prefix sum
  over the decisions (``reference.compaction_order``): ``order[:count]`` are the rows that stay,
  ascending, ``order[count:]`` the rows that leave. The runtime reads ``count`` (its one host
  sync per stage) and gathers with ``order`` on the device.

``torch.ops.eeopt.gate`` is the same computation as a custom op with a fake (shape-only)
implementation, so ``torch.export`` keeps it as one node that AOTInductor calls. On CUDA, when
Triton is installed, the op runs the single-pass Triton kernel of ``triton_gate.py``; everywhere
else it runs ``gate_torch``.
"""

from __future__ import annotations

import logging

import torch

from eeopt.errors import UnsupportedModelError

__all__ = ["GATE_POLICIES", "gate_torch", "gate_op", "compaction_order_torch", "triton_enabled"]

logger = logging.getLogger(__name__)

#: policies the fused torch gate decides itself (patience needs carried state: ORT only for now)
GATE_POLICIES = ("maxprob", "entropy", "margin")


def _check_policy(policy: str) -> None:
    if policy not in GATE_POLICIES:
        raise UnsupportedModelError(
            f"gate policy {policy!r} is not supported by the torch gate; choose one of "
            f"{', '.join(GATE_POLICIES)} (patience runs on the onnxruntime backend)"
        )


def compaction_order_torch(decision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``reference.compaction_order`` in torch ops: ``(order int64 [N], count int64 [])``."""
    leave = decision.to(torch.int64)
    stay = 1 - leave
    n = decision.shape[0]
    stay_before = torch.cumsum(stay, 0) - stay
    leave_before = torch.cumsum(leave, 0) - leave
    pos = torch.where(decision, (n - 1) - leave_before, stay_before)
    rows = torch.arange(n, dtype=torch.int64, device=decision.device)
    order = torch.zeros_like(rows).scatter(0, pos, rows)
    return order, stay.sum()


def gate_torch(
    logits: torch.Tensor, threshold: torch.Tensor, policy: str = "maxprob"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features [N, 3] f32, decision [N] bool, order [N] i64, count [] i64)``; see above."""
    _check_policy(policy)
    z = logits.to(torch.float32)
    logp = torch.log_softmax(z, dim=-1)
    p = torch.exp(logp)
    top2 = torch.topk(p, 2, dim=-1).values
    p1 = top2[:, 0]
    margin = p1 - top2[:, 1]
    entropy = -torch.where(p == 0, 0.0, p * logp).sum(dim=-1)  # 0 log 0 = 0 (masked classes)
    features = torch.stack([p1, entropy, margin], dim=1)
    t = threshold.to(torch.float32)
    if policy == "maxprob":
        decision = p1 >= t
    elif policy == "entropy":
        decision = entropy <= t
    else:
        decision = margin >= t
    order, count = compaction_order_torch(decision)
    return features, decision, order, count


_POLICY_CODE = {p: i for i, p in enumerate(GATE_POLICIES)}


def triton_enabled() -> bool:
    """Whether the custom op's CUDA kernel can use Triton here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@torch.library.custom_op("eeopt::gate", mutates_args=())
def gate_op(
    logits: torch.Tensor, threshold: torch.Tensor, policy: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused gate as one op: the Triton kernel on CUDA (if Triton is installed), else
    ``gate_torch``."""
    if logits.is_cuda and triton_enabled():
        from eeopt.kernels.triton_gate import triton_gate

        return triton_gate(logits, threshold, policy)
    features, decision, order, count = gate_torch(logits, threshold, policy)
    return features, decision, order, count


@gate_op.register_fake
def _gate_fake(
    logits: torch.Tensor, threshold: torch.Tensor, policy: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_policy(policy)
    if logits.dim() != 2:
        raise UnsupportedModelError(f"the gate needs [N, C] logits, got rank {logits.dim()}")
    n = logits.shape[0]
    return (
        logits.new_empty((n, 3), dtype=torch.float32),
        logits.new_empty((n,), dtype=torch.bool),
        logits.new_empty((n,), dtype=torch.int64),
        logits.new_empty((), dtype=torch.int64),
    )
