"""`--init`: copying a local backbone state dict (e.g. torchvision's ImageNet weights) into a fresh network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..nets import ARCHS


def load_backbone(net: nn.Module, arch: str, path: Path) -> tuple[int, int]:
    """Copy the tensors of a local state dict whose names and shapes match into `net`'s backbone;
    returns (copied, total in the file). Nothing is downloaded."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    prefix = ARCHS[arch].backbone_prefix
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
