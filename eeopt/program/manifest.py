"""The compiled program's schema: ``manifest.json`` plus one file per stage.

``load_manifest`` verifies everything it reads (schema version, field types, every stage file's
sha256, that no path leaves the program directory, and that no ONNX stage reads external data)
and raises ``ManifestError`` naming the mismatch. The names a stage gives its gate's tensors
are part of the schema too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eeopt.errors import ManifestError
from eeopt.program.onnx_scan import MalformedModel, external_data_tensors
from eeopt.program.plan import PlanRecord

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "BATCH",
    "THRESHOLD_INPUT",
    "GATE_PREFIX",
    "gate_prefix",
    "TensorSpec",
    "GateSpec",
    "StageSpec",
    "SequenceSpec",
    "Manifest",
    "sha256_file",
    "load_manifest",
    "save_manifest",
    "resolve_in_dir",
    "manifest_from_dict",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: the symbolic name eeopt gives every batch dimension
BATCH = "N"
#: the scalar input through which a gated stage reads its threshold
THRESHOLD_INPUT = "eeopt_threshold"
GATE_PREFIX = "eeopt_gate"


def gate_prefix(stage: int) -> str:
    """Names of stage k's gate tensors start with this (unique per stage, so that carried
    gate state from one stage never collides with the next stage's)."""
    return f"{GATE_PREFIX}{stage}"


Dim = int | str | None

#: the dtypes a tensor of a program may have (numpy names)
DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                    "uint16", "uint32", "uint64", "bool", "bfloat16"})


@dataclass(frozen=True)
class TensorSpec:
    """A tensor crossing a stage boundary. ``shape`` holds ints, symbolic names, or None
    (unknown); ``batch_axis`` is the axis that compaction indexes (None: batch-independent)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None = 0

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"


@dataclass(frozen=True)
class GateSpec:
    policy: str
    threshold: float
    features: tuple[str, ...]


@dataclass(frozen=True)
class StageSpec:
    index: int
    file: str
    sha256: str
    exit_output: str
    """The exit's output name in the source model."""
    inputs: tuple[TensorSpec, ...]
    """Graph inputs and carried tensors the stage reads (the threshold is not among them)."""
    produces: tuple[TensorSpec, ...]
    """Carried tensors the stage computes for later stages."""
    carry_after: tuple[str, ...]
    """Every tensor alive after the stage: what the runtime keeps and compacts."""
    logits: str
    decision: str | None = None
    features: str | None = None
    threshold_input: str | None = None
    gate: GateSpec | None = None
    nodes: int = 0


@dataclass(frozen=True)
class SequenceSpec:
    """A sequence axis the runtime may trim: after the rows that exit leave the batch, every
    tensor in ``axes`` is cut along its axis to the longest remaining row, as ``mask`` (a
    graph input ``[batch, seq]`` of 1 = token, 0 = right padding) measures it. Found and
    checked at compile time (the exits do not change when padding is added)."""

    mask: str
    axes: dict[str, int]
    """Graph input or carried tensor -> its sequence axis."""


@dataclass(frozen=True)
class Manifest:
    eeopt_version: str
    backend: str
    backend_version: str
    onnx_opset: int
    inputs: tuple[TensorSpec, ...]
    num_classes: int
    stages: tuple[StageSpec, ...]
    source: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    plan: PlanRecord | None = None
    """What the planner chose, when it chose the exits and thresholds."""
    sequence: SequenceSpec | None = None
    """The sequence axis the runtime trims to the longest remaining row, if the model has one
    (optional: a runtime that does not trim computes the same)."""
    split: dict[str, Any] | None = None
    """Where to split the program between a device and an edge server, per link bandwidth
    (``eeopt plan-split``; read by ``eeopt.split.SplitPlan``), if planned."""
    schema_version: int = SCHEMA_VERSION

    @property
    def num_exits(self) -> int:
        return len(self.stages)

    @property
    def exit_names(self) -> tuple[str, ...]:
        """The source model's output name of each kept exit: ``Result.exit`` k is
        ``exit_names[k]`` (after the planner drops exits, k no longer numbers the model's)."""
        return tuple(s.exit_output for s in self.stages)

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(s.gate.threshold for s in self.stages if s.gate is not None)

    def batch_axes(self) -> dict[str, int | None]:
        """Every graph input and carried tensor -> its batch axis (None: not batched), the
        axis a runtime compacts it along."""
        axes: dict[str, int | None] = {s.name: s.batch_axis for s in self.inputs}
        for st in self.stages:
            for t in st.inputs + st.produces:
                axes[t.name] = t.batch_axis
        return axes

    def to_json(self) -> str:
        d = asdict(self)
        d["plan"] = None if self.plan is None else self.plan.to_dict()
        if self.sequence is None:
            del d["sequence"]
        if self.split is None:
            del d["split"]
        return json.dumps(d, indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------- parsing


def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise ManifestError(f"manifest: {where} is missing the field {key!r}; recompile")
    val = d[key]
    if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
        raise ManifestError(f"manifest: {where}.{key} has the wrong type; recompile")
    return val


def _tensor(d: Any, where: str) -> TensorSpec:
    if not isinstance(d, dict):
        raise ManifestError(f"manifest: {where} must be an object; recompile")
    shape = _req(d, "shape", list, where)
    for dim in shape:
        if dim is not None and not isinstance(dim, (int, str)):
            raise ManifestError(f"manifest: {where}.shape holds {dim!r}; recompile")
    axis = d.get("batch_axis", 0)
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
        raise ManifestError(f"manifest: {where}.batch_axis must be an int or null; recompile")
    name = _req(d, "name", str, where)
    if axis is not None and not 0 <= axis < len(shape):
        raise ManifestError(f"manifest: {where} {name!r} has batch_axis {axis}, but its shape "
                            f"has {len(shape)} axes; recompile")
    dtype = _req(d, "dtype", str, where)
    if dtype not in DTYPES:
        raise ManifestError(f"manifest: {where} {name!r} has dtype {dtype!r}, which eeopt does "
                            f"not write; recompile")
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape), batch_axis=axis)


