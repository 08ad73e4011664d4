"""CompileSettings: every option of a compile checked once, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

import eeopt
from eeopt.compiler import CompileSettings, get_backend
from eeopt.errors import UsageError


@pytest.mark.parametrize("options,match", [
    ({"threshold": 0.5, "thresholds": [0.5]}, "pass either threshold or thresholds"),
    ({}, "no thresholds: pass threshold=T"),
    ({"budget": 1.0}, "the planner needs both calib=DATA and budget=PP"),
    ({"calib": "fashion-mnist:val", "budget": -1.0}, "budget -1.0 must be >= 0"),
    ({"threshold": 0.5, "guarantee": 0.9}, "guarantee needs the planner"),
    ({"threshold": 0.5, "policy": "jei", "tau": 0.2, "calib": "x"},
     "tau applies to policy cost-sensitive, not jei"),
    ({"policy": "twin"}, "policy twin learns its gates from labelled data"),
    ({"threshold": 0.5, "backend": "aoti", "calib": "x", "budget": 1.0},
     "the planner .* run on backend onnxruntime"),
])
def test_bad_settings_are_refused_on_construction(options: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        CompileSettings(**options)


def test_good_settings() -> None:
    s = CompileSettings(threshold=0.8, backend="ort")
    assert s.backend == "onnxruntime" and not s.planning and not s.learned
    assert s.thresholds_for(3) == [0.8, 0.8, 0.8]
    with pytest.raises(UsageError, match="got 2 thresholds; the model has 3 early exits"):
        CompileSettings(thresholds=[0.9, 0.8]).thresholds_for(3)
    planned = CompileSettings(calib="fashion-mnist:val", budget=0.5)
    assert planned.planning and not planned.learned
    assert CompileSettings(policy="jei", calib="x").learned


def test_settings_are_checked_before_the_model_is_read(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pass either threshold or thresholds"):
        eeopt.compile(tmp_path / "no-such-model.onnx", tmp_path / "p", threshold=0.5,
                      thresholds=[0.5])
    with pytest.raises(UsageError, match="unknown backend 'tpu'"):
        eeopt.compile(tmp_path / "no-such-model.onnx", tmp_path / "p", threshold=0.5,
                      backend="tpu")
    assert get_backend("onnxruntime").available()
    assert not (tmp_path / "p").exists()
