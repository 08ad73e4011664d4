"""Writes a tiny hand-built 3-stage program whose every row's exit and logits are known, for the
C++ runtime's tests (ctest runs it as a fixture; tests/cpp/ imports it).

    python cpp/tests/make_test_program.py OUT_DIR [--example X.npy]

Input ``x`` float32 [N, 4]. A row leaves at exit 0 if x[:, 0] >= threshold 0, else at exit 1 if
x[:, 1] >= threshold 1, else at exit 2. The logits identify the row and the exit:
exit 0 -> x, exit 1 -> x + 6, exit 2 -> 2 x + 100. Carried tensors cover every compaction case:
``t`` = x^T [4, N] (batch axis 1), ``c`` = [1, 2, 3] (no batch axis; exit 1 adds its sum, 6),
``y`` = x + 100 and ``x`` itself (batch axis 0, read again by the last stage).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    from eeopt import __version__
    from eeopt.program import (
        GateSpec,
        Manifest,
        StageSpec,
        TensorSpec,
        save_manifest,
        sha256_file,
        write_dir,
    )
except ImportError as exc:  # ctest: exit 77 marks the fixture (and the tests needing it) skipped
    if __name__ != "__main__":
        raise
    print(f"make_test_program: skipped, this Python lacks {exc.name}", file=sys.stderr)
    raise SystemExit(77) from None

OPSET = 17
F, B = TensorProto.FLOAT, TensorProto.BOOL
THRESHOLD = "eeopt_threshold"
X = TensorSpec("x", "float32", ("N", 4), 0)
T = TensorSpec("t", "float32", (4, "N"), 1)
C = TensorSpec("c", "float32", (3,), None)
Y = TensorSpec("y", "float32", ("N", 4), 0)


def _vi(spec: TensorSpec, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(spec.name, elem, list(spec.shape))


def _gate(column: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """decision = x[:, column] >= threshold."""
    idx = helper.make_tensor(f"col{column}_index", TensorProto.INT64, [], [column])
    nodes = [
        helper.make_node("Gather", ["x", idx.name], [f"col{column}"], axis=1),
        helper.make_node("GreaterOrEqual", [f"col{column}", THRESHOLD], ["decision"]),
    ]
    return nodes, [idx]


def _model(name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
           inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
           ) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _stages() -> list[onnx.ModelProto]:
    thr = helper.make_tensor_value_info(THRESHOLD, F, [])
    decision = helper.make_tensor_value_info("decision", B, ["N"])
    logits = [helper.make_tensor_value_info(f"logits{k}", F, ["N", 4]) for k in range(3)]

    gate0, init0 = _gate(0)
    stage0 = _model("stage0", [
        helper.make_node("Identity", ["x"], ["logits0"]),
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Constant", [], ["c"],
                         value=helper.make_tensor("c_value", F, [3], [1.0, 2.0, 3.0])),
        *gate0,
    ], init0, [_vi(X), thr], [logits[0], _vi(T), _vi(C), decision])

    gate1, init1 = _gate(1)
    hundred = helper.make_tensor("hundred", F, [], [100.0])
    stage1 = _model("stage1", [
        helper.make_node("Transpose", ["t"], ["tt"], perm=[1, 0]),
        helper.make_node("ReduceSum", ["c"], ["c_sum"], keepdims=0),
        helper.make_node("Add", ["tt", "c_sum"], ["logits1"]),
        helper.make_node("Add", ["tt", "hundred"], ["y"]),
        *gate1,
    ], [hundred, *init1], [_vi(T), _vi(C), _vi(X), thr], [logits[1], _vi(Y), decision])

    stage2 = _model("stage2", [helper.make_node("Add", ["y", "x"], ["logits2"])], [],
                    [_vi(Y), _vi(X)], [logits[2]])
    return [stage0, stage1, stage2]


def write(out: Path, thresholds: tuple[float, float] = (0.5, 0.5)) -> Path:
    """Writes the program to ``out`` (replacing it) and returns ``out``."""
    reads = [(X,), (T, C, X), (Y, X)]
    produces = [(T, C), (Y,), ()]
    carry = [("t", "c", "x"), ("y", "x"), ()]

    def fill(tmp: Path) -> None:
        stages = []
        for k, model in enumerate(_stages()):
            file = f"stage{k}.onnx"
            onnx.save(model, tmp / file)
            last = k == 2
            stages.append(StageSpec(
                index=k, file=file, sha256=sha256_file(tmp / file), exit_output=f"exit{k}",
                inputs=reads[k], produces=produces[k], carry_after=carry[k], logits=f"logits{k}",
                decision=None if last else "decision",
                threshold_input=None if last else THRESHOLD,
                gate=None if last else GateSpec("column", thresholds[k], ("column",)),
                nodes=len(model.graph.node),
            ))
        save_manifest(Manifest(
            eeopt_version=__version__, backend="onnxruntime",
            backend_version=onnxruntime.__version__, onnx_opset=OPSET, inputs=(X,),
            num_classes=4, stages=tuple(stages), source={"file": "make_test_program.py"},
        ), tmp)

    write_dir(out, fill, force=True)
    return out


def expected(x: np.ndarray, thresholds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's exit and logits, computed directly from ``x``."""
    exits = np.where(x[:, 0] >= thresholds[0], 0, np.where(x[:, 1] >= thresholds[1], 1, 2))
    logits = np.stack([x, x + 6, 2 * x + 100])[exits, np.arange(len(x))]
    return logits.astype(np.float32), exits.astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="program directory to write (replaced)")
    p.add_argument("--example", type=Path, help="also write a random input x [16, 4] here")
    args = p.parse_args()
    write(args.out)
    if args.example:
        x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
        np.save(args.example, x)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
