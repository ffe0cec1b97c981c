"""A tiny labelled dataset the tests make: a head-and-shoulders shape on a textured background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_portraits(root: Path, count: int = 12, size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """Writes `root/images/NNNNN.jpg` and `root/masks/NNNNN.png` (255 = person); returns `root`."""
    rng = np.random.default_rng(seed)
    h, w = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        # Background: darker colour stripes plus noise, different each image; the person is lighter and
        # smooth, so that a few seconds of training learn to tell them apart.
        xx = np.mgrid[0:h, 0:w][1]
        base = rng.integers(30, 110, 3)
        background = (
            base + 40 * np.sin(xx[..., None] / rng.uniform(3, 9) + rng.uniform(0, 6)) + rng.normal(0, 12, (h, w, 3))
        )
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy, r = w // 2 + rng.integers(-w // 6, w // 6), h // 3 + rng.integers(-4, 5), rng.integers(h // 8, h // 5)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)  # head
        draw.rectangle([cx - 2.2 * r, cy + r, cx + 2.2 * r, h], fill=255)  # shoulders
        person = np.asarray(mask) >= 128
        skin = rng.integers(170, 250, 3)
        image = np.where(person[..., None], skin + rng.normal(0, 6, (h, w, 3)), background)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"{i:05d}.jpg", quality=95)
        mask.save(root / "masks" / f"{i:05d}.png")
    return root
