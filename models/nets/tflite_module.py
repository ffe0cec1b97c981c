"""A TFLite graph as a PyTorch module: one module per op, run in the graph's order on NCHW tensors.

For graphs too branchy to write out by hand (MediaPipe Pose): the topology and the weights both come from
the pinned .tflite file, read as data (`tflite_graph.read_graph`). Only the ops the wanted outputs depend
on are kept. Four-dimensional tensors are NCHW here (TFLite's are NHWC); ops that care about the axis
order (reshape, concatenation, depth-to-space) convert where they must.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .tflite_graph import Graph, GraphOp, read_graph

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1, -2: 3, -3: 2, -4: 0}


def _activation(code: int | bool) -> Callable[[torch.Tensor], torch.Tensor]:
    # tflite.ActivationFunctionType: NONE 0, RELU 1, RELU6 3
    if code == 0:
        return lambda x: x
    if code == 1:
        return F.relu
    if code == 3:
        return F.relu6
    raise ValueError(f"fused activation {code} is not supported")


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding for one axis: (before, after); the odd pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Op(nn.Module):
    """One graph op: reads its input tensors by index, writes its outputs."""

    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__()
        self.inputs = [i for i in spec.inputs if i not in spec.constants]
        self.outputs = list(spec.outputs)
        self.in_shape = graph.shapes[spec.inputs[0]] if spec.inputs else ()

    def run(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, values: dict[int, torch.Tensor]) -> None:
        values[self.outputs[0]] = self.run(*(values[i] for i in self.inputs))


class Conv(Op):
    """CONV_2D and DEPTHWISE_CONV_2D, SAME or VALID padding, fused activation."""

    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        weight = torch.from_numpy(spec.constants[spec.inputs[1]])
        bias = torch.from_numpy(spec.constants[spec.inputs[2]])
        o = spec.options
        if spec.kind == "DEPTHWISE_CONV_2D":
            if o["DepthMultiplier"] != 1:
                raise ValueError("depth multipliers other than 1 are not supported")
            weight = weight.permute(3, 0, 1, 2)  # 1HWC -> C1HW
            groups = weight.shape[0]
        else:
            weight = weight.permute(0, 3, 1, 2)  # OHWI -> OIHW
            groups = 1
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride = (int(o["StrideH"]), int(o["StrideW"]))
        self.groups = groups
        kh, kw = weight.shape[-2:]
        _, h, w, _ = self.in_shape
        if o["Padding"] == 1:  # VALID
            self.pad = (0, 0, 0, 0)
        else:
            top, bottom = _same_pad(h, kh, self.stride[0])
            left, right = _same_pad(w, kw, self.stride[1])
            self.pad = (left, right, top, bottom)
        # Symmetric padding goes into the convolution itself (one kernel, no copy).
        self.symmetric = self.pad[0] == self.pad[1] and self.pad[2] == self.pad[3]
        # A 1x1 convolution is a matmul over channels-last pixels: 3-5x faster than conv2d on CPUs.
        self.pointwise = groups == 1 and (kh, kw) == (1, 1) and self.stride == (1, 1)
        self.act = _activation(o["FusedActivationFunction"])

    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.pointwise:
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return self.act(y.permute(0, 3, 1, 2))
        padding = (self.pad[2], self.pad[0]) if self.symmetric else (0, 0)
        if not self.symmetric:
            x = F.pad(x, self.pad)
        return self.act(F.conv2d(x, self.weight, self.bias, self.stride, padding, 1, self.groups))


class Add(Op):
    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        self.constant = None
        for index in spec.inputs:
            if index in spec.constants:
                self.constant = nn.Parameter(_to_nchw(torch.from_numpy(spec.constants[index])), requires_grad=False)
        self.act = _activation(spec.options["FusedActivationFunction"])

    def run(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        other = b if b is not None else self.constant
        assert other is not None
        return self.act(a + other)


class Pad(Op):
    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        p = spec.constants[spec.inputs[1]].astype(int)  # NHWC rows of (before, after)
        if p[0].any():
            raise ValueError("padding the batch axis is not supported")
        self.pad = (int(p[2, 0]), int(p[2, 1]), int(p[1, 0]), int(p[1, 1]), int(p[3, 0]), int(p[3, 1]))

    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.pad(x, self.pad)


class ResizeBilinear(Op):
    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        if spec.options["AlignCorners"] or not spec.options["HalfPixelCenters"]:
            raise ValueError("only half-pixel-centre bilinear resizing is supported")
        size = spec.constants[spec.inputs[1]].astype(int)
        self.size = (int(size[0]), int(size[1]))

    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


class MaxPool(Op):
    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        o = spec.options
        if o["Padding"] != 1 or o["FusedActivationFunction"] != 0:
            raise ValueError("only VALID max pooling without activation is supported")
        self.kernel = (int(o["FilterHeight"]), int(o["FilterWidth"]))
        self.stride = (int(o["StrideH"]), int(o["StrideW"]))

    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.max_pool2d(x, self.kernel, self.stride)


class Logistic(Op):
    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.sigmoid(x)


class Reshape(Op):
    """RESHAPE in TFLite's axis order: 4-D inputs go back to NHWC first, 4-D outputs come out NCHW."""

    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        self.shape = tuple(graph.shapes[spec.outputs[0]][1:])

    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape(x.shape[0], *self.shape)
        return y.permute(0, 3, 1, 2) if y.dim() == 4 else y


