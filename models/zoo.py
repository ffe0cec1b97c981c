"""Model builders: one function per model, the weights described by data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .selfie import SelfieSegmenter, load_tflite
from .weights import weights_path


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a model: its input size (H, W)."""

    name: str
    input_size: tuple[int, int]
    description: str


def mediapipe_general() -> SelfieSegmenter:
    """MediaPipe selfie segmentation, general model (256x256 input)."""
    return load_tflite(SelfieSegmenter((256, 256)), weights_path("selfie_segmentation.tflite"))


def mediapipe_landscape() -> SelfieSegmenter:
    """MediaPipe selfie segmentation, landscape model (144x256 input, faster)."""
    return load_tflite(SelfieSegmenter((144, 256)), weights_path("selfie_segmentation_landscape.tflite"))


BUILDERS: dict[str, tuple[ModelInfo, Callable[[], nn.Module]]] = {
    "mediapipe-general": (ModelInfo("mediapipe-general", (256, 256), "MediaPipe general, 256x256"), mediapipe_general),
    "mediapipe-landscape": (
        ModelInfo("mediapipe-landscape", (144, 256), "MediaPipe landscape, 144x256"),
        mediapipe_landscape,
    ),
}
ALIASES = {"general": "mediapipe-general", "landscape": "mediapipe-landscape"}


def model_names() -> list[str]:
    return list(BUILDERS)


def resolve_name(name: str) -> str:
    """Canonical model name for a name or alias; raises KeyError for unknown names."""
    canonical = ALIASES.get(name, name)
    if canonical not in BUILDERS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(list(BUILDERS) + list(ALIASES))}")
    return canonical


def model_info(name: str) -> ModelInfo:
    return BUILDERS[resolve_name(name)][0]


def load_model(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """A ready model in eval mode: (N,3,H,W) RGB in [0,1] at its input size -> (N,1,H,W) probabilities.

    fp16 is only offered on CUDA, where it is fast; CPU kernels for half are slow or missing.
    """
    device = torch.device(device) if device is not None else default_device()
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("fp16 inference needs a CUDA device")
    model = BUILDERS[resolve_name(name)][1]()
    return model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
