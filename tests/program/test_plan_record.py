"""The plan's record in the manifest: typed, checked, and written back as the JSON it was read
from."""

from __future__ import annotations

import copy
import json

import pytest

from eeopt.errors import ManifestError
from eeopt.program import CostModelRecord, CostRecord, PlanRecord


def _plan_json() -> dict:
    """A plan as eeopt writes it (keys in the writer's order)."""
    cost = {"fixed_ms": 0.01, "per_row_ms": 0.002, "samples": {"1": 0.012, "8": 0.026}}
    return {
        "policy": "maxprob", "kept": [0, 3], "thresholds": [0.74], "budget_pp": 0.5,
        "batch": 1, "predicted_accuracy": 0.91, "final_accuracy": 0.915,
        "predicted_latency_ms": 0.05, "plain_latency_ms": 0.15, "exit_fractions": [0.8, 0.2],
        "search_rows": 3500, "holdout": {"rows": 1500.0, "loss_pp": 0.1},
        "guarantee": None, "exact": True, "margin_pp": 0.2, "predicted_loss_pp": 0.5,
        "predicted_speedup": 3.0, "kept_outputs": ["exit0", "exit3"],
        "calibration": "fashion-mnist:val", "profile_threads": 1,
        "cost_corrections_ms": [0.0, 0.01, 0.0, 0.02],
        "cost_model": {"plain": cost, "stages": [cost, cost]},
        "exit_benefit": [{"exit": 0, "accuracy": 0.8, "saved_ms": 0.1}],
    }


def test_round_trip_is_the_same_json() -> None:
    d = _plan_json()
    rec = PlanRecord.from_dict(json.loads(json.dumps(d)))
    assert rec.kept == (0, 3) and rec.kept_outputs == ("exit0", "exit3")
    assert rec.cost_model is not None and rec.cost_model.plain.samples == {1: 0.012, 8: 0.026}
    assert rec.exit_benefit is not None and rec.gate_train_rows is None
    assert json.dumps(rec.to_dict()) == json.dumps(d)  # same keys, same order, same values


def test_older_plans_load_and_unknown_keys_are_kept() -> None:
    d = _plan_json()
    for key in ("margin_pp", "cost_model", "calibration", "exit_benefit", "holdout"):
        del d[key]  # fields older eeopt versions did not write
    d["from_the_future"] = {"x": 1}
    rec = PlanRecord.from_dict(d)
    assert rec.margin_pp == 0.0 and rec.cost_model is None and rec.calibration == ""
    assert rec.to_dict()["from_the_future"] == {"x": 1}
    assert "exit_benefit" not in rec.to_dict()


@pytest.mark.parametrize("key,value,where", [
    ("kept", [0, "3"], "plan.kept"),
    ("batch", 1.5, "plan.batch"),
    ("thresholds", ["high"], "plan.thresholds"),
    ("cost_model", {"plain": {"fixed_ms": "x", "per_row_ms": 0.0}, "stages": []},
     "plan.cost_model.plain.fixed_ms"),
])
def test_a_wrong_field_is_named(key: str, value: object, where: str) -> None:
    d = _plan_json()
    d[key] = value
    with pytest.raises(ManifestError, match=where.replace(".", r"\.")):
        PlanRecord.from_dict(d)


def test_a_missing_field_is_named() -> None:
    d = copy.deepcopy(_plan_json())
    del d["kept_outputs"]
    with pytest.raises(ManifestError, match="missing the field 'kept_outputs'"):
        PlanRecord.from_dict(d)


def test_cost_records() -> None:
    rec = CostModelRecord(CostRecord(0.1, 0.01, {1: 0.11}), (CostRecord(0.2, 0.0),))
    assert CostModelRecord.from_dict(json.loads(json.dumps(rec.to_dict())), "plan") == rec


@pytest.mark.parametrize("speedup", [3.0, 0.97])
def test_a_plan_slower_than_the_plain_network_says_so(speedup: float) -> None:
    """`compile` and `inspect` print the plan; one predicted slower than the plain network
    (the exits' heads and stage calls cost more than they save) carries a warning."""
    from eeopt.cli.common import plan_lines

    d = {**_plan_json(), "predicted_speedup": speedup,
         "holdout": {"rows": 1500.0, "loss_pp": 0.1, "latency_ms": 0.05}}
    lines = plan_lines(PlanRecord.from_dict(d))
    warned = [ln for ln in lines if "warning: predicted slower than the plain network" in ln]
    assert len(warned) == (1 if speedup < 1 else 0)
