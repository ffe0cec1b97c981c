"""Model builders: one function per model, the weights described by data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

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
    path: Path | None = None  # the file a registered model comes from


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
# Trained checkpoints and ONNX files registered by name (`register_file`), beside the built-in models.
REGISTERED: dict[str, tuple[ModelInfo, Callable[[], nn.Module]]] = {}


def model_names() -> list[str]:
    return list(BUILDERS) + list(REGISTERED)


def resolve_name(name: str) -> str:
    """Canonical model name for a name or alias; raises KeyError for unknown names."""
    canonical = ALIASES.get(name, name)
    if canonical not in BUILDERS and canonical not in REGISTERED:
        choices = list(BUILDERS) + list(ALIASES) + list(REGISTERED)
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(choices)}")
    return canonical


def _entry(name: str) -> tuple[ModelInfo, Callable[[], nn.Module]]:
    canonical = resolve_name(name)
    return BUILDERS[canonical] if canonical in BUILDERS else REGISTERED[canonical]


def model_info(name: str) -> ModelInfo:
    return _entry(name)[0]


def register_file(path: Path | str, name: str | None = None) -> str:
    """Make a trained checkpoint (.pt) or an exported ONNX model (.onnx) loadable by name; returns the name.

    The name is `name`, else the one stored in the file, else the file's stem. Registering the same
    file twice is harmless; another file under a taken name is refused.
    """
    from .checkpoint import load
    from .onnx_model import OnnxSegmenter

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix == ".onnx":
        probe = OnnxSegmenter(path, threads=1)
        stored, size, kind = probe.metadata.get("name"), probe.input_size, "ONNX Runtime"
        builder: Callable[[], nn.Module] = partial(OnnxSegmenter, path)
    else:
        checkpoint = load(path)
        stored, size, kind = checkpoint.name, checkpoint.input_size, checkpoint.arch
        builder = partial(_checkpoint_model, path)
    name = name or stored or path.stem
    if name in BUILDERS or name in ALIASES:
        raise ValueError(f"{path}: the name {name!r} belongs to a built-in model; rename the file or pass a name")
    if name in REGISTERED and REGISTERED[name][0].path != path:
        raise ValueError(f"{path}: a model named {name!r} is already loaded from {REGISTERED[name][0].path}")
    REGISTERED[name] = (ModelInfo(name, tuple(size), f"{kind}, {size[0]}x{size[1]}, {path.name}", path), builder)
    return name


def resolve_model_arg(value: str) -> str:
    """A command-line --model value: a model name, or a checkpoint/ONNX file (registered on the way)."""
    if value not in ALIASES and value not in BUILDERS and value not in REGISTERED and Path(value).suffix in (".pt", ".pth", ".onnx"):
        return register_file(value)
    return resolve_name(value)


def _checkpoint_model(path: Path) -> nn.Module:
    from .checkpoint import load

    return load(path).model()


def load_model(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """A ready model in eval mode: (N,3,H,W) RGB in [0,1] at its input size -> (N,1,H,W) probabilities.

    fp16 is only offered on CUDA, where it is fast; CPU kernels for half are slow or missing.
    """
    device = torch.device(device) if device is not None else default_device()
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("fp16 inference needs a CUDA device")
    model = _entry(name)[1]()
    return model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
