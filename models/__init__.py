"""Person segmentation networks, weights and the tools around them."""

from .weights import WeightsMissingError, fetch_weights
from .zoo import (
    ModelInfo,
    default_device,
    load_model,
    model_info,
    model_names,
    register_file,
    resolve_model_arg,
    resolve_name,
)

__all__ = [
    "ModelInfo",
    "WeightsMissingError",
    "default_device",
    "fetch_weights",
    "load_model",
    "model_info",
    "model_names",
    "register_file",
    "resolve_model_arg",
    "resolve_name",
]
