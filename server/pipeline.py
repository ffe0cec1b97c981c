"""The per-frame pipeline: frame in -> tensor -> mask -> smoothed -> refined -> composite -> frame out.

One `Pipeline` per process serves many streams; each stream keeps its own
`StreamState`. Frames of several streams go through the model in one batch.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models import default_device, load_model, model_info, resolve_name
from models.compiled import CompiledOnCPU

from .backgrounds import BackgroundStore
from .compositing import blurred_background, composite, cover_fit, resize_frame
from .config import SessionConfig
from .refine import upsample_mask
from .smoothing import smooth_mask

STAGES = ("upload", "model", "smoothing", "refine", "composite", "download")


@dataclass
class StreamState:
    """What one stream carries from frame to frame."""

    previous_mask: torch.Tensor | None = None
    mask_key: tuple | None = None  # (frame size, model): smoothing restarts when it changes
    background_key: tuple | None = None
    background: torch.Tensor | None = None  # cover-fitted image, cached on the device


@dataclass
class StageTimes:
    """Milliseconds spent per stage over one `process` call (device-synchronised)."""

    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


class Pipeline:
    """Segments and composites batches of RGB uint8 frames on one device."""

    def __init__(
        self,
        device: torch.device | str | None = None,
        half: bool | None = None,
        backgrounds: BackgroundStore | None = None,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.half = self.device.type == "cuda" if half is None else half
        if self.half and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device")
        self.model_dtype = torch.float16 if self.half else torch.float32
        # torch.compile of the models, frame by frame, on CPU devices only (see models/compiled.py).
        self.compile = compile and self.device.type == "cpu"
        self.backgrounds = backgrounds or BackgroundStore()
        self._models: dict[str, nn.Module] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> nn.Module:
        """The loaded model for `name` (loaded on first use)."""
        key = resolve_name(name)
        with self._lock:
            if key not in self._models:
                model = load_model(key, self.device, self.model_dtype)
                if self.compile and any(True for _ in model.parameters()):  # not ONNX Runtime models
                    model = CompiledOnCPU(model, model_info(key).input_size)
                self._models[key] = model
            return self._models[key]

    def warm(self, name: str) -> nn.Module:
        """The model for `name`, loaded and, with `compile`, compiled before this returns (start-up, benchmarks)."""
        model = self.model(name)
        if isinstance(model, CompiledOnCPU):
            model.wait()
        return model

    def process_one(self, frame: np.ndarray, state: StreamState, config: SessionConfig) -> np.ndarray:
        return self.process([frame], [state], [config])[0]

    @torch.inference_mode()
    def process(
        self,
        frames: Sequence[np.ndarray],
        states: Sequence[StreamState],
        configs: Sequence[SessionConfig],
        times: StageTimes | None = None,
    ) -> list[np.ndarray]:
        """Process one frame of each stream; frames are (H,W,3) RGB uint8, any size, and come back the same."""
        clock = _Clock(self.device, times)
        work = [i for i, c in enumerate(configs) if c.mode != "none"]
        pixels, images, masks = self._masks(frames, states, configs, work, clock)
        results = {i: self._composite(pixels[i], images[i], masks[i], states[i], configs[i]) for i in work}
        clock.lap("composite")
        # mode "none" is a passthrough: no model, no copies.
        outputs = [_download(results[i]) if i in results else frames[i] for i in range(len(frames))]
        clock.lap("download")
        return outputs

    @torch.inference_mode()
    def masks(
        self, frames: Sequence[np.ndarray], states: Sequence[StreamState], configs: Sequence[SessionConfig]
    ) -> list[torch.Tensor]:
        """Full-resolution person probabilities (H,W) in [0,1], smoothed and refined as `configs` say."""
        _, _, masks = self._masks(frames, states, configs, list(range(len(frames))), _Clock(self.device, None))
        return [masks[i][0, 0] for i in range(len(frames))]

    def _masks(
        self,
        frames: Sequence[np.ndarray],
        states: Sequence[StreamState],
        configs: Sequence[SessionConfig],
        work: list[int],
        clock: _Clock,
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """uint8 frames, float frames and full-size masks of the frames at `work`."""
        if not (len(frames) == len(states) == len(configs)):
            raise ValueError("frames, states and configs must have the same length")
        # Denormal floats (saturated sigmoids, far-from-person activations) take a slow path on x86
        # that made the model 1.6x slower; the flag is per thread, and callers run us on worker threads.
        torch.set_flush_denormal(True)
        pixels = {i: self._upload(frames[i]) for i in work}
        # Full-size float frames in plain NCHW: mixing layouts in one op is several times slower on CPU.
        images = {i: p.contiguous().float().div_(255.0) for i, p in pixels.items()}
        clock.lap("upload")

        masks = self._segment(pixels, {i: configs[i] for i in work})
        clock.lap("model")

        for i, mask in masks.items():
            state, config = states[i], configs[i]
            key = (images[i].shape[-2:], resolve_name(config.model))
            previous = state.previous_mask if state.mask_key == key else None
            masks[i] = smooth_mask(previous, mask.float(), config.smoothing)
            state.previous_mask, state.mask_key = masks[i], key
        clock.lap("smoothing")

        full = {i: upsample_mask(masks[i], pixels[i], images[i], configs[i].refine) for i in work}
        clock.lap("refine")
        return pixels, images, full

    def _upload(self, frame: np.ndarray) -> torch.Tensor:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H,W,3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
        with warnings.catch_warnings():
            # Read-only arrays (PIL, PyAV) are fine: the tensor is only read, then copied by .float().
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(frame)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        # HWC memory viewed as NCHW is channels-last: no transpose copy.
        return tensor.permute(2, 0, 1).unsqueeze(0)

    def _segment(self, images: dict[int, torch.Tensor], configs: dict[int, SessionConfig]) -> dict[int, torch.Tensor]:
        """Low-resolution person probabilities, one batch per model; the uint8 frames are stretched to
        the model's input size (as the models were trained)."""
        by_model: dict[str, list[int]] = {}
        for i, config in configs.items():
            by_model.setdefault(resolve_name(config.model), []).append(i)
        masks: dict[int, torch.Tensor] = {}
        for name, indices in by_model.items():
            size = model_info(name).input_size
            batch = torch.cat([resize_frame(images[i], size) for i in indices]).to(self.model_dtype).div_(255.0)
            # Plain NCHW: the channels-last weights make the first convolution switch layout (fused into
            # the first kernel of a compiled model).
            probabilities = self.model(name)(batch.contiguous())
            for j, i in enumerate(indices):
                masks[i] = probabilities[j : j + 1]
        return masks

    def _composite(
        self, pixels: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, state: StreamState, config: SessionConfig
    ) -> torch.Tensor:
        if config.mode == "mask":
            return mask.expand(-1, 3, -1, -1)
        if config.mode == "blur":
            background = blurred_background(pixels, image, mask, config.blur)
        elif config.mode == "color":
            background = torch.tensor(config.rgb(), device=image.device, dtype=image.dtype).view(1, 3, 1, 1) / 255.0
            background = background.expand_as(image)
        else:  # image
            background = self._background_image(config.image, image.shape[-2:], state)
        return composite(image, mask, background, config.light_wrap)

    def _background_image(self, name: str, size: torch.Size, state: StreamState) -> torch.Tensor:
        key = (name, tuple(size))
        if state.background_key != key:
            picture = torch.from_numpy(self.backgrounds.get(name)).to(self.device)
            picture = picture.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
            state.background = cover_fit(picture, size[0], size[1]).contiguous()
            state.background_key = key
        return state.background  # type: ignore[return-value]


def _download(result: torch.Tensor) -> np.ndarray:
    planes = result[0].mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()
    # Interleaving the planes with stack is 3x faster on CPU than permute(1, 2, 0).contiguous().
    return torch.stack(planes.unbind(0), dim=-1).numpy()


class _Clock:
    """Accumulates per-stage wall time when asked to; synchronises CUDA so the figures are real."""

    def __init__(self, device: torch.device, times: StageTimes | None) -> None:
        self.device, self.times = device, times
        self.last = time.perf_counter() if times is not None else 0.0

    def lap(self, stage: str) -> None:
        if self.times is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times.ms[stage] += (now - self.last) * 1000.0
        self.last = now
