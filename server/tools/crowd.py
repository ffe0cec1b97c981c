"""A multi-person dev set made from a labelled portrait folder, without new data: each portrait gets one or
two people from other portraits pasted smaller into its background, standing on the bottom edge, behind
the subject (the subject covers them). The truth stays the subject's mask, so a model that keeps everyone
scores low and subject selection is what is measured."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from models.images import read_image
from models.labelled import labelled_pairs


def make_crowd(data: Path, out: Path, limit: int | None = None, seed: int = 0, progress: bool = True) -> int:
    """Writes `out/images/NNNNN.jpg` and `out/masks/NNNNN.png` (255 = the subject) from the labelled folder
    `data`; returns how many. The same folder, limit and seed give the same set."""
    pairs = labelled_pairs(data)
    if len(pairs) < 2:
        raise ValueError(f"{data} needs two labelled images at least")
    chosen = pairs[:limit]
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for index, (image_path, mask_path) in enumerate(tqdm(chosen, desc="crowd", unit="img", disable=not progress)):
        image = read_image(image_path).astype(np.float32)
        truth = read_image(mask_path, "L")
        subject = truth >= 128
        sides = rng.permutation([0, 1])[: rng.integers(1, 3)]  # one or two bystanders, left and/or right
        for side in sides:
            other = int(rng.integers(len(pairs) - 1))
            other += other >= index  # anyone but the subject
            _paste(image, subject, *(_load(pairs[other])), side=int(side), rng=rng)
        name = f"{index:05d}"
        Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8)).save(
            out / "images" / f"{name}.jpg", quality=95
        )
        Image.fromarray(truth).save(out / "masks" / f"{name}.png")
    return len(chosen)


def _load(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    return read_image(pair[0]).astype(np.float32), read_image(pair[1], "L").astype(np.float32) / 255.0


def _paste(
    image: np.ndarray, subject: np.ndarray, person: np.ndarray, alpha: np.ndarray, side: int, rng: np.random.Generator
) -> None:
    """`person` (with its soft `alpha`) scaled to 60-85% of the image's height, on the bottom edge, centred
    at 10-30% of the width from the `side` edge (0 left, 1 right), behind the subject; in place."""
    height, width = subject.shape
    scale = rng.uniform(0.6, 0.85) * height / person.shape[0]
    h, w = max(1, round(person.shape[0] * scale)), max(1, round(person.shape[1] * scale))
    person = cv2.resize(person, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
    centre = width * (rng.uniform(0.1, 0.3) if side == 0 else rng.uniform(0.7, 0.9))
    left, top = round(centre - w / 2), height - h
    x0, x1 = max(0, left), min(width, left + w)
    if x0 >= x1:
        return
    a = alpha[:, x0 - left : x1 - left, None] * ~subject[top:, x0:x1, None]  # the subject stands in front
    region = image[top:, x0:x1]
    region[:] = a * person[:, x0 - left : x1 - left] + (1 - a) * region
