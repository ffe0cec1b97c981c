"""The training dataset: labelled pairs decoded once and kept in memory, augmented on tensors (kornia)."""

from __future__ import annotations

from pathlib import Path

import kornia.augmentation as K
import torch
from torch.utils.data import Dataset

from ..images import read_image


def read_pair(image: Path, mask: Path, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (3,H,W) image and (1,H,W) mask (1 = person), both stretched to `size` like the frames are."""
    rgb = read_image(image, size=size)
    person = read_image(mask, "L", size) >= 128
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
