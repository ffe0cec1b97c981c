"""Segmentation: the models a pipeline has loaded (compiled and in the precision its device wants), and
person probabilities for a batch of frames at each model's input size."""

from __future__ import annotations

import threading

import torch
from torch import nn

from models.wrappers import CompiledOnCPU
from models.zoo import ModelRegistry, check_precision, default_device

from .frames import resize_frame


class ModelCache:
    """Loads each model once, on first use, for one device; compiles it on CPUs when asked to."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: torch.device | str | None = None,
        half: bool | None = None,
        compile: bool = False,
    ) -> None:
        self.registry = registry
        self.device = torch.device(device) if device is not None else default_device()
        self.half = self.device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        check_precision(self.device, self.dtype)
        # torch.compile of the models, frame by frame, on CPU devices only (see models/wrappers/compiled.py).
        self.compile = compile and self.device.type == "cpu"
        self._models: dict[str, nn.Module] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> nn.Module:
        """The loaded model for `name` (loaded on first use)."""
        key = self.registry.resolve(name)
        with self._lock:
            if key not in self._models:
                model = self.registry.load(key, self.device, self.dtype)
                if self.compile and any(True for _ in model.parameters()):  # not ONNX Runtime models
                    model = CompiledOnCPU(model, self.registry.info(key).input_size)
                self._models[key] = model
            return self._models[key]

    def warm(self, name: str) -> nn.Module:
        """The model for `name`, loaded and, with `compile`, compiled before this returns (start-up, benchmarks)."""
        model = self.get(name)
        if isinstance(model, CompiledOnCPU):
            model.wait()
        return model


def flush_denormals() -> None:
    """Denormal floats (saturated sigmoids, far-from-person activations) take a slow path on x86 that made
    the model 1.6x slower; the flag is per thread, so every thread that runs a model sets it."""
    torch.set_flush_denormal(True)


def segment(models: ModelCache, pixels: list[torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    """Low-resolution person probabilities (1,1,h,w) of uint8 frames (1,3,H,W), one batch per model.

    The frames are stretched to the model's input size, as the models were trained.
    """
    by_model: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_model.setdefault(models.registry.resolve(name), []).append(i)
    masks: list[torch.Tensor] = [torch.empty(0)] * len(pixels)
    for name, indices in by_model.items():
        size = models.registry.info(name).input_size
        batch = torch.cat([resize_frame(pixels[i], size) for i in indices]).to(models.dtype).div_(255.0)
        # Plain NCHW: the channels-last weights make the first convolution switch layout (fused into
        # the first kernel of a compiled model).
        probabilities = models.get(name)(batch.contiguous())
        for j, i in enumerate(indices):
            masks[i] = probabilities[j : j + 1]
    return masks
