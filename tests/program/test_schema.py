"""manifest.schema.json describes what eeopt writes and requires what the loader requires (the
C++ runtime's test checks its loader against the same file)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import eeopt
from eeopt.errors import ManifestError
from eeopt.program import MANIFEST_NAME, PlanRecord, load_manifest

import topologies as T
from .test_plan_record import _plan_json

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(eeopt.program.__file__).parent / "manifest.schema.json").read_text())


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("schema") / "p"
    eeopt.compile(T.make("masked", 0), d, example_inputs=T.example("masked", 4, 0),
                  thresholds=[0.4, 0.45], policy="maxprob")
    return d


def _manifest(program_dir: Path) -> dict:
    return json.loads((program_dir / MANIFEST_NAME).read_text())


def test_what_eeopt_writes_is_valid(program_dir: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    m = _manifest(program_dir)
    validator.validate(m)
    validator.validate({**m, "plan": _plan_json()})
    bad = copy.deepcopy(m)
    bad["stages"][0]["inputs"][0]["shape"] = [1.5]
    assert not validator.is_valid(bad)


@pytest.mark.parametrize("where", ["top", "stage", "tensor", "gate"])
def test_the_loader_requires_what_the_schema_requires(program_dir: Path, tmp_path: Path,
                                                      where: str) -> None:
    node = SCHEMA if where == "top" else SCHEMA["$defs"][where]
    optional = sorted(set(node["properties"]) - set(node["required"]))
    m = _manifest(program_dir)

    def holder(d: dict, stage: int = 0) -> dict:
        return {"top": d, "stage": d["stages"][stage],
                "tensor": d["stages"][stage]["inputs"][0], "gate": d["stages"][0]["gate"]}[where]

    for field in node["required"]:
        d = copy.deepcopy(m)
        del holder(d)[field]
        with pytest.raises(ManifestError) as info:
            _load(d, program_dir, tmp_path)
        want = "schema_version None" if field == "schema_version" else \
            f"missing the field {field!r}"
        assert want in str(info.value), field
    for field in optional:  # (the final stage's: a gated stage needs its gate's fields)
        d = copy.deepcopy(m)
        holder(d, -1).pop(field, None)
        _load(d, program_dir, tmp_path)  # loads without it


def test_plan_record_requires_what_the_schema_requires() -> None:
    import dataclasses

    required = [f.name for f in dataclasses.fields(PlanRecord)
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    assert sorted(required) == sorted(SCHEMA["$defs"]["plan"]["required"])
    props = set(SCHEMA["$defs"]["plan"]["properties"])
    assert props == {f.name for f in dataclasses.fields(PlanRecord)} - {"extra"}


def _load(manifest: dict, program_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    if d.exists():
        for f in d.iterdir():
            f.unlink()
    else:
        d.mkdir()
    for f in program_dir.iterdir():
        if f.name != MANIFEST_NAME:
            (d / f.name).write_bytes(f.read_bytes())
    (d / MANIFEST_NAME).write_text(json.dumps(manifest))
    load_manifest(d)
