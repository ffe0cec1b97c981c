"""DeepLabV3 builders (torchvision's networks, from scratch) returning bare person logits."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
from torchvision.models.segmentation import deeplabv3_resnet50 as torchvision_deeplabv3_resnet50


class _OutOnly(nn.Module):
    """torchvision's segmentation models return {"out": ...}; keep only the logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)["out"]
        return out


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


def deeplabv3_resnet50() -> nn.Module:
    """DeepLabV3 on ResNet-50 (torchvision), from scratch."""
    return _OutOnly(torchvision_deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False))
