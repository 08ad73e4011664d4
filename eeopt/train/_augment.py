"""Image perturbations: the consistency objective's ``A(x)`` and the benchmark's robustness test.

All take and return float ``[B, C, H, W]`` batches and draw from the given ``torch.Generator``
(or torch's global one), so a fixed seed gives the same perturbation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_noise", "random_erase", "random_shift", "shift"]


def gaussian_noise(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``x + sigma * N(0, 1)``, optionally clipped to ``clip``."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    out = x + sigma * noise
    return out.clamp(*clip) if clip is not None else out


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate every image by ``(dy, dx)`` pixels (down, right), filling with zeros."""
    h, w = x.shape[-2:]
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by its own random offset in ``[-max_shift, max_shift]`` per axis."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    oy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    batch = torch.arange(b)[:, None, None, None].expand(b, c, h, w)
    chan = torch.arange(c)[None, :, None, None].expand(b, c, h, w)
    return padded[batch, chan, rows, cols]


def random_erase(
    x: torch.Tensor,
    p: float,
    area: tuple[float, float] = (0.02, 0.15),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """With probability ``p`` per image, zero one random rectangle covering ``area`` of it."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    frac = area[0] + (area[1] - area[0]) * torch.rand(b, generator=generator)
    aspect = torch.exp((torch.rand(b, generator=generator) - 0.5) * 1.2)  # ~[0.55, 1.8]
    eh = (torch.sqrt(frac * h * w * aspect)).round().clamp(1, h).long()
    ew = (torch.sqrt(frac * h * w / aspect)).round().clamp(1, w).long()
    y0 = (torch.rand(b, generator=generator) * (h - eh + 1).float()).long()
    x0 = (torch.rand(b, generator=generator) * (w - ew + 1).float()).long()
    on = torch.rand(b, generator=generator) < p
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])  # [B, H]
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])  # [B, W]
    mask = (in_y[:, :, None] & in_x[:, None, :]) & on[:, None, None]  # [B, H, W]
    return x.masked_fill(mask[:, None], 0.0)
