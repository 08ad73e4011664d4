"""Multi-exit torch models of the topology families the compiler must handle.

Each takes a ``seed`` so tests can build fresh instances the compiler has never seen.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "ResidualExitInBlock",
    "LongSkip",
    "MaskedTwoInput",
    "LogitSkip",
    "HeavyChain",
    "TinyEncoder",
    "TOPOLOGIES",
    "make",
    "example",
]


class ResidualExitInBlock(nn.Module):
    """A residual net whose first exit sits *inside* a residual block: the block's input (the
    skip) and the exit's branch point both cross the cut."""

    def __init__(self, classes: int = 5, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.conv_a = nn.Conv2d(width, width, 3, padding=1)
        self.conv_b = nn.Conv2d(width, width, 3, padding=1)
        self.exit0 = nn.Linear(width, classes)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.exit1 = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 6 * 6, classes))
        self.conv_c = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.final = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.stem(x)
        a = torch.relu(self.conv_a(h))
        e0 = self.exit0(a.mean(dim=(2, 3)))  # exit inside the block
        h = torch.relu(self.conv_b(a) + h)  # the skip crosses exit 0
        h = torch.relu(self.down(h))
        e1 = self.exit1(h)  # a reshape whose size depends on the batch
        h = torch.relu(self.conv_c(h)) + h
        return e0, e1, self.final(h.mean(dim=(2, 3)))


class LongSkip(nn.Module):
    """A dense-style skip from the stem that reaches past two exits."""

    def __init__(self, classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Linear(12, width)
        self.l1 = nn.Linear(width, width)
        self.l2 = nn.Linear(width, width)
        self.l3 = nn.Linear(2 * width, width)
        self.heads = nn.ModuleList(nn.Linear(width, classes) for _ in range(3))
        self.final = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = torch.tanh(self.stem(x))
        h1 = torch.relu(self.l1(s))
        e0 = self.heads[0](h1)
        h2 = torch.relu(self.l2(h1))
        e1 = self.heads[1](h2)
        h3 = torch.relu(self.l3(torch.cat([h2, s], dim=1)))  # s crosses exits 0 and 1
        e2 = self.heads[2](h3)
        return e0, e1, e2, self.final(h3 + s)


class MaskedTwoInput(nn.Module):
    """Two inputs: a sequence and its padding mask, which every layer reads again."""

    def __init__(self, classes: int = 3, dim: int = 8, layers: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(6, dim)
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.heads = nn.ModuleList(nn.Linear(dim, classes) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = mask.unsqueeze(-1)
        h = self.inp(x) * m
        outs = []
        for layer, head in zip(self.layers, self.heads, strict=True):
            h = (torch.relu(layer(h)) + h) * m
            pooled = h.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
            outs.append(head(pooled))
        return tuple(outs)


class LogitSkip(nn.Module):
    """A later exit reads an earlier exit's logits (exit k+1 = head(features) + exit k), as
    boosted or residual heads do: the exit's logits are carried to the later stages too."""

    def __init__(self, d: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.l1 = nn.Linear(d, 16)
        self.l2 = nn.Linear(16, 16)
        self.l3 = nn.Linear(16, 16)
        self.h0 = nn.Linear(16, classes)
        self.h1 = nn.Linear(16, classes)
        self.h2 = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = torch.relu(self.l1(x))
        e0 = self.h0(a)
        b = torch.relu(self.l2(a))
        e1 = self.h1(b) + e0
        c = torch.relu(self.l3(b))
        return e0, e1, self.h2(c) + 0.5 * e1 + e0


class HeavyChain(nn.Module):
    """Conv layers heavy enough that compute, not call overhead, dominates: an early exit
    really saves time here, so the planner has something to find."""

    def __init__(self, classes: int = 4, width: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.layers = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1)
                                    for _ in range(layers))
        self.heads = nn.ModuleList(nn.Linear(width, classes) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = torch.relu(self.stem(x))
        outs = []
        for layer, head in zip(self.layers, self.heads, strict=True):
            h = torch.relu(layer(h)) + h
            outs.append(head(h.mean(dim=(2, 3))))
        return tuple(outs)


class TinyEncoder(nn.Module):
    """A small random-weight transformer encoder over token ids with an attention mask (1 =
    token, 0 = right padding), an exit after every layer: masked mean pooling + linear, the
    head the MiniLM model uses. Inputs ``(input_ids int64 [B, T], attention_mask int64 [B, T])``;
    every length T works."""

    def __init__(self, classes: int = 3, vocab: int = 50, width: int = 16, layers: int = 3,
                 heads: int = 2) -> None:
        super().__init__()
        self.heads_n = heads
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(128, width)
        self.qkv = nn.ModuleList(nn.Linear(width, 3 * width) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                               nn.Linear(2 * width, width))
                                 for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.exits = nn.ModuleList(nn.Linear(width, classes) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t = input_ids.shape
        h = self.embed(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        keep = attention_mask.to(h.dtype)
        bias = (1.0 - keep)[:, None, None, :] * -1e4  # [B, 1, 1, T]
        outs = []
        for qkv, proj, ln1, ffn, ln2, head in zip(self.qkv, self.proj, self.ln1, self.ffn,
                                                  self.ln2, self.exits, strict=True):
            q, k, v = qkv(h).reshape(b, t, 3, self.heads_n, -1).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1)
            h = ln1(h + proj((att @ v).transpose(1, 2).reshape(b, t, -1)))
            h = ln2(h + ffn(h))
            pooled = (h * keep[:, :, None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
            outs.append(head(pooled))
        return tuple(outs)


def token_batch(rows: int, length: int, seed: int, vocab: int = 50) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
    """Right-padded token ids and their mask: each row 1..length real tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, length), generator=g)
    lens = torch.randint(1, length + 1, (rows,), generator=g)
    mask = (torch.arange(length)[None, :] < lens[:, None]).long()
    return ids * mask, mask


TOPOLOGIES = {
    "residual": ResidualExitInBlock,
    "longskip": LongSkip,
    "masked": MaskedTwoInput,
    "logitskip": LogitSkip,
}


def make(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = HeavyChain() if name == "heavy" else TOPOLOGIES[name]()
    # non-trivial BatchNorm statistics, so folding them is actually tested
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def example(name: str, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    if name == "residual":
        return (torch.rand(batch, 1, 12, 12, generator=g),)
    if name in ("longskip", "logitskip"):
        return (torch.randn(batch, 12, generator=g),)
    if name == "heavy":
        return (torch.rand(batch, 1, 24, 24, generator=g),)
    x = torch.randn(batch, 5, 6, generator=g)
    lengths = torch.randint(1, 6, (batch,), generator=g)
    mask = (torch.arange(5)[None, :] < lengths[:, None]).float()
    return (x, mask)