class Concatenation(Op):
    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        axis = int(spec.options["Axis"])
        self.axis = _NHWC_TO_NCHW_AXIS[axis] if len(self.in_shape) == 4 else axis
        self.act = _activation(spec.options["FusedActivationFunction"])

    def run(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat(xs, dim=self.axis))


class DepthToSpace(Op):
    """TFLite's DEPTH_TO_SPACE: channel (i * block + j) * C + c goes to pixel (i, j) of channel c."""

    def __init__(self, spec: GraphOp, graph: Graph) -> None:
        super().__init__(spec, graph)
        self.block = int(spec.options["BlockSize"])

    def run(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        b = self.block
        y = x.view(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (b * b), h * b, w * b)


_OPS: dict[str, type[Op]] = {
    "CONV_2D": Conv,
    "DEPTHWISE_CONV_2D": Conv,
    "ADD": Add,
    "PAD": Pad,
    "RESIZE_BILINEAR": ResizeBilinear,
    "MAX_POOL_2D": MaxPool,
    "LOGISTIC": Logistic,
    "RESHAPE": Reshape,
    "CONCATENATION": Concatenation,
    "DEPTH_TO_SPACE": DepthToSpace,
}


def _to_nchw(array: torch.Tensor) -> torch.Tensor:
    return array.permute(0, 3, 1, 2) if array.dim() == 4 else array


def _needed(graph: Graph, outputs: Sequence[int]) -> list[GraphOp]:
    """The ops the outputs depend on, in graph order."""
    producer = {out: op for op in graph.ops for out in op.outputs}
    wanted, todo = set(), list(outputs)
    while todo:
        tensor = todo.pop()
        op = producer.get(tensor)
        if op is None or id(op) in wanted:
            continue
        wanted.add(id(op))
        todo.extend(i for i in op.inputs if i not in op.constants)
    return [op for op in graph.ops if id(op) in wanted]


class TFLiteGraph(nn.Module):
    """(N,C,H,W) input -> the named outputs of a TFLite graph (4-D ones NCHW), computed by PyTorch ops."""

    def __init__(self, graph: Graph, outputs: Sequence[str]) -> None:
        super().__init__()
        self.input = graph.inputs[0]
        self.output_indices = [graph.tensor(name) for name in outputs]
        ops = _needed(graph, self.output_indices)
        unknown = sorted({op.kind for op in ops} - set(_OPS))
        if unknown:
            raise ValueError(f"TFLite ops not supported: {', '.join(unknown)}")
        self.ops = nn.ModuleList([_OPS[op.kind](op, graph) for op in ops])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values = {self.input: x}
        for op in self.ops:
            op(values)
        return [values[i] for i in self.output_indices]


def load_graph(path: Path, outputs: Sequence[str]) -> TFLiteGraph:
    """The part of a .tflite file's graph that computes `outputs`, as a module."""
    return TFLiteGraph(read_graph(path), outputs)
