"""Tiny random ONNX classifiers for the cascade tests, built by hand (no torch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _w(name: str, shape: tuple[int, ...], rng: np.random.Generator,
       scale: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32), name)


def mlp(seed: int, *, exits: int = 1, features: int = 6, hidden: int = 8, classes: int = 4,
        input_name: str = "x", opset: int = 18, batch: str = "batch",
        dtype: int = TensorProto.FLOAT, depth: int = 0) -> onnx.ModelProto:
    """x [batch, features] -> ``depth`` extra (MatMul -> Relu) blocks of ``hidden`` width (a
    costly network) -> (MatMul -> Relu) per exit; after block k a MatMul head gives exit k's
    logits. Node and tensor names repeat across seeds on purpose (h0, head0, ...)."""
    rng = np.random.default_rng(seed)
    nodes, inits, outs = [], [], []
    prev, width = input_name, features
    for d in range(depth):
        nodes += [helper.make_node("MatMul", [prev, f"dw{d}"], [f"da{d}"], name=f"dmm{d}"),
                  helper.make_node("Relu", [f"da{d}"], [f"dh{d}"], name=f"drelu{d}")]
        inits.append(_w(f"dw{d}", (width, hidden), rng, 1.0 / np.sqrt(width)))
        prev, width = f"dh{d}", hidden
    for k in range(exits):
        nodes += [helper.make_node("MatMul", [prev, f"w{k}"], [f"a{k}"], name=f"mm{k}"),
                  helper.make_node("Relu", [f"a{k}"], [f"h{k}"], name=f"relu{k}"),
                  helper.make_node("MatMul", [f"h{k}", f"e{k}"], [f"exit{k}"], name=f"head{k}")]
        inits += [_w(f"w{k}", (width, hidden), rng), _w(f"e{k}", (hidden, classes), rng, 0.7)]
        outs.append(helper.make_tensor_value_info(f"exit{k}", TensorProto.FLOAT,
                                                  [batch, classes]))
        prev, width = f"h{k}", hidden
    g = helper.make_graph(nodes, f"mlp{seed}",
                          [helper.make_tensor_value_info(input_name, dtype, [batch, features])],
                          outs, initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def two_input(seed: int, names: tuple[str, str] = ("x", "z"), classes: int = 4,
              order: tuple[int, int] = (0, 1)) -> onnx.ModelProto:
    """logits = x @ wx + z @ wz, with the graph inputs declared in ``order``."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", [names[0], "wx"], ["px"], name="mx"),
             helper.make_node("MatMul", [names[1], "wz"], ["pz"], name="mz"),
             helper.make_node("Add", ["px", "pz"], ["logits"], name="add")]
    ins = [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, ["b", 3]),
           helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ["b", 5])]
    g = helper.make_graph(nodes, "two_input", [ins[i] for i in order],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["b", classes])],
                          initializer=[_w("wx", (3, classes), rng), _w("wz", (5, classes), rng)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
