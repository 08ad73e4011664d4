"""Tiny hand-built ONNX graphs for structural pass tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _w(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def two_exit_mlp(opset: int = 18) -> onnx.ModelProto:
    """x -> MatMul w0 -> Relu = h ; exit0 = h @ e0 ; h2 = Relu(h @ w1) + h ; exit1 = h2 @ e1.
    Also a dead branch (never reaches an output) and an unnamed node."""
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="mm0"),
        helper.make_node("Relu", ["a"], ["h"], name="relu0"),
        helper.make_node("MatMul", ["h", "e0"], ["exit0"], name="head0"),
        helper.make_node("MatMul", ["h", "w1"], ["b"], name="mm1"),
        helper.make_node("Relu", ["b"], ["c"]),  # unnamed on purpose
        helper.make_node("Add", ["c", "h"], ["h2"], name="skip"),
        helper.make_node("MatMul", ["h2", "e1"], ["exit1"], name="head1"),
        helper.make_node("Neg", ["h2"], ["dead"], name="dead"),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("exit0", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("exit1", TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[_w("w0", (4, 6), 0), _w("e0", (6, 3), 1), _w("w1", (6, 6), 2),
                     _w("e1", (6, 3), 3), _w("unused", (2,), 4)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def reshape_across_exit(opset: int = 18) -> onnx.ModelProto:
    """A Shape -> Gather -> Concat -> Reshape chain in stage 0 whose value a stage-1 Reshape
    reuses: carrying it would go stale after compaction, so stage 1 must recompute it."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("Shape", ["h"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0, name="gather"),
        helper.make_node("Concat", ["n", "minus1"], ["flat_shape"], axis=0, name="concat"),
        helper.make_node("Reshape", ["h", "flat_shape"], ["flat"], name="reshape0"),
        helper.make_node("MatMul", ["flat", "e0"], ["exit0"], name="head0"),
        helper.make_node("Neg", ["h"], ["h2"], name="neg"),
        helper.make_node("Reshape", ["h2", "flat_shape"], ["flat2"], name="reshape1"),
        helper.make_node("MatMul", ["flat2", "e1"], ["exit1"], name="head1"),
    ]
    g = helper.make_graph(
        nodes,
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3])],
        [
            helper.make_tensor_value_info("exit0", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("exit1", TensorProto.FLOAT, ["batch", 4]),
        ],
        initializer=[
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"),
            _w("e0", (6, 4), 5),
            _w("e1", (6, 4), 6),
        ],
    )
    del i64
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def three_exit_chain(opset: int = 18) -> onnx.ModelProto:
    """x -> Relu a -> exit0 ; b = Neg a -> exit1 ; c = Relu b -> exit2 (final)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu_a"),
        helper.make_node("MatMul", ["a", "e0"], ["exit0"], name="head0"),
        helper.make_node("Neg", ["a"], ["b"], name="neg_b"),
        helper.make_node("MatMul", ["b", "e1"], ["exit1"], name="head1"),
        helper.make_node("Relu", ["b"], ["c"], name="relu_c"),
        helper.make_node("MatMul", ["c", "e2"], ["exit2"], name="head2"),
    ]
    outs = [helper.make_tensor_value_info(f"exit{k}", TensorProto.FLOAT, ["batch", 2])
            for k in range(3)]
    g = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        outs, initializer=[_w(f"e{k}", (3, 2), 10 + k) for k in range(3)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
