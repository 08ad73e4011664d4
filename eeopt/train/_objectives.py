"""The exit-training objectives, one class each behind one interface (:class:`Objective`).

``loss(outputs, targets, inputs, model)`` gets the model's exit logits (earliest first), the
labels, the input batch and the model (for objectives that run it again, e.g. on perturbed
inputs). Objectives that train ramp by ramp (weighted-entropy) say so through ``num_stages``,
``stage_exits`` and ``keep``; :func:`eeopt.train.fit` drives those hooks. The formulas are
written out in ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eeopt.errors import UsageError
from eeopt.train._augment import gaussian_noise, random_erase, random_shift

__all__ = [
    "OBJECTIVES",
    "Consistency",
    "CrossEntropy",
    "Objective",
    "SelfDistillation",
    "WeightedEntropy",
    "entropy_weights",
    "exits_correctly",
    "make_objective",
    "resample",
]


class Objective(ABC):
    """How a multi-exit model is trained.

    The default is one stage that trains every exit jointly; ramp-by-ramp objectives override
    ``num_stages``/``stage_exits``/``keep``.
    """

    name: ClassVar[str]

    @abstractmethod
    def loss(
        self,
        outputs: Sequence[torch.Tensor],
        targets: torch.Tensor,
        inputs: torch.Tensor,
        model: nn.Module,
    ) -> torch.Tensor:
        """The scalar training loss of one batch."""

    def num_stages(self, num_exits: int) -> int:
        """How many training stages (each runs the full epoch budget on its data)."""
        return 1

    def stage_exits(self, stage: int, num_exits: int) -> tuple[int, ...]:
        """The exits trained in ``stage``: fit updates only the parameters they depend on
        (and that no earlier stage trained)."""
        return tuple(range(num_exits))

    def begin_stage(self, stage: int) -> None:  # noqa: B027 - an optional hook
        """Called before ``stage`` starts."""

    def keep(self, stage: int, outputs: Sequence[torch.Tensor], targets: torch.Tensor
             ) -> torch.Tensor | None:
        """After ``stage``: a bool mask of the training rows the next stage trains on (None:
        all of them). ``outputs`` are the eval-mode logits of those rows."""
        return None

    def config(self) -> dict[str, Any]:
        """The objective's name and settings, for metrics files."""
        out: dict[str, Any] = {"name": self.name}
        if dataclasses.is_dataclass(self):
            out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                        if f.init})
        return out


def _per_exit_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise UsageError(f"got {len(weights)} exit weights for a model with {n} exits")
    return [float(w) for w in weights]


