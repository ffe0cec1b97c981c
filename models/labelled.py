"""Labelled portrait folders: which (image, mask) pairs they hold, and a fixed held-out split.

No torch here: the command line reads DEFAULT_HOLDOUT for its help text.
"""

from __future__ import annotations

import random
from pathlib import Path

from .images import IMAGE_SUFFIXES

# Flat layout: the mask sits beside its image as NAME<suffix>.png.
MASK_SUFFIXES = ("_mask", "_matte")
DEFAULT_HOLDOUT = 0.15
SPLIT_SEED = 20260101


def labelled_pairs(data: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a folder, in name order. Two layouts are read:

    - `images/NAME.jpg|png` with `masks/NAME.png` (255 = person);
    - one flat folder with `NAME.jpg|png` beside `NAME_mask.png` or `NAME_matte.png`
      (the PFCN / EG1800 style that portrait-segmentation research code uses).
    """
    data = Path(data)
    if (data / "images").is_dir():
        images = sorted(p for p in (data / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"{data}/images holds no .jpg or .png files")
        pairs = [(image, data / "masks" / f"{image.stem}.png") for image in images]
        missing = [str(m) for _, m in pairs if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} masks are missing, e.g. {missing[0]}")
        return pairs
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is not a folder")
    pairs = []
    for image in sorted(data.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES or image.stem.endswith(MASK_SUFFIXES):
            continue
        masks = [data / f"{image.stem}{s}.png" for s in MASK_SUFFIXES]
        mask = next((m for m in masks if m.is_file()), None)
        if mask is not None:
            pairs.append((image, mask))
    if not pairs:
        raise FileNotFoundError(
            f"{data}: no labelled images (expected images/*.jpg + masks/*.png, or NAME.jpg beside NAME_mask.png)"
        )
    return pairs


def split_pairs(pairs: list, holdout: float = DEFAULT_HOLDOUT) -> tuple[list, list]:
    """(train, held out): a fixed, seeded shuffle of the name-sorted pairs, so every command that
    uses the same folder and `holdout` (a fraction, or a count when >= 1) sees the same split."""
    count = int(holdout) if holdout >= 1 else round(len(pairs) * holdout)
    if not 0 < count < len(pairs):
        raise ValueError(f"holdout {holdout} leaves no training or no held-out images out of {len(pairs)}")
    order = list(range(len(pairs)))
    random.Random(SPLIT_SEED).shuffle(order)
    held = set(order[:count])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]
