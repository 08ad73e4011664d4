"""Exit training: attach exits to any backbone and train them with the seeds' objectives.

    from eeopt.train import attach_exits, fit
    model = attach_exits(backbone, points="auto", head="conv-pool-linear")
    metrics = fit(model, data="fashion-mnist", objective="distill", epochs=2)

Objectives (``OBJECTIVES``): ``ce`` (SDN/BranchyNet weighted CE), ``distill`` (self-distillation
from the final exit), ``weighted-entropy`` (adaptive off-ramps, EP4356304A1, trained ramp by
ramp) and ``consistency`` (arXiv 2109.13192). The formulas are in ``docs/training.md``.

JEI-DNN's alternating training is ``train_jei``; ``write_run`` writes a run's directory.

The names load on first use: every module here imports torch, and ``import eeopt.train`` (what
the ``eeopt`` command does) must not.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ARCHS",
    "DEFAULT_ALTERNATE",
    "JEIResult",
    "HEADS",
    "OBJECTIVES",
    "Consistency",
    "CrossEntropy",
    "ExitHead",
    "MultiExit",
    "Objective",
    "SelfDistillation",
    "WeightedEntropy",
    "attach_exits",
    "build_model",
    "candidate_points",
    "entropy_weights",
    "evaluate",
    "exit_dependencies",
    "exits_correctly",
    "gaussian_noise",
    "fit",
    "load_split",
    "make_objective",
    "predict",
    "random_erase",
    "random_shift",
    "resample",
    "shift",
    "stalled_loss",
    "torch_reference",
    "train_jei",
    "write_run",
]

_HOME = {
    "eeopt.train._attach": ("HEADS", "ExitHead", "MultiExit", "attach_exits",
                            "candidate_points"),
    "eeopt.train._backbones": ("ARCHS", "build_model"),
    "eeopt.train._fit": ("evaluate", "exit_dependencies", "fit", "load_split", "predict",
                         "stalled_loss"),
    "eeopt.train._augment": ("gaussian_noise", "random_erase", "random_shift", "shift"),
    "eeopt.train._jei": ("DEFAULT_ALTERNATE", "JEIResult", "torch_reference", "train_jei"),
    "eeopt.train.run_dir": ("write_run",),
    "eeopt.train._objectives": ("OBJECTIVES", "Consistency", "CrossEntropy", "Objective",
                                "SelfDistillation", "WeightedEntropy", "entropy_weights",
                                "exits_correctly", "make_objective", "resample"),
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'eeopt.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
