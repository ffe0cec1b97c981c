"""Labelled portrait folders: discovery of (image, mask) pairs, a fixed held-out split, and a
training dataset with augmentation on tensors (kornia)."""

from __future__ import annotations

import random
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
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


def read_pair(image: Path, mask: Path, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (3,H,W) image and (1,H,W) mask (1 = person), both stretched to `size` like the frames are."""
    h, w = size
    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR))
    with Image.open(mask) as m:
        person = np.asarray(m.convert("L").resize((w, h), Image.NEAREST)) >= 128
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1), torch.from_numpy(person).unsqueeze(0).to(torch.uint8)


class PortraitDataset(Dataset):
    """Pairs decoded once at `size` x `margin` and kept in memory (decoding JPEGs every epoch costs more
    than the training step of a small model on a CPU); crops to `size` happen in `augment`."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: tuple[int, int], margin: float = 1.0) -> None:
        self.pairs, self.size = pairs, size
        self.load_size = (round(size[0] * margin), round(size[1] * margin))
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self._cache:
            self._cache[index] = read_pair(*self.pairs[index], self.load_size)
        return self._cache[index]


def augmentation(size: tuple[int, int]) -> K.AugmentationSequential:
    """Flip, scale/crop and colour jitter; geometric ones applied alike to image and mask."""
    return K.AugmentationSequential(
        K.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.75, 1.333)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8),
        data_keys=["input", "mask"],
    )
