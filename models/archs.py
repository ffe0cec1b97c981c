"""Trainable architectures: one builder per name, each returning a network that maps a normalised
(N,3,H,W) batch to (N,1,H,W) person logits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, deeplabv3_resnet50

from .segnet import SegNet
from .unet import UNet


class _OutOnly(nn.Module):
    """torchvision's segmentation models return {"out": ...}; keep only the logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def deeplabv3_mobilenetv3() -> nn.Module:
    """DeepLabV3 on MobileNetV3-Large (torchvision), from scratch."""
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
    # torchvision gives MobileNetV3's batch norms momentum 0.01, tuned for fine-tuning long ImageNet runs:
    # from scratch, their running statistics lag hundreds of steps behind and the model in eval mode
    # predicted one constant class after 3 epochs. PyTorch's default 0.1 follows training.
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return _OutOnly(net)


def deeplabv3_r50() -> nn.Module:
    """DeepLabV3 on ResNet-50 (torchvision), from scratch."""
    return _OutOnly(deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False))


def unet() -> nn.Module:
    """U-Net, width 32 (7.8M parameters; the classic width 64 has 31M and runs ~4x slower)."""
    return UNet(width=32)


def segnet() -> nn.Module:
    """SegNet-style decoder with unpooling on a ResNet-18 encoder."""
    return SegNet("resnet18")


ARCHS: dict[str, Callable[[], nn.Module]] = {
    "deeplabv3-mobilenetv3": deeplabv3_mobilenetv3,
    "deeplabv3-resnet50": deeplabv3_r50,
    "unet": unet,
    "segnet": segnet,
}
# Where each architecture's ImageNet-style backbone sits, for --init with a local weights file.
BACKBONES = {
    "deeplabv3-mobilenetv3": "net.backbone.",
    "deeplabv3-resnet50": "net.backbone.",
    "unet": "",
    "segnet": "",
}


def build(arch: str) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch]()


def load_backbone(net: nn.Module, arch: str, path: Path) -> tuple[int, int]:
    """Copy the tensors of a local state dict (e.g. torchvision ImageNet weights) whose names and shapes
    match into `net`'s backbone; returns (copied, total in the file). Nothing is downloaded."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    prefix = BACKBONES[arch]
    own = net.state_dict()
    matched = {}
    for key, value in state.items():
        for candidate in (prefix + key, key, _segnet_key(key)):
            if candidate in own and own[candidate].shape == value.shape:
                matched[candidate] = value
                break
    if not matched:
        raise ValueError(f"{path}: no tensor matches {arch}'s backbone (names or shapes differ)")
    net.load_state_dict(matched, strict=False)
    return len(matched), len(state)


def _segnet_key(key: str) -> str:
    """torchvision ResNet names -> SegNet's (conv1/bn1 live in `stem`, layerN in `layers`)."""
    for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
        if key.startswith(old):
            return new + key[len(old) :]
    if key.startswith("layer") and key[5].isdigit():
        return f"layers.{int(key[5]) - 1}{key[6:]}"
    return key
