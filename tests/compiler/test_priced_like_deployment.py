"""The planner prices a model the way it will run: on the calibration data's own rows (their
shapes: a text model's sequence length, not the random inputs' default of 8) and at the
compile's thread count, which the program then records and runs with by default. Once it
profiled random inputs of length 8 and all cores, while `bench` measured 1 thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import eeopt
import eeopt.compiler.planner as planner
from eeopt.frontend import export_torch


class Stop(Exception):
    pass


class SeqExits(nn.Module):
    """[N, L, 4] -> two exits."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8)
        self.h0, self.h1 = nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x))
        return self.h0(h.mean(1)), self.h1(torch.relu(self.b(h)).mean(1))


def test_the_profile_runs_on_calibration_rows_at_the_compiles_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = export_torch(SeqExits(), torch.rand(2, 64, 4))
    seen: dict[str, Any] = {}

    def spy(model: Any, *, threads: Any, example_inputs: Any, progress: bool) -> None:
        seen.update(threads=threads, example=example_inputs)
        raise Stop

    monkeypatch.setattr(planner, "profile_model", spy)
    x = np.random.default_rng(0).random((300, 64, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 300)
    with pytest.raises(Stop):
        eeopt.compile(model, tmp_path / "p", calib=({"x": x}, y), budget=1.0)
    assert seen["threads"] == 1  # the default everywhere: compile, profile, bench
    assert seen["example"]["x"].shape == (planner.PROFILE_ROWS, 64, 4)
    np.testing.assert_array_equal(seen["example"]["x"], x[: planner.PROFILE_ROWS])


def test_a_program_runs_at_the_threads_it_was_compiled_for(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = export_torch(SeqExits(), torch.rand(2, 64, 4))
    prog = eeopt.compile(model, tmp_path / "p", threshold=0.5, threads=1)
    assert prog.manifest.settings["threads"] == 1
