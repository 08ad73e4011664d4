"""The fused gate as one Triton kernel (CUDA; on CPU only through ``TRITON_INTERPRET=1``).

One pass over the logits: each row is loaded once and yields the softmax max probability,
entropy and margin (``reference.GATE_FEATURES``), the policy's decision, and, from a running
prefix sum over the decisions, the row's slot in the compaction order
(``reference.compaction_order``): rows that stay fill ``order`` from the front in ascending
order, rows that leave fill it from the back. The last word is ``count``, the number of rows
that stay. One program walks the batch in blocks of rows and carries the two prefix sums from
block to block, so there is no second launch and no host round trip.

``triton_gate`` is what ``torch.ops.eeopt.gate`` runs on CUDA. Importing this module needs
Triton; ``eeopt.kernels`` never imports it eagerly.
"""

from __future__ import annotations

import torch

from eeopt.errors import BackendUnavailableError, UnsupportedModelError

try:
    import triton
    import triton.language as tl
except ImportError as _exc:  # pragma: no cover - exercised only without triton
    raise BackendUnavailableError(
        "the Triton gate needs triton; install it with `pip install triton==3.9.0`"
    ) from _exc

__all__ = ["triton_gate", "block_sizes", "POLICY_CODES"]

#: the policy as a compile-time constant of the kernel
POLICY_CODES = {"maxprob": 0, "entropy": 1, "margin": 2}

#: the most elements one block of rows holds in registers
_MAX_BLOCK_ELEMS = 8192


@triton.jit
def _gate_kernel(
    logits_ptr, stride_n, stride_c, thr_ptr,
    features_ptr, decision_ptr, order_ptr, count_ptr,
    N, C,
    POLICY: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    thr = tl.load(thr_ptr).to(tl.float32)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    zero = tl.zeros([BLOCK_N], dtype=tl.int32)
    stay_total = tl.sum(zero, axis=0)
    leave_total = tl.sum(zero, axis=0)
    for start in range(0, N, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        rmask = rows < N
        mask2 = rmask[:, None] & cmask[None, :]
        x = tl.load(logits_ptr + rows[:, None] * stride_n + cols[None, :] * stride_c,
                    mask=mask2, other=float("-inf")).to(tl.float32)
        # padding rows are all -inf: give them a finite row so no NaN is ever formed
        x = tl.where(rmask[:, None] & cmask[None, :], x,
                     tl.where(cmask[None, :], 0.0, float("-inf")))
        m = tl.max(x, axis=1)
        z = x - m[:, None]
        e = tl.exp(z)
        s = tl.sum(e, axis=1)
        log_s = tl.log(s)
        p = e / s[:, None]
        logp = tl.where(cmask[None, :], z - log_s[:, None], 0.0)
        entropy = -tl.sum(tl.where(p == 0.0, 0.0, p * logp), axis=1)  # 0 log 0 = 0
        top = tl.argmax(z, axis=1)
        z2 = tl.where(cols[None, :] == top[:, None], float("-inf"), z)
        p1 = 1.0 / s
        p2 = tl.exp(tl.max(z2, axis=1)) / s
        margin = p1 - p2
        if POLICY == 0:
            leave = p1 >= thr
        elif POLICY == 1:
            leave = entropy <= thr
        else:
            leave = margin >= thr
        tl.store(features_ptr + rows * 3 + 0, p1, mask=rmask)
        tl.store(features_ptr + rows * 3 + 1, entropy, mask=rmask)
        tl.store(features_ptr + rows * 3 + 2, margin, mask=rmask)
        tl.store(decision_ptr + rows, leave.to(tl.int8), mask=rmask)
        leave_i = (leave & rmask).to(tl.int32)
        stay_i = ((leave == 0) & rmask).to(tl.int32)
        stay_before = tl.cumsum(stay_i, axis=0) - stay_i + stay_total
        leave_before = tl.cumsum(leave_i, axis=0) - leave_i + leave_total
        pos = tl.where(leave, N - 1 - leave_before, stay_before)
        tl.store(order_ptr + pos, rows.to(tl.int64), mask=rmask)
        stay_total += tl.sum(stay_i, axis=0)
        leave_total += tl.sum(leave_i, axis=0)
    tl.store(count_ptr, stay_total.to(tl.int64))


def block_sizes(n: int, c: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_C)``: a whole row per block (a power of two >= C), and as many rows as
    fit in ``_MAX_BLOCK_ELEMS`` elements (at most the batch, rounded up to a power of two)."""
    if c < 2:
        raise UnsupportedModelError(f"the gate needs at least 2 classes, got {c}")
    block_c = int(triton.next_power_of_2(c))
    if block_c > _MAX_BLOCK_ELEMS:
        raise UnsupportedModelError(
            f"the Triton gate holds a row in registers; {c} classes is more than "
            f"{_MAX_BLOCK_ELEMS}: use the torch gate (gate='torch')"
        )
    rows = max(1, _MAX_BLOCK_ELEMS // block_c)
    block_n = min(int(triton.next_power_of_2(max(n, 1))), 1 << (rows.bit_length() - 1), 256)
    return max(block_n, 2), block_c


def triton_gate(
    logits: torch.Tensor, threshold: torch.Tensor, policy: str = "maxprob"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features [N, 3] f32, decision [N] bool, order [N] i64, count [] i64)``, as
    ``torch_gate.gate_torch`` computes them, in one kernel launch."""
    if policy not in POLICY_CODES:
        raise UnsupportedModelError(
            f"gate policy {policy!r} has no Triton kernel; choose one of "
            f"{', '.join(POLICY_CODES)}"
        )
    if logits.dim() != 2:
        raise UnsupportedModelError(f"the gate needs [N, C] logits, got rank {logits.dim()}")
    n, c = logits.shape
    dev = logits.device
    features = torch.empty((n, 3), dtype=torch.float32, device=dev)
    decision = torch.empty((n,), dtype=torch.bool, device=dev)
    order = torch.empty((n,), dtype=torch.int64, device=dev)
    count = torch.zeros((), dtype=torch.int64, device=dev)
    if n == 0:
        return features, decision, order, count
    thr = threshold.to(device=dev, dtype=torch.float32).reshape(())
    block_n, block_c = block_sizes(n, c)
    _gate_kernel[(1,)](
        logits, logits.stride(0), logits.stride(1), thr,
        features, decision.view(torch.int8), order, count,
        n, c,
        POLICY=POLICY_CODES[policy], BLOCK_N=block_n, BLOCK_C=block_c,
    )
    return features, decision, order, count
