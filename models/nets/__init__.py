"""The trainable architectures, described by data: naming or listing them imports no torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Architecture:
    """One `--arch`: the function that builds it, and where an ImageNet-style backbone's tensors go."""

    name: str
    builder: str  # "module:function" inside models.nets
    backbone_prefix: str  # prefix of the backbone's tensors in the network's state dict (for --init)
    description: str

    def build(self) -> nn.Module:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)()


ARCHS: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "deeplabv3-mobilenetv3",
            "deeplab:deeplabv3_mobilenetv3",
            "net.backbone.",
            "DeepLabV3 on MobileNetV3-Large (torchvision)",
        ),
        Architecture(
            "deeplabv3-resnet50", "deeplab:deeplabv3_resnet50", "net.backbone.", "DeepLabV3 on ResNet-50 (torchvision)"
        ),
        Architecture("unet", "unet:unet", "", "U-Net, width 32"),
        Architecture("segnet", "segnet:segnet", "", "SegNet decoder with max-unpooling on a ResNet-18 encoder"),
    )
}


def build(arch: str) -> nn.Module:
    """A fresh network for `arch`: normalised (N,3,H,W) in, (N,1,H,W) person logits out."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch].build()
