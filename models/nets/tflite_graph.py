"""Read the trainable tensors of a TFLite flatbuffer in graph order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tflite

_BUILTIN_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
}
# Ops whose weights (input 1) and bias (input 2) we port, in the order the graph runs them.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "Convolution2DTransposeBias")


@dataclass(frozen=True)
class WeightedOp:
    """One convolution-like op of the graph with its dequantized parameters."""

    kind: str
    name: str
    weight: np.ndarray  # TFLite layout: OHWI (conv, transpose) or 1HWC (depthwise)
    bias: np.ndarray


def _op_name(model: tflite.Model, op: tflite.Operator) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _BUILTIN_NAMES.get(builtin, str(builtin))
    return code.CustomCode().decode() if name == "CUSTOM" else name


def _tensor_array(model: tflite.Model, graph: tflite.SubGraph, index: int) -> np.ndarray:
    tensor = graph.Tensors(index)
    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if not isinstance(raw, np.ndarray) or raw.size == 0:
        raise ValueError(f"tensor {tensor.Name().decode()!r} has no constant data")
    dtype = _NUMPY_TYPES[tensor.Type()]
    return raw.view(dtype).reshape(tensor.ShapeAsNumpy()).astype(np.float32)


def read_weighted_ops(path: Path) -> list[WeightedOp]:
    """Return every convolution of the graph, in execution order, with fp32 weights."""
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    # Weights are stored as fp16 constants behind DEQUANTIZE ops: map each
    # dequantized tensor back to the constant that feeds it.
    dequantized: dict[int, int] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if _op_name(model, op) == "DEQUANTIZE":
            dequantized[op.Outputs(0)] = op.Inputs(0)

    def constant(index: int) -> np.ndarray:
        return _tensor_array(model, graph, dequantized.get(index, index))

    ops: list[WeightedOp] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        kind = _op_name(model, op)
        if kind not in WEIGHTED_OPS:
            continue
        # The geometry (stride, padding) is written into SelfieSegmenter; only activations fused into
        # a convolution would change what its weights mean.
        if kind != "Convolution2DTransposeBias":
            table = op.BuiltinOptions()
            options = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            options.Init(table.Bytes, table.Pos)
            if options.FusedActivationFunction() != tflite.ActivationFunctionType.NONE:
                raise ValueError(f"op {i}: fused activations are not supported")
        name = graph.Tensors(op.Outputs(0)).Name().decode()
        ops.append(WeightedOp(kind, name, constant(op.Inputs(1)), constant(op.Inputs(2))))
    return ops
