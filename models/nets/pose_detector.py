"""MediaPipe Pose's person detector: where each person's body is, from a 224x224 letterboxed frame.

An SSD-style network over 2254 fixed anchors (28x28x2, 14x14x2 and 7x7x6 centres, unit size); each
anchor predicts a box and four keypoints as offsets in input pixels, and a score. Keypoint 0 is the
middle of the hips and keypoint 1 lies on the circle around the whole body centred there: MediaPipe
Pose places its landmark model's square on those two (`body_square`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .tflite_module import load_graph

INPUT_SIZE = (224, 224)
_LAYERS = ((28, 2), (14, 2), (7, 6))  # feature map side and anchors per cell (strides 8, 16, then 32 x3)
SCORE_CLIP = 100.0  # as MediaPipe clips the logits before its sigmoid


def anchor_centres() -> torch.Tensor:
    """(2254, 2) anchor centres (x, y) in [0,1], in the order of the network's outputs."""
    centres = []
    for side, per_cell in _LAYERS:
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        cells = torch.stack(((xs + 0.5) / side, (ys + 0.5) / side), dim=-1).reshape(-1, 1, 2)
        centres.append(cells.expand(-1, per_cell, 2).reshape(-1, 2))
    return torch.cat(centres)


class PoseDetector(nn.Module):
    """(N,3,224,224) RGB in [0,1] -> scores (N,2254) in [0,1] and keypoints (N,2254,4,2) as (x, y) fractions
    of the input."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.input_size = INPUT_SIZE
        self.graph = load_graph(path, ["Identity", "Identity_1"])
        self.anchors: torch.Tensor
        self.register_buffer("anchors", anchor_centres(), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, logits = self.graph(x * 2.0 - 1.0)  # the network takes [-1, 1]
        scores = torch.sigmoid(logits[..., 0].clamp(-SCORE_CLIP, SCORE_CLIP))
        offsets = raw[..., 4:12].reshape(raw.shape[0], raw.shape[1], 4, 2) / INPUT_SIZE[0]
        return scores, offsets + self.anchors[None, :, None, :]


def pose_detector(input_size: tuple[int, int], path: Path) -> PoseDetector:
    """The builder the model registry calls with the pinned weights file."""
    if tuple(input_size) != INPUT_SIZE:
        raise ValueError(f"MediaPipe's pose detector takes {INPUT_SIZE}, not {input_size}")
    return PoseDetector(path)