@dataclass
class CrossEntropy(Objective):
    """SDN / BranchyNet: ``sum_e w_e * CE(z_e, y)``; equal weights by default.

    Joint training, or heads-only with ``fit(..., freeze_backbone=True)``.
    """

    name: ClassVar[str] = "ce"
    weights: Sequence[float] | None = None

    def loss(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
        w = _per_exit_weights(self.weights, len(outputs))
        return sum((wk * F.cross_entropy(z, targets) for wk, z in zip(w, outputs, strict=True)),
                   torch.zeros(()))


@dataclass
class SelfDistillation(Objective):
    """Per-exit CE plus KL from the detached final exit (teacher) to every early exit:
    ``sum_e CE(z_e, y) + kd_weight * T^2 * sum_{e<K} KL(softmax(z_K/T) || softmax(z_e/T))``."""

    name: ClassVar[str] = "distill"
    temperature: float = 2.0
    kd_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")

    def loss(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
        t = self.temperature
        teacher = F.softmax(outputs[-1].detach() / t, dim=1)
        total = sum((F.cross_entropy(z, targets) for z in outputs), torch.zeros(()))
        for z in outputs[:-1]:
            kl = F.kl_div(F.log_softmax(z / t, dim=1), teacher, reduction="batchmean")
            total = total + self.kd_weight * t * t * kl
        return total


def entropy_weights(earlier_preds: Sequence[torch.Tensor], targets: torch.Tensor,
                    eps: float) -> torch.Tensor:
    """``w_l(x) = prod_{j<l} 1[yhat_j(x) != y]``, softened: ``eps`` where any earlier ramp was
    right, 1 where all were wrong (or where there is no earlier ramp)."""
    wrong = torch.ones_like(targets, dtype=torch.bool)
    for pred in earlier_preds:
        wrong &= pred != targets
    return torch.where(wrong, torch.ones((), dtype=torch.float32),
                       torch.full((), float(eps), dtype=torch.float32))


def exits_correctly(logits: torch.Tensor, targets: torch.Tensor, threshold: float
                    ) -> torch.Tensor:
    """Rows that leave at this ramp (confidence = softmax max-prob >= threshold) with the
    right label."""
    prob = F.softmax(logits.float(), dim=1)
    conf, pred = prob.max(dim=1)
    return (conf >= threshold) & (pred == targets)


def resample(indices: torch.Tensor, exited: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The rows of ``indices`` that did not exit, in a fresh random order."""
    if exited.shape != indices.shape:
        raise ValueError(f"exited mask {tuple(exited.shape)} != indices {tuple(indices.shape)}")
    rest = indices[~exited]
    return rest[torch.randperm(rest.numel(), generator=generator)]


@dataclass
class WeightedEntropy(Objective):
    """Adaptive off-ramps (EP4356304A1 / US 12,217,172), trained ramp by ramp.

    Stage ``l`` trains ramp ``l`` and the backbone it alone depends on, with
    ``L_l = CE(z_l, y) + alpha * w_l(x) * H(p_l) + conf_weight * BCE(c_l, 1[yhat_l = y])``,
    where ``p_l = softmax(z_l)``, ``c_l = max_k p_l,k`` (the confidence the runtime's
    max-probability gate thresholds) and ``w_l`` is :func:`entropy_weights` of the earlier
    ramps' predictions. After stage ``l`` the training rows that exit correctly at ``l``
    (``c_l >= threshold`` and right) are removed and the rest reshuffled for stage ``l + 1``.
    """

    name: ClassVar[str] = "weighted-entropy"
    alpha: float = 0.1
    eps: float = 0.1
    threshold: float = 0.9
    conf_weight: float = 0.1
    _stage: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise UsageError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.eps <= 1.0:
            raise UsageError(f"eps must be in [0, 1], got {self.eps}")

    def num_stages(self, num_exits: int) -> int:
        return num_exits

    def stage_exits(self, stage: int, num_exits: int) -> tuple[int, ...]:
        return (stage,)

    def begin_stage(self, stage: int) -> None:
        self._stage = stage

    def loss(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
        z = outputs[self._stage]
        logp = F.log_softmax(z, dim=1)
        p = logp.exp()
        ce = F.nll_loss(logp, targets, reduction="none")
        ent = -(p * logp).sum(dim=1)
        earlier = [o.detach().argmax(dim=1) for o in outputs[: self._stage]]
        w = entropy_weights(earlier, targets, self.eps)
        conf, pred = p.max(dim=1)
        right = (pred == targets).float()
        bce = F.binary_cross_entropy(conf.clamp(1e-6, 1 - 1e-6), right, reduction="none")
        return (ce + self.alpha * w * ent + self.conf_weight * bce).mean()

    def keep(self, stage: int, outputs: Sequence[torch.Tensor], targets: torch.Tensor
             ) -> torch.Tensor | None:
        return ~exits_correctly(outputs[stage], targets, self.threshold)


@dataclass
class Consistency(Objective):
    """Consistent exit training (arXiv 2109.13192):
    ``sum_e [CE(y, z_e(x)) + beta * KL(sg(p_e(x)) || p_e(A(x))) + gamma * CE(y, z_e(A(x)))]``
    with ``A`` = random shift (``max_shift`` px), Gaussian noise (``noise``) and random erasing
    (probability ``erase``)."""

    name: ClassVar[str] = "consistency"
    beta: float = 1.0
    gamma: float = 0.5
    noise: float = 0.1
    max_shift: int = 2
    erase: float = 0.5

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = random_shift(x, int(self.max_shift))
            x = random_erase(x, self.erase)
        return gaussian_noise(x, self.noise)

    def loss(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
        own = getattr(model, "perturb", None)  # a model of text says how to perturb it
        aug = model(own(inputs) if callable(own) else self.perturb(inputs))
        total = torch.zeros(())
        for z, za in zip(outputs, aug, strict=True):
            clean = F.softmax(z.detach(), dim=1)
            kl = F.kl_div(F.log_softmax(za, dim=1), clean, reduction="batchmean")
            total = total + (F.cross_entropy(z, targets) + self.beta * kl
                             + self.gamma * F.cross_entropy(za, targets))
        return total


#: objective name -> class
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (CrossEntropy, SelfDistillation, WeightedEntropy, Consistency)
}


def make_objective(objective: str | Objective, **kwargs: Any) -> Objective:
    """An :class:`Objective` from its name and settings (or the instance itself)."""
    if isinstance(objective, Objective):
        if kwargs:
            raise UsageError("objective settings go to the Objective's constructor, not fit()")
        return objective
    cls = OBJECTIVES.get(objective)
    if cls is None:
        raise UsageError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise UsageError(
            f"objective {objective!r} has no setting {unknown[0]!r}: it takes "
            + (", ".join(allowed) or "none")
        )
    return cls(**kwargs)