def _stage(d: Any, i: int) -> StageSpec:
    where = f"stages[{i}]"
    if not isinstance(d, dict):
        raise ManifestError(f"manifest: {where} must be an object; recompile")
    gate = d.get("gate")
    gate_spec = None
    if gate is not None:
        if not isinstance(gate, dict):
            raise ManifestError(f"manifest: {where}.gate must be an object or null; recompile")
        gate_spec = GateSpec(
            policy=_req(gate, "policy", str, f"{where}.gate"),
            threshold=float(_req(gate, "threshold", (int, float), f"{where}.gate")),
            features=tuple(_req(gate, "features", list, f"{where}.gate")),
        )
    return StageSpec(
        index=_req(d, "index", int, where),
        file=_req(d, "file", str, where),
        sha256=_req(d, "sha256", str, where),
        exit_output=_req(d, "exit_output", str, where),
        inputs=tuple(_tensor(t, f"{where}.inputs") for t in _req(d, "inputs", list, where)),
        produces=tuple(
            _tensor(t, f"{where}.produces") for t in _req(d, "produces", list, where)
        ),
        carry_after=tuple(_req(d, "carry_after", list, where)),
        logits=_req(d, "logits", str, where),
        decision=d.get("decision"),
        features=d.get("features"),
        threshold_input=d.get("threshold_input"),
        gate=gate_spec,
        nodes=int(d.get("nodes", 0)),
    )


def _check_dataflow(inputs: tuple[TensorSpec, ...], stages: tuple[StageSpec, ...]) -> None:
    """Every tensor a stage reads or carries on is alive there (the C++ loader checks the
    same, with the same messages)."""
    live = {t.name for t in inputs}
    for s in stages:
        where = f"stages[{s.index}]"
        for t in s.inputs:
            if t.name not in live:
                raise ManifestError(f"manifest: {where} reads {t.name!r}, which no earlier stage "
                                    "carries; recompile")
        live |= {t.name for t in s.produces}
        for name in s.carry_after:
            if name not in live:
                raise ManifestError(f"manifest: {where}.carry_after names {name!r}, which is "
                                    "neither alive nor produced there; recompile")
        live = set(s.carry_after)


