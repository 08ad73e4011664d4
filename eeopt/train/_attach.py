"""attach_exits(): turn any single-output backbone into a multi-exit module.

Intermediate features are captured with forward hooks on the chosen submodules, so the backbone's
code is never edited and any backbone works (the module must run each chosen submodule exactly
once per forward). The result's ``forward`` returns ``(exit0, ..., exitK-1, final)``: one logits
tensor per attached exit, earliest first, and the backbone's own classifier output last. It
exports with ``torch.onnx.export(dynamo=True)`` (what :func:`eeopt.frontend.export_torch` uses),
which traces through the hooks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from eeopt.errors import UnsupportedModelError, UsageError

__all__ = ["HEADS", "ExitHead", "MultiExit", "attach_exits", "candidate_points"]

logger = logging.getLogger(__name__)

#: the exit-head kinds attach_exits builds
HEADS = ("pool-linear", "conv-pool-linear")

_BLOCK_NAME = re.compile(r"Block|Layer|Stage")


class _MeanTokens(nn.Module):
    """``[B, T, C] -> [B, C]``: the mean over tokens (transformer features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class ExitHead(nn.Module):
    """``features`` (pooling, optionally a 1x1 conv + BN + ReLU first) then a linear ``fc``."""

    def __init__(self, features: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _make_head(kind: str, shape: Sequence[int], num_classes: int, width: int | None) -> ExitHead:
    """An exit head for a feature of ``shape``: ``[B, C, H, W]``, ``[B, T, C]`` or ``[B, C]``."""
    rank = len(shape)
    if rank not in (2, 3, 4):
        raise UnsupportedModelError(
            f"cannot attach an exit to a feature of shape {list(shape)}: expected [B, C, H, W], "
            "[B, T, C] or [B, C]"
        )
    c = int(shape[1] if rank == 4 else shape[-1])
    w = width if width is not None else max(32, c)
    layers: list[nn.Module] = []
    if rank == 4:
        if kind == "conv-pool-linear":
            layers += [nn.Conv2d(c, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    else:
        if rank == 3:
            layers.append(_MeanTokens())
        if kind == "conv-pool-linear":  # no spatial axes: a hidden linear layer instead
            layers += [nn.Linear(c, w), nn.ReLU()]
            c = w
    return ExitHead(nn.Sequential(*layers), nn.Linear(c, num_classes))


class MultiExit(nn.Module):
    """A backbone plus exit heads fed by forward hooks on ``points``.

    ``forward(x)`` returns ``(exit0, ..., final)``. ``exit_parameters()`` are the exit heads'
    parameters and the backbone's classifier (its last ``nn.Linear``, if any): what training
    updates when the backbone is frozen.
    """

    def __init__(
        self,
        backbone: nn.Module,
        points: Sequence[str],
        heads: Sequence[nn.Module],
        classifier: str | None = None,
    ) -> None:
        super().__init__()
        if len(points) != len(heads):
            raise UsageError(f"{len(points)} exit points but {len(heads)} heads")
        self.backbone = backbone
        self.points = tuple(points)
        self.exits = nn.ModuleList(heads)
        self.classifier = classifier
        self._features: dict[int, torch.Tensor] | None = None
        for i, name in enumerate(self.points):
            backbone.get_submodule(name).register_forward_hook(_Tap(self, i))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._features = {}
        try:
            out = self.backbone(x)
            features = self._features
        finally:
            self._features = None
        final = _final_output(out)
        missing = [self.points[i] for i in range(len(self.points)) if i not in features]
        if missing:
            raise UnsupportedModelError(
                f"exit point(s) {', '.join(missing)} did not run in the backbone's forward; "
                "choose modules on the path to the output"
            )
        logits = [head(features[i]) for i, head in enumerate(self.exits)]
        return (*logits, final)

    def exit_parameters(self) -> list[nn.Parameter]:
        params = list(self.exits.parameters())
        if self.classifier:
            params += list(self.backbone.get_submodule(self.classifier).parameters())
        return params


class _Tap:
    """Forward hook: hand the module's output to ``owner`` as exit ``index``'s feature.

    A small class rather than a closure so that ``copy.deepcopy`` of the model rebinds it to
    the copy (deepcopy follows ``owner`` through its memo).
    """

    def __init__(self, owner: MultiExit, index: int) -> None:
        self.owner = owner
        self.index = index

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        feats = self.owner._features
        if feats is None:  # the backbone run on its own, outside MultiExit.forward
            return
        if self.index in feats:
            raise UnsupportedModelError(
                f"exit point {self.owner.points[self.index]} ran twice in one forward; "
                "choose a module the backbone calls once"
            )
        if not isinstance(output, torch.Tensor):
            raise UnsupportedModelError(
                f"exit point {self.owner.points[self.index]} returns "
                f"{type(output).__name__}, not a tensor; choose a module returning a feature map"
            )
        feats[self.index] = output


def _final_output(out: Any) -> torch.Tensor:
    """The backbone's classifier output: the tensor itself, or the last of a tuple/list."""
    if isinstance(out, (tuple, list)) and out:
        out = out[-1]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise UnsupportedModelError(
            "the backbone must return [batch, classes] logits (or a tuple whose last element "
            f"is); it returned {type(out).__name__}"
            + (f" of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else "")
        )
    return out


def candidate_points(backbone: nn.Module) -> list[str]:
    """Submodule names where an exit may attach, in registration order.

    First choice: the outermost modules whose class name contains ``Block``, ``Layer`` or
    ``Stage`` (residual blocks, stages; torch's own ``nn.LayerNorm`` etc. excluded). Else the
    children of the longest ``nn.Sequential``/``nn.ModuleList``. Else the top-level children.
    """
    names: list[str] = []
    for name, mod in backbone.named_modules():
        cls = type(mod)
        if not name or cls.__module__.startswith("torch."):
            continue
        if _BLOCK_NAME.search(cls.__name__) and not any(name.startswith(p + ".") for p in names):
            names.append(name)
    if len(names) >= 2:
        return names
    best: tuple[str, nn.Module] | None = None
    for name, mod in backbone.named_modules():
        if isinstance(mod, (nn.Sequential, nn.ModuleList)) and (
            best is None or len(mod) > len(best[1])  # type: ignore[arg-type]
        ):
            best = (name, mod)
    if best is not None and len(best[1]) >= 2:  # type: ignore[arg-type]
        prefix = f"{best[0]}." if best[0] else ""
        return [f"{prefix}{k}" for k in range(len(best[1]))]  # type: ignore[arg-type]
    return [name for name, _ in backbone.named_children()]


def _spread(candidates: Sequence[str], n: int) -> list[str]:
    """``n`` evenly spaced candidates, never the last one (it sits next to the classifier)."""
    usable = list(candidates[:-1]) if len(candidates) > 1 else list(candidates)
    m = len(usable)
    if m <= n:
        return usable
    picks = sorted({min(m - 1, max(0, round((i + 1) * (m + 1) / (n + 1)) - 1)) for i in range(n)})
    return [usable[k] for k in picks]


def _default_example(backbone: nn.Module) -> torch.Tensor:
    for mod in backbone.modules():
        if isinstance(mod, nn.Conv2d):
            return torch.rand(2, mod.in_channels, 32, 32)
        if isinstance(mod, nn.Linear):
            return torch.rand(2, mod.in_features)
    raise UsageError("cannot guess the backbone's input shape: pass example_inputs")


def _trace(
    backbone: nn.Module, names: Sequence[str], example: torch.Tensor
) -> tuple[list[str], dict[str, torch.Size], torch.Tensor]:
    """Run ``backbone`` once; return the names that ran exactly once with a tensor output, in
    execution order, their output shapes, and the final logits."""
    order: list[str] = []
    shapes: dict[str, torch.Size] = {}
    calls: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and name not in shapes:
                order.append(name)
                shapes[name] = out.shape

        return record

    for name in names:
        handles.append(backbone.get_submodule(name).register_forward_hook(hook(name)))
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            try:
                out = backbone(example)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise UsageError(
                    f"the backbone failed on an example input of shape {list(example.shape)} "
                    f"({type(exc).__name__}); pass example_inputs=<a batch it accepts>"
                ) from exc
            final = _final_output(out)
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    ran = [n for n in order if calls.get(n) == 1 and shapes[n][0] == example.shape[0]]
    return ran, shapes, final


def _find_classifier(backbone: nn.Module) -> str | None:
    last = None
    for name, mod in backbone.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    return last


def attach_exits(
    backbone: nn.Module,
    points: str | Sequence[str] = "auto",
    head: str = "pool-linear",
    num_classes: int | None = None,
    *,
    num_exits: int = 3,
    example_inputs: torch.Tensor | None = None,
    head_width: int | None = None,
) -> MultiExit:
    """Attach exit heads to ``backbone`` and return the multi-exit module.

    ``points``: ``"auto"`` (``num_exits`` evenly spaced blocks from :func:`candidate_points`,
    in execution order) or a list of submodule names (``backbone.named_modules()``), in any
    order; exits come out in execution order. ``head``: ``"pool-linear"`` (global average pool
    + linear) or ``"conv-pool-linear"`` (1x1 conv to ``head_width`` channels + BN + ReLU, pool,
    linear). ``num_classes`` defaults to the width of the backbone's own output and must match
    it. ``example_inputs`` (a batch the backbone accepts) is run once to find shapes; without
    it a ``[2, C, 32, 32]`` (or ``[2, F]``) random batch is guessed from the first layer.
    """
    if head not in HEADS:
        raise UsageError(f"unknown exit head {head!r}: use one of {', '.join(HEADS)}")
    if num_exits < 1:
        raise UsageError(f"num_exits must be >= 1, got {num_exits}")
    example = example_inputs if example_inputs is not None else _default_example(backbone)
    if example.shape[0] < 2:
        example = example.repeat(2, *([1] * (example.dim() - 1)))
    modules = dict(backbone.named_modules())
    if isinstance(points, str):
        if points != "auto":
            raise UsageError(f"points must be 'auto' or a list of module names, got {points!r}")
        candidates = candidate_points(backbone)
        ran, shapes, final = _trace(backbone, candidates, example)
        chosen = _spread(ran, num_exits)
        if not chosen:
            raise UnsupportedModelError(
                "found no module to attach exits to automatically; pass points=[module names]"
            )
    else:
        unknown = [p for p in points if p not in modules or not p]
        if unknown:
            sample = ", ".join(candidate_points(backbone)[:8])
            raise UsageError(
                f"no submodule named {unknown[0]!r} in the backbone; candidates include {sample}"
            )
        ran, shapes, final = _trace(backbone, list(points), example)
        missing = [p for p in points if p not in ran]
        if missing:
            raise UnsupportedModelError(
                f"exit point {missing[0]!r} did not run exactly once with a tensor output in "
                "the backbone's forward; choose a module on the path to the output"
            )
        chosen = ran  # execution order
    classes = int(final.shape[1])
    if num_classes is not None and num_classes != classes:
        raise UsageError(
            f"num_classes={num_classes} but the backbone outputs {classes} classes: replace "
            "its classifier first (every exit must predict the same classes)"
        )
    heads = [_make_head(head, shapes[p], classes, head_width) for p in chosen]
    logger.info("attached %d exit(s) at %s", len(chosen), ", ".join(chosen))
    return MultiExit(backbone, chosen, heads, classifier=_find_classifier(backbone))
