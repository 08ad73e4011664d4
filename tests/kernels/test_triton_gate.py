"""The Triton gate kernel against kernels/reference.py, and the torch gate and custom op.

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, numpy on CPU):
that checks its logic (features, each policy's decision, the prefix-sum compaction order),
not its compiled code. The ``gpu`` tests run the compiled kernel on CUDA.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eeopt.kernels import reference as ref  # noqa: E402
from eeopt.kernels.torch_gate import compaction_order_torch, gate_op, gate_torch  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
#: Triton's interpreter must be on before triton is first imported (torch imports it), so the
#: interpreter tests run in a subprocess started with TRITON_INTERPRET=1
IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(
    not IN_INTERPRETER, reason="runs in the TRITON_INTERPRET=1 subprocess of "
    "test_triton_kernel_in_interpreter")
SHAPES = [(1, 2), (2, 3), (7, 10), (64, 10), (300, 10), (33, 1000), (517, 5)]
POLICY_T = {"maxprob": (0.2, 0.95), "entropy": (0.05, 2.0), "margin": (0.05, 0.9)}


def _logits(seed: int, n: int, c: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 6.0)
    return (rng.standard_normal((n, c)) * scale).astype(np.float32)


def _check(out: tuple, logits: np.ndarray, t: float, policy: str) -> None:
    features, decision, order, count = (o.cpu().numpy() for o in out)
    np.testing.assert_allclose(features, ref.gate_features(logits), rtol=1e-5, atol=1e-5)
    want = ref.gate_decision(logits, t, policy)
    np.testing.assert_array_equal(decision, want)
    want_order, want_count = ref.compaction_order(want)
    np.testing.assert_array_equal(order, want_order)
    assert int(count) == want_count


def test_compaction_reference_is_a_partition() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 5, 100):
        d = rng.random(n) < 0.4
        order, count = ref.compaction_order(d)
        assert sorted(order.tolist()) == list(range(n))
        assert count == int((~d).sum())
        assert (~d[order[:count]]).all() and d[order[count:]].all()
        assert (np.diff(order[:count]) > 0).all()  # staying rows keep their order


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("policy", ["maxprob", "entropy", "margin"])
def test_torch_gate_matches_reference(seed: int, policy: str) -> None:
    for n, c in SHAPES:
        x = _logits(seed * 100 + n, n, c)
        t = float(np.random.default_rng(seed).uniform(*POLICY_T[policy]))
        _check(gate_torch(torch.from_numpy(x), torch.tensor(t), policy), x, t, policy)


def test_compaction_order_torch_matches_reference() -> None:
    d = np.random.default_rng(3).random(77) < 0.5
    order, count = compaction_order_torch(torch.from_numpy(d))
    want, want_count = ref.compaction_order(d)
    np.testing.assert_array_equal(order.numpy(), want)
    assert int(count) == want_count


def test_custom_op_cpu_and_fake_impl() -> None:
    x = _logits(7, 9, 4)
    out = torch.ops.eeopt.gate(torch.from_numpy(x), torch.tensor(0.5), "maxprob")
    _check(out, x, 0.5, "maxprob")
    torch.library.opcheck(gate_op, (torch.from_numpy(x), torch.tensor(0.5), "maxprob"))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.ops.eeopt.gate(torch.empty(6, 4), torch.tensor(0.5), "entropy")
    assert [tuple(f.shape) for f in fake] == [(6, 3), (6,), (6,), ()]
    assert [f.dtype for f in fake] == [torch.float32, torch.bool, torch.int64, torch.int64]


def test_unsupported_policy_is_one_line() -> None:
    from eeopt.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="patience"):
        gate_torch(torch.zeros(2, 3), torch.tensor(1.0), "patience")


# --------------------------------------------------------------------------- Triton


def _triton_gate():  # type: ignore[no-untyped-def]
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton==3.9.0)")
    from eeopt.kernels import triton_gate

    return triton_gate


@pytest.mark.skipif(IN_INTERPRETER, reason="this is the subprocess")
def test_triton_kernel_in_interpreter() -> None:
    """Runs the ``interpreted`` tests below in a fresh process with TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton==3.9.0)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreted_",
         str(Path(__file__))], env=env, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert "10 passed" in tail.splitlines()[-1], tail  # 9 policy x seed cases + strided


@interpreted
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("policy", ["maxprob", "entropy", "margin"])
def test_interpreted_kernel_matches_reference(seed: int, policy: str) -> None:
    tg = _triton_gate()
    for n, c in SHAPES:
        x = _logits(seed * 1000 + n, n, c)
        t = float(np.random.default_rng(seed + 10).uniform(*POLICY_T[policy]))
        _check(tg.triton_gate(torch.from_numpy(x), torch.tensor(t), policy), x, t, policy)


@interpreted
def test_interpreted_kernel_reads_strided_logits_and_all_or_nothing() -> None:
    tg = _triton_gate()
    x = _logits(5, 20, 12)
    view = torch.from_numpy(x)[:, ::2]  # a non-contiguous [20, 6] view
    _check(tg.triton_gate(view, torch.tensor(0.4), "maxprob"), x[:, ::2], 0.4, "maxprob")
    for t in (1e-9, 2.0):  # every row leaves / no row leaves
        out = tg.triton_gate(torch.from_numpy(x), torch.tensor(t), "maxprob")
        _check(out, x, t, "maxprob")


def test_triton_block_sizes() -> None:
    tg = _triton_gate()
    assert tg.block_sizes(1, 10) == (2, 16)
    assert tg.block_sizes(256, 10) == (256, 16)
    bn, bc = tg.block_sizes(64, 1000)
    assert bc == 1024 and bn * bc <= 8192
    from eeopt.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="classes"):
        tg.block_sizes(4, 100_000)


@pytest.mark.gpu
@pytest.mark.parametrize("policy", ["maxprob", "entropy", "margin"])
def test_triton_kernel_on_cuda_matches_reference(policy: str) -> None:
    tg = _triton_gate()
    for seed in range(3):
        for n, c in SHAPES + [(4096, 10), (256, 100)]:
            x = _logits(seed * 1000 + n, n, c)
            t = float(np.random.default_rng(seed).uniform(*POLICY_T[policy]))
            out = tg.triton_gate(torch.from_numpy(x).cuda(), torch.tensor(t).cuda(), policy)
            _check(out, x, t, policy)


@pytest.mark.gpu
def test_custom_op_on_cuda_runs_the_triton_kernel() -> None:
    _triton_gate()
    x = _logits(9, 100, 10)
    out = torch.ops.eeopt.gate(torch.from_numpy(x).cuda(), torch.tensor(0.6).cuda(), "margin")
    assert all(o.is_cuda for o in out)
    _check(out, x, 0.6, "margin")
