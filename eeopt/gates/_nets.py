"""The gates' small networks in torch: training, export to ``MLPParams``, and a pure-torch
forward (features included) used as the reference the compiled gates are tested against."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError
from eeopt.kernels.onnx_learned_gate import MLPParams

__all__ = ["GateNet", "fit_mlp", "gate_net_from", "import_torch", "torch_logit_features",
           "torch_pool"]

logger = logging.getLogger(__name__)


def import_torch() -> Any:
    """torch, or one line saying how to install it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in our environments
        raise BackendUnavailableError(
            "training learned gates needs torch: pip install 'eeopt[torch]'") from exc
    return torch


def _net_class() -> Any:
    torch = import_torch()
    nn = torch.nn

    class GateNet(nn.Module):  # type: ignore[name-defined,misc]
        """Standardise, then ``Linear -> ReLU -> ... -> Linear`` (pre-activation output)."""

        def __init__(self, mean: np.ndarray, inv_std: np.ndarray, sizes: Sequence[int]) -> None:
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("inv_std", torch.as_tensor(inv_std, dtype=torch.float32))
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                          strict=True))

        def forward(self, x: Any) -> Any:
            h = (x - self.mean) * self.inv_std
            for i, lin in enumerate(self.layers):
                h = lin(h)
                if i < len(self.layers) - 1:
                    h = torch.relu(h)
            return h

        def params(self) -> MLPParams:
            return MLPParams(
                mean=self.mean.detach().numpy().astype(np.float32).copy(),
                inv_std=self.inv_std.detach().numpy().astype(np.float32).copy(),
                weights=tuple(lin.weight.detach().numpy().T.astype(np.float32).copy()
                              for lin in self.layers),
                biases=tuple(lin.bias.detach().numpy().astype(np.float32).copy()
                             for lin in self.layers))

        @classmethod
        def from_params(cls, p: MLPParams) -> Any:
            sizes = [p.in_dim] + [int(w.shape[1]) for w in p.weights]
            net = cls(p.mean, p.inv_std, sizes)
            with torch.no_grad():
                for lin, w, b in zip(net.layers, p.weights, p.biases, strict=True):
                    lin.weight.copy_(torch.as_tensor(w.T))
                    lin.bias.copy_(torch.as_tensor(b))
            return net.eval()

    return GateNet


def GateNet(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - a lazily built class
    """``GateNet(mean, inv_std, sizes)``; ``GateNet.from_params`` is ``gate_net_from``."""
    return _net_class()(*args, **kwargs)


def gate_net_from(params: MLPParams) -> Any:
    """A torch module computing exactly what ``params`` computes (pre-activation)."""
    return _net_class().from_params(params)


def fit_mlp(x: np.ndarray, y: np.ndarray, *, kind: str = "binary",
            weights: np.ndarray | None = None, pos_weight: float | None = None,
            hidden: Sequence[int] = (), classes: int = 2, steps: int = 300, lr: float = 0.02,
            weight_decay: float = 1e-4, seed: int = 0, bar: Any = None) -> MLPParams:
    """Full-batch Adam on standardised ``x``. ``binary``: BCE-with-logits on ``y`` in {0, 1}
    (per-row ``weights``, ``pos_weight`` on positives); ``multiclass``: cross-entropy over
    ``classes``."""
    torch = import_torch()
    gen = torch.Generator().manual_seed(seed)
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    inv_std = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 1.0).astype(np.float32)
    out = 1 if kind == "binary" else classes
    sizes = [x.shape[1], *hidden, out]
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        net = _net_class()(mean, inv_std, sizes)
    xt = torch.as_tensor(x)
    w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
    params = list(net.parameters())
    m1 = [torch.zeros_like(q) for q in params]
    m2 = [torch.zeros_like(q) for q in params]
    if kind == "binary":
        yt = torch.as_tensor(np.asarray(y, dtype=np.float32))
        pw = None if pos_weight is None else torch.tensor(float(pos_weight))
    else:
        pw = None
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest, and deterministic
    try:
        for step in range(1, steps + 1):
            loss = _loss(net, xt, yt, w, pw, kind)
            for q in params:
                q.grad = None
            loss.backward()
            with torch.no_grad():  # Adam (plain, L2 weight decay), written out: torch.optim
                # would import torch._dynamo, seconds of start-up for a few hundred steps
                for q, a, b in zip(params, m1, m2, strict=True):
                    g = q.grad + weight_decay * q
                    a.mul_(0.9).add_(g, alpha=0.1)
                    b.mul_(0.999).addcmul_(g, g, value=0.001)
                    a_hat = a / (1 - 0.9**step)
                    b_hat = b / (1 - 0.999**step)
                    q.sub_(lr * a_hat / (b_hat.sqrt() + 1e-8))
            if bar is not None:
                bar.update()
    finally:
        torch.set_num_threads(threads)
    return net.params()  # type: ignore[no-any-return]


def _loss(net: Any, xt: Any, yt: Any, w: Any, pw: Any, kind: str) -> Any:
    """The (row-weighted) mean training loss."""
    torch = import_torch()
    z = net(xt)
    if kind == "binary":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            z[:, 0], yt, pos_weight=pw, reduction="none")
    else:
        loss = torch.nn.functional.cross_entropy(z, yt, reduction="none")
    return (loss * w).sum() / w.sum().clamp_min(1e-12) if w is not None else loss.mean()


def torch_logit_features(z: Any) -> Any:
    """The four softmax statistics of ``[N, C]`` logits, in torch (reference)."""
    torch = import_torch()
    logp = torch.log_softmax(z.double(), dim=1)
    p = logp.exp()
    top2 = torch.topk(p, 2, dim=1).values
    ent = -(p * logp).sum(1)
    s2 = (p * p).sum(1, keepdim=True)
    ent2 = -(p * p / s2 * (2.0 * logp - torch.log(s2))).sum(1)
    return torch.stack([top2[:, 0], ent, top2[:, 0] - top2[:, 1], ent2], dim=1).float()


def torch_pool(t: Any, kernel: int = 0) -> Any:
    """Average pooling as the compiled gate does it, in torch (reference)."""
    torch = import_torch()
    t = torch.as_tensor(np.array(t, dtype=np.float32))
    if t.dim() == 2:
        return t
    if kernel:
        return torch.nn.functional.avg_pool2d(t, kernel, kernel).flatten(1)
    return t.mean(dim=(2, 3))
