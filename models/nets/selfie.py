"""MediaPipe selfie segmentation (general and landscape) as explicit PyTorch modules.

The topology mirrors the published TFLite graphs: a MobileNetV3-style encoder,
an LR-ASPP head and three gated skip-connection decoder stages, ending in a 2x2
stride-2 transposed convolution and a sigmoid.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .tflite_graph import read_weighted_ops


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding (the odd extra pixel goes bottom/right)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        symmetric = stride == 1
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if symmetric else 0, groups=groups)
        self._needs_pad = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._needs_pad:
            k, s = self.kernel_size[0], self.stride[0]
            pad_h = max((-(-x.shape[-2] // s) - 1) * s + k - x.shape[-2], 0)
            pad_w = max((-(-x.shape[-1] // s) - 1) * s + k - x.shape[-1], 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


class Pointwise(nn.Conv2d):
    """1x1 convolution computed as a matmul over channels-last pixels (3-5x faster than conv2d on CPU)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)


class Unpatchify2x2(nn.ConvTranspose2d):
    """2x2 stride-2 transposed convolution computed as one matmul per output row parity.

    The 2x2 windows do not overlap, so the outputs of even (odd) rows are a small matmul over the
    input pixels, which leaves them in row order: stacking the two interleaves the rows with
    contiguous copies a compiler vectorises (with the activation fused). oneDNN's transposed
    convolution took 12% of the model's CPU time for this tiny layer.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # the geometry is fixed
        n, _, h, w = x.shape
        cout = self.weight.shape[1]
        pixels = x.permute(0, 2, 3, 1)
        bias = cast(torch.Tensor, self.bias).repeat_interleave(2)  # built with a bias
        # weight (in, out, a, b) -> for row parity a: (out*b, in); output (n, h, w, out, b)
        rows = [F.linear(pixels, self.weight[:, :, a].flatten(1).t(), bias) for a in range(2)]
        y = torch.stack(rows, dim=2).view(n, h, 2, w, cout, 2)  # (n, h, a, w, out, b)
        return y.permute(0, 4, 1, 2, 3, 5).reshape(n, cout, 2 * h, 2 * w)


def _global_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


class SqueezeExcite(nn.Module):
    """Channel gate: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = Pointwise(channels, reduced)
        self.expand = Pointwise(reduced, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.expand(F.relu(self.reduce(_global_mean(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise, optional squeeze-excite, 1x1 project."""

    def __init__(
        self, cin: int, expanded: int, cout: int, kernel: int, stride: int, hard_swish: bool, se: int | None
    ) -> None:
        super().__init__()
        self.expand = Pointwise(cin, expanded)
        self.depthwise = SamePadConv2d(expanded, expanded, kernel, stride, groups=expanded)
        self.se = SqueezeExcite(expanded, se) if se else None
        self.project = Pointwise(expanded, cout)
        self.act = nn.Hardswish() if hard_swish else nn.ReLU()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.depthwise(self.act(self.expand(x))))
        if self.se is not None:
            y = y * self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class DecoderStage(nn.Module):
    """Upsample x2, project to the skip's width, gate the skip, refine with a residual depthwise conv."""

    def __init__(self, cin: int, channels: int) -> None:
        super().__init__()
        self.project = Pointwise(cin, channels)
        self.gate = SqueezeExcite(channels, channels)
        self.conv = Pointwise(channels, channels)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        up = self.project(x)
        fused = skip * self.gate(skip + up) + up
        y = F.relu(self.conv(fused))
        return y + F.relu(self.depthwise(y))


class SelfieSegmenter(nn.Module):
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) person probability.

    Module registration order equals the TFLite graph's op order, which is how
    `load_tflite` assigns the weights.
    """

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.input_size = input_size  # (height, width) the weights were trained at
        self.stem = SamePadConv2d(3, 16, 3, stride=2)
        self.encoder = nn.ModuleList(
            [
                InvertedResidual(16, 16, 16, 3, 2, hard_swish=False, se=8),  # 1/4
                InvertedResidual(16, 72, 24, 3, 2, hard_swish=False, se=None),  # 1/8
                InvertedResidual(24, 88, 24, 3, 1, hard_swish=False, se=None),
                InvertedResidual(24, 96, 32, 5, 2, hard_swish=True, se=24),  # 1/16
                InvertedResidual(32, 128, 32, 5, 1, hard_swish=True, se=32),
                InvertedResidual(32, 128, 32, 5, 1, hard_swish=True, se=32),
                InvertedResidual(32, 96, 32, 5, 1, hard_swish=True, se=24),
                InvertedResidual(32, 96, 32, 5, 1, hard_swish=True, se=24),
            ]
        )
        self.head_conv = Pointwise(32, 128)
        self.head_gate = Pointwise(32, 128)
        self.decoder = nn.ModuleList([DecoderStage(128, 24), DecoderStage(24, 16), DecoderStage(16, 16)])
        self.segment = Unpatchify2x2(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.stem(x))
        skips = [x]  # 1/2
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i in (0, 2):  # ends of the 1/4 and 1/8 stages
                skips.append(x)
        x = F.relu(self.head_conv(x)) * torch.sigmoid(self.head_gate(_global_mean(x)))
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        return torch.sigmoid(self.segment(x))

    def weighted_layers(self) -> list[nn.Conv2d | nn.ConvTranspose2d]:
        """The convolutions in graph order."""
        return [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def _to_torch_layout(kind: str, weight: torch.Tensor) -> torch.Tensor:
    if kind == "CONV_2D":
        return weight.permute(0, 3, 1, 2)  # OHWI -> OIHW
    # depthwise 1HWC -> C1HW; transpose OHWI -> IOHW
    return weight.permute(3, 0, 1, 2)


@torch.no_grad()
def load_tflite(model: SelfieSegmenter, path: Path) -> SelfieSegmenter:
    """Copy the weights of a selfie-segmentation .tflite file into `model`."""
    ops = read_weighted_ops(path)
    layers = model.weighted_layers()
    if len(ops) != len(layers):
        raise ValueError(f"{path}: {len(ops)} weighted ops, the module has {len(layers)}")
    for op, layer in zip(ops, layers, strict=True):
        weight = _to_torch_layout(op.kind, torch.from_numpy(op.weight))
        bias = cast(torch.Tensor, layer.bias)  # every layer is built with a bias
        if weight.shape != layer.weight.shape or op.bias.shape != tuple(bias.shape):
            raise ValueError(f"{path}: {op.name} has shape {tuple(weight.shape)}, expected {tuple(layer.weight.shape)}")
        layer.weight.copy_(weight)
        bias.copy_(torch.from_numpy(op.bias))
    return model
