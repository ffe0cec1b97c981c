"""Checkpoint files: a trained network with what it takes to use it (architecture, input size,
normalisation), and optionally the training state to resume from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .nets import build
from .wrappers.normalised import Segmenter

FORMAT = "backdrop.segmenter"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable Backdrop checkpoint."""


@dataclass
class Checkpoint:
    arch: str
    input_size: tuple[int, int]  # (H, W) the network was trained at; frames are stretched to it
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    state_dict: dict[str, torch.Tensor]
    name: str = ""
    meta: dict = field(default_factory=dict)  # epoch, val IoU, parameters, how it was made...
    training: dict | None = None  # optimizer, scheduler, scaler, RNG: only in files meant for --resume

    def model(self) -> Segmenter:
        """The network with its weights, in eval mode, on the CPU."""
        segmenter = Segmenter(build(self.arch), self.mean, self.std)
        segmenter.load_state_dict(self.state_dict)
        return segmenter.eval()


def save(checkpoint: Checkpoint, path: Path) -> None:
    """Write atomically, so that an interrupted run never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": checkpoint.arch,
        "input_size": list(checkpoint.input_size),
        "mean": list(checkpoint.mean),
        "std": list(checkpoint.std),
        "name": checkpoint.name or path.stem,
        "meta": checkpoint.meta,
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
    }
    if checkpoint.training is not None:
        payload["training"] = checkpoint.training
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path) -> Checkpoint:
    """Read a checkpoint; only tensors and plain data are unpickled (weights_only), never code."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a checkpoint file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Backdrop checkpoint (no '{FORMAT}' format tag)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})"
        )
    return Checkpoint(
        arch=payload["arch"],
        input_size=tuple(payload["input_size"]),
        mean=tuple(payload["mean"]),
        std=tuple(payload["std"]),
        state_dict=payload["state_dict"],
        name=payload.get("name") or path.stem,
        meta=payload.get("meta", {}),
        training=payload.get("training"),
    )
