"""SegNet-style encoder-decoder on a ResNet encoder: the decoder mirrors the encoder and unpools the
stem's max-pool to where each maximum came from, as SegNet does (Badrinarayanan et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def unpool(values: torch.Tensor, pooled: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """SegNet's max-unpooling for a 2x2, stride-2 pool: each value goes back to the position its
    window's maximum came from, zeros elsewhere. Found by comparing the map before pooling with its
    pooled maxima rather than through pooling indices, which do not survive TFLite conversion."""
    up = F.interpolate(values, scale_factor=2.0, mode="nearest")
    peaks = F.interpolate(pooled, scale_factor=2.0, mode="nearest")
    h, w = up.shape[-2:]
    at_max = (before[..., :h, :w] == peaks).to(values.dtype)
    # Odd sizes: the pool skipped the last row/column, so nothing goes back there.
    return F.pad(up * at_max, (0, before.shape[-1] - w, 0, before.shape[-2] - h))


class SegNet(nn.Module):
    """ResNet-18 encoder (random init or a local weights file), mirrored decoder; logits at the input size."""

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        encoder = resnet18(weights=None)
        self.stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu)
        self.pool = nn.MaxPool2d(2, stride=2)  # SegNet's 2x2 pool (ResNet's own is 3x3 with overlap)
        self.layers = nn.ModuleList([encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4])
        # layer4 (512, /32) -> layer3 size -> layer2 -> layer1 (64, /4); unpool -> /2; stem conv -> /1
        self.decoder = nn.ModuleList([_up_block(512, 256), _up_block(256, 128), _up_block(128, 64)])
        self.head = nn.Sequential(
            nn.Conv2d(64, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(32, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        stem = self.stem(x)
        pooled = self.pool(stem)
        y = pooled
        for layer in self.layers:
            y = layer(y)
        for block in self.decoder:
            y = block(y)
        if y.shape[-2:] != pooled.shape[-2:]:
            y = F.interpolate(y, size=pooled.shape[-2:], mode="bilinear", align_corners=False)
        y = unpool(y, pooled, stem)
        y = self.head(y)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False) if y.shape[-2:] != size else y


def segnet() -> nn.Module:
    """SegNet-style decoder with unpooling on a ResNet-18 encoder."""
    return SegNet()