def _sequence(d: Any, inputs: tuple[TensorSpec, ...],
              stages: tuple[StageSpec, ...]) -> SequenceSpec | None:
    """The optional ``sequence`` field, checked against the tensors it names."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ManifestError("manifest: sequence must be an object or absent; recompile")
    mask = _req(d, "mask", str, "sequence")
    axes = _req(d, "axes", dict, "sequence")
    ranks = {t.name: t for t in inputs}
    for st in stages:
        ranks.update({t.name: t for t in st.inputs + st.produces})
    m = ranks.get(mask)
    if m is None or m not in inputs or len(m.shape) != 2 or m.batch_axis != 0:
        raise ManifestError(f"manifest: sequence.mask {mask!r} is not a [batch, seq] input; "
                            "recompile")
    for name, axis in axes.items():
        t = ranks.get(name)
        if t is None:
            raise ManifestError(f"manifest: sequence.axes names {name!r}, which is no tensor of "
                                "the program; recompile")
        if (not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(t.shape)
                or axis == t.batch_axis):
            raise ManifestError(f"manifest: sequence.axes gives {name!r} axis {axis!r}, which "
                                "is not one of its non-batch axes; recompile")
    if axes.get(mask) != 1:
        raise ManifestError("manifest: sequence.axes must give the mask axis 1; recompile")
    return SequenceSpec(mask=mask, axes={str(k): int(v) for k, v in axes.items()})


def manifest_from_dict(d: Any) -> Manifest:
    if not isinstance(d, dict):
        raise ManifestError("manifest: the top level must be a JSON object; recompile")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest: schema_version {version!r} is not supported by this eeopt "
            f"(it reads {SCHEMA_VERSION}); recompile the program with this version"
        )
    stages = tuple(_stage(s, i) for i, s in enumerate(_req(d, "stages", list, "manifest")))
    if len(stages) < 2:
        raise ManifestError("manifest: a program needs at least 2 stages; recompile")
    for i, s in enumerate(stages):
        if s.index != i:
            raise ManifestError(f"manifest: stages[{i}] has index {s.index}; recompile")
        last = i == len(stages) - 1
        if last != (s.gate is None) or (not last and (s.decision is None or s.threshold_input
                                                      is None)):
            raise ManifestError(
                f"manifest: stages[{i}] must {'not ' if last else ''}carry a gate; recompile"
            )
    inputs = tuple(_tensor(t, "inputs") for t in _req(d, "inputs", list, "manifest"))
    num_classes = _req(d, "num_classes", int, "manifest")
    if num_classes < 2:
        raise ManifestError(f"manifest: num_classes {num_classes} must be >= 2; recompile")
    _check_dataflow(inputs, stages)
    return Manifest(
        schema_version=version,
        eeopt_version=_req(d, "eeopt_version", str, "manifest"),
        backend=_req(d, "backend", str, "manifest"),
        backend_version=_req(d, "backend_version", str, "manifest"),
        onnx_opset=_req(d, "onnx_opset", int, "manifest"),
        inputs=inputs,
        num_classes=num_classes,
        stages=stages,
        source=d.get("source") or {},
        settings=d.get("settings") or {},
        plan=None if d.get("plan") is None else PlanRecord.from_dict(d["plan"]),
        sequence=_sequence(d.get("sequence"), inputs, stages),
        split=_split(d.get("split")),
    )


def _split(d: Any) -> dict[str, Any] | None:
    """The optional split plan: an object (``eeopt.split.SplitPlan`` checks its fields)."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ManifestError("manifest: split must be an object; run eeopt plan-split again")
    return d


# ---------------------------------------------------------------------------- files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_in_dir(directory: Path, name: str) -> Path:
    """``directory / name``, refusing anything that leaves ``directory`` (.., absolute, links)."""
    if not name or os.path.isabs(name) or Path(name).drive:
        raise ManifestError(f"manifest: file {name!r} is not a relative path inside {directory}")
    root = directory.resolve()
    path = (root / name).resolve()
    if path.parent != root and root not in path.parents:
        raise ManifestError(f"manifest: file {name!r} points outside the program directory")
    return path


def load_manifest(directory: str | os.PathLike[str], *, verify_files: bool = True) -> Manifest:
    d = Path(directory)
    if not d.is_dir():
        raise ManifestError(f"{d} is not a program directory; compile one with `eeopt compile`")
    mpath = d / MANIFEST_NAME
    if not mpath.is_file():
        raise ManifestError(f"{d} has no {MANIFEST_NAME}; compile it with `eeopt compile`")
    try:
        raw = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{mpath} is not valid JSON ({exc}); recompile") from exc
    manifest = manifest_from_dict(raw)
    if verify_files:
        for s in manifest.stages:
            path = resolve_in_dir(d, s.file)
            if not path.is_file():
                raise ManifestError(f"stage {s.index} file {s.file} is missing from {d}; recompile")
            data: bytes | None = None  # an ONNX stage is read whole: hashed, then scanned
            if manifest.backend == "onnxruntime":
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
            else:
                digest = sha256_file(path)
            if digest != s.sha256:
                raise ManifestError(
                    f"stage {s.index} file {s.file} does not match its sha256 in the manifest "
                    "(modified or corrupted); recompile the program"
                )
            if data is not None:
                _check_self_contained(data, f"stage {s.index} file {s.file}")
    return manifest


def _check_self_contained(data: bytes, where: str) -> None:
    """An ONNX stage must hold all its data: ONNX Runtime would resolve an external data file
    against the current directory, outside what the sha256 covers."""
    try:
        external = external_data_tensors(data)
    except MalformedModel as exc:
        raise ManifestError(f"{where} is not a valid ONNX model ({exc}); recompile") from None
    if external:
        names = ", ".join(repr(n) for n in external[:3]) + (" ..." if len(external) > 3 else "")
        raise ManifestError(
            f"{where} keeps tensor {names} in an external data file, which the program's "
            "sha256 does not cover; eeopt never writes external data, so the program was "
            "modified: recompile it"
        )


def save_manifest(manifest: Manifest, directory: Path) -> Path:
    path = directory / MANIFEST_NAME
    path.write_text(manifest.to_json())
    return path
