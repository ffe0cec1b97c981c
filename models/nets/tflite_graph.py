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


@dataclass(frozen=True)
class GraphOp:
    """One op of a TFLite graph: its kind, tensor indices, options and constant inputs (fp32, TFLite layout)."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, int | bool]
    constants: dict[int, np.ndarray]


@dataclass(frozen=True)
class Graph:
    """A TFLite graph as data: ops in execution order, tensor names and shapes, inputs and outputs."""

    ops: list[GraphOp]
    names: list[str]
    shapes: list[tuple[int, ...]]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, name: str) -> int:
        return self.names.index(name)


# The option fields each op kind's builder reads, by the flatbuffer table that holds them.
_OPTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "CONV_2D": (tflite.Conv2DOptions, ("Padding", "StrideH", "StrideW", "FusedActivationFunction")),
    "DEPTHWISE_CONV_2D": (
        tflite.DepthwiseConv2DOptions,
        ("Padding", "StrideH", "StrideW", "DepthMultiplier", "FusedActivationFunction"),
    ),
    "ADD": (tflite.AddOptions, ("FusedActivationFunction",)),
    "MAX_POOL_2D": (
        tflite.Pool2DOptions,
        ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth", "FusedActivationFunction"),
    ),
    "RESIZE_BILINEAR": (tflite.ResizeBilinearOptions, ("AlignCorners", "HalfPixelCenters")),
    "CONCATENATION": (tflite.ConcatenationOptions, ("Axis", "FusedActivationFunction")),
    "DEPTH_TO_SPACE": (tflite.DepthToSpaceOptions, ("BlockSize",)),
}
_DILATED = ("DilationHFactor", "DilationWFactor")


def _options(kind: str, op: tflite.Operator) -> dict[str, int | bool]:
    if kind not in _OPTIONS:
        return {}
    table_type, fields = _OPTIONS[kind]
    table, options = op.BuiltinOptions(), table_type()
    options.Init(table.Bytes, table.Pos)
    values = {field: getattr(options, field)() for field in fields}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and any(getattr(options, f)() != 1 for f in _DILATED):
        raise ValueError("dilated convolutions are not supported")
    return values


_INDEX_VECTORS = {
    tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
    tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
    tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
}


def _index_vector(kind: int, table: object) -> np.ndarray:
    vector = _INDEX_VECTORS[kind]()
    vector.Init(table.Bytes, table.Pos)  # type: ignore[attr-defined]  # a flatbuffers Table
    return np.asarray(vector.ValuesAsNumpy(), dtype=np.int64)


def _densified(model: tflite.Model, graph: tflite.SubGraph, index: int) -> np.ndarray:
    """A sparse constant (dense leading axes, the last one compressed row by row, TFLite's CSR) as fp32."""
    tensor = graph.Tensors(index)
    sparsity = tensor.Sparsity()
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
    dims = [sparsity.DimMetadata(d) for d in range(sparsity.DimMetadataLength())]
    identity = list(sparsity.TraversalOrderAsNumpy()) == list(range(len(shape)))
    if not identity or sparsity.BlockMapLength() or any(d.Format() != 0 for d in dims[:-1]) or dims[-1].Format() != 1:
        raise ValueError(f"tensor {tensor.Name().decode()!r}: this sparse layout is not supported")
    last = dims[-1]
    segments = _index_vector(last.ArraySegmentsType(), last.ArraySegments())
    columns = _index_vector(last.ArrayIndicesType(), last.ArrayIndices())
    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    values = raw.view(_NUMPY_TYPES[tensor.Type()]).astype(np.float32)
    dense = np.zeros((int(np.prod(shape[:-1])), shape[-1]), np.float32)
    rows = np.repeat(np.arange(len(segments) - 1), np.diff(segments))
    dense[rows, columns] = values
    return dense.reshape(shape)


def read_graph(path: Path) -> Graph:
    """The whole graph of a .tflite file, constants densified and dequantized to fp32 and folded into the
    ops that use them."""
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    # Constants stored behind ops (fp16 behind DEQUANTIZE, sparse behind DENSIFY): read them as the fp32
    # tensors those ops make of them.
    folded: dict[int, int] = {}
    raw_ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        kind = _op_name(model, op)
        if kind in ("DEQUANTIZE", "DENSIFY"):
            folded[op.Outputs(0)] = op.Inputs(0)
        else:
            raw_ops.append((kind, op))

    def constant(index: int) -> np.ndarray | None:
        while index in folded:
            index = folded[index]
        tensor = graph.Tensors(index)
        if tensor.Sparsity() is not None:
            return _densified(model, graph, index)
        buffer = model.Buffers(tensor.Buffer()).DataAsNumpy()
        return _tensor_array(model, graph, index) if isinstance(buffer, np.ndarray) and buffer.size else None

    ops = []
    for kind, op in raw_ops:
        inputs = tuple(op.Inputs(j) for j in range(op.InputsLength()) if op.Inputs(j) >= 0)
        constants = {}
        for index in inputs:
            value = constant(index)
            if value is not None:
                constants[index] = value
        outputs = tuple(op.Outputs(j) for j in range(op.OutputsLength()))
        ops.append(GraphOp(kind, inputs, outputs, _options(kind, op), constants))
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    return Graph(
        ops=ops,
        names=[t.Name().decode() for t in tensors],
        shapes=[tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else () for t in tensors],
        inputs=tuple(graph.Inputs(i) for i in range(graph.InputsLength())),
        outputs=tuple(graph.Outputs(i) for i in range(graph.OutputsLength())),
    )
