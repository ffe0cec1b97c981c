"""Image files and bytes in, RGB uint8 arrays out: the one image reader of the project."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnreadableImage(ValueError):
    """Bytes that no image decoder recognises."""


class ImageTooLarge(ValueError):
    """An image with more pixels than the caller accepts (checked before decoding: no decompression bombs)."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path, mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
    """A file as an (H,W,3) RGB array (mode "L": (H,W)); `size` (H, W) stretches it bilinearly ("L": nearest)."""
    with Image.open(path) as image:
        converted = image.convert(mode)
        if size is not None:
            resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.BILINEAR
            converted = converted.resize((size[1], size[0]), resample)
        return np.asarray(converted)


def decode_image(data: bytes, max_pixels: int, max_side: int | None = None) -> np.ndarray:
    """Bytes of a PNG/JPEG/WebP/... image -> (H,W,3) RGB uint8; the size is checked before decoding.

    With `max_side`, a larger image comes back scaled down to that longer side (JPEGs are decoded at a
    reduced scale to begin with, so a large photo never exists in memory at full size).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"image is {width}x{height}; at most {max_pixels} pixels are accepted")
            if max_side is None or max(width, height) <= max_side:
                return np.array(image.convert("RGB"))
            scale = max_side / max(width, height)
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            image.draft("RGB", target)  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, still >= target
            return np.array(image.convert("RGB").resize(target, Image.Resampling.LANCZOS))
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"not a readable image: {exc}") from exc
