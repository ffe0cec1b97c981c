"""Person segmentation: networks, pinned weights, the model registry, training and export.

Names are imported on first use, so that `import models.X` for a light module (weights, the
architecture list) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .weights import WeightsMissingError, fetch_weights
    from .zoo import ModelInfo, ModelRegistry, default_device, load_model, model_info

_EXPORTS = {
    "WeightsMissingError": "weights",
    "fetch_weights": "weights",
    "ModelInfo": "zoo",
    "ModelRegistry": "zoo",
    "default_device": "zoo",
    "load_model": "zoo",
    "model_info": "zoo",
}
__all__ = [
    "ModelInfo",
    "ModelRegistry",
    "WeightsMissingError",
    "default_device",
    "fetch_weights",
    "load_model",
    "model_info",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
