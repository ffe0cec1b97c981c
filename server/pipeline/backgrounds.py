"""Background images: generated presets and validated user uploads, kept in memory."""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from models.images import decode_image

if TYPE_CHECKING:
    import torch

PRESET_SIZE = (720, 1280)  # (H, W)


@dataclass(frozen=True)
class BackgroundState:
    """What compositing keeps of a stream between frames: its background image, cover-fitted to its frames."""

    key: tuple | None = None  # (image name, plane sizes) of `planes`
    planes: tuple[torch.Tensor, torch.Tensor] | None = None  # the fitted image's Y and UV, on the device


def _grid() -> tuple[np.ndarray, np.ndarray]:
    h, w = PRESET_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / (h - 1), x / (w - 1)


def _aurora() -> np.ndarray:
    y, x = _grid()
    band = np.exp(-(((y - 0.35 - 0.12 * np.sin(6.0 * x)) / 0.12) ** 2))
    band2 = np.exp(-(((y - 0.55 - 0.08 * np.sin(9.0 * x + 1.0)) / 0.08) ** 2))
    r = 0.05 + 0.35 * band2
    g = 0.08 + 0.75 * band + 0.2 * band2
    b = 0.20 + 0.30 * (1 - y) + 0.35 * band2
    return np.stack([r, g, b], -1)


def _sunset() -> np.ndarray:
    y, x = _grid()
    sun = np.exp(-(((x - 0.7) ** 2 + ((y - 0.62) * 1.8) ** 2) / 0.01))
    r = 0.95 - 0.45 * y + 0.05 * sun
    g = 0.45 + 0.35 * y * (1 - y) * 2 + 0.5 * sun
    b = 0.35 + 0.4 * (1 - y) ** 3 + 0.3 * sun
    return np.stack([r, g, b], -1)


def _studio() -> np.ndarray:
    y, x = _grid()
    vignette = 1.0 - 0.9 * ((x - 0.5) ** 2 + (y - 0.4) ** 2)
    return np.stack([0.32 * vignette, 0.36 * vignette, 0.42 * vignette], -1)


def _bookshelf() -> np.ndarray:
    y, x = _grid()
    rng = np.random.default_rng(7)
    shelf = (np.floor(y * 4) % 2).astype(np.float32)
    spines = rng.random(64)[np.minimum((x * 64).astype(int), 63)]
    r = 0.35 + 0.35 * spines * (1 - shelf * 0.3)
    g = 0.22 + 0.20 * spines
    b = 0.12 + 0.25 * (1 - spines)
    edge = np.abs((y * 4) % 1 - 0.5) > 0.46
    return np.stack([np.where(edge, 0.2, r), np.where(edge, 0.12, g), np.where(edge, 0.06, b)], -1)


PRESETS = {"aurora": _aurora, "sunset": _sunset, "studio": _studio, "bookshelf": _bookshelf}


class BackgroundsFull(Exception):
    """No room for another upload: the memory budget is taken by images that live sessions show."""


class BackgroundStore:
    """Named RGB uint8 images: the generated presets, and uploads within a memory budget.

    An upload is kept with its longer side at most `max_side`, and all uploads (with their PNG copies)
    within `budget_bytes`: the least recently used images that no live session shows (`in_use`) are
    evicted first. An upload id is unguessable (128 random bits): whoever knows it may use it.
    """

    def __init__(
        self,
        budget_bytes: int = 256 * 1024 * 1024,
        max_side: int = 1920,
        in_use: Callable[[], set[str]] = set,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.max_side = max_side
        self.in_use = in_use  # the names live sessions show; set by whoever runs the sessions
        self._presets = {name: (np.clip(make(), 0, 1) * 255).astype(np.uint8) for name, make in PRESETS.items()}
        self._uploads: OrderedDict[str, np.ndarray] = OrderedDict()  # least recently used first
        self._png: dict[str, bytes] = {}  # images never change under a name: encode each once
        self._lock = threading.Lock()

    def uploads(self) -> list[str]:
        with self._lock:
            return list(self._uploads)

    def presets(self) -> list[str]:
        return list(self._presets)

    def used_bytes(self) -> int:
        with self._lock:
            return self._used()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._presets or name in self._uploads

    def get(self, name: str) -> np.ndarray:
        with self._lock:
            if name in self._presets:
                return self._presets[name]
            self._uploads.move_to_end(name)
            return self._uploads[name]

    def add(self, data: bytes, max_pixels: int = 4096 * 4096) -> str:
        """Decode an uploaded image (at most `max_pixels` before scaling) and keep it; returns its id.

        Raises models.images.UnreadableImage or ImageTooLarge for bytes it cannot use, and BackgroundsFull
        when the budget is taken by images in use.
        """
        image = decode_image(data, max_pixels, self.max_side)
        name = "upload-" + secrets.token_urlsafe(16)
        in_use = self.in_use()
        with self._lock:
            evictable = [n for n in self._uploads if n not in in_use]
            while self._used() + image.nbytes > self.budget_bytes and evictable:
                evicted = evictable.pop(0)
                del self._uploads[evicted]
                self._png.pop(evicted, None)
            if self._used() + image.nbytes > self.budget_bytes:
                raise BackgroundsFull(
                    f"the uploads' memory budget ({self.budget_bytes // 2**20} MiB) is taken by images that "
                    "live sessions show; try again when one ends"
                )
            self._uploads[name] = image
        return name

    def png(self, name: str) -> bytes:
        """The image as PNG bytes (the page shows every background as a thumbnail on each load)."""
        with self._lock:
            cached = self._png.get(name)
        if cached is None:
            out = io.BytesIO()
            Image.fromarray(self.get(name)).save(out, format="PNG")
            cached = out.getvalue()
            with self._lock:
                if name in self._presets or name in self._uploads:
                    self._png[name] = cached
        return cached

    def _used(self) -> int:
        uploads = sum(image.nbytes for image in self._uploads.values())
        return uploads + sum(len(png) for name, png in self._png.items() if name in self._uploads)
