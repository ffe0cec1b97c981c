"""MediaPipe Pose (full) as a full-body person segmenter for a region around one person.

The landmark network of MediaPipe Pose also segments the whole body in its 256x256 input, which
MediaPipe's own pipeline fills with a square around the person. Only the graph's segmentation output
and what it depends on are kept: the landmark, heatmap and world-coordinate heads are never computed.
The segmentation output is a logit (the graph ends it with a convolution, no activation).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .tflite_module import load_graph

SEGMENTATION = "Identity_2"  # (1,256,256,1) logits of the person
INPUT_SIZE = (256, 256)


class PoseSegmenter(nn.Module):
    """(N,3,256,256) RGB in [0,1] of a square around a person -> (N,1,256,256) person probability."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.input_size = INPUT_SIZE
        self.graph = load_graph(path, [SEGMENTATION])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.graph(x)[0])


def pose_segmenter(input_size: tuple[int, int], path: Path) -> PoseSegmenter:
    """The builder the model registry calls with the pinned weights file."""
    if tuple(input_size) != INPUT_SIZE:
        raise ValueError(f"MediaPipe Pose takes {INPUT_SIZE}, not {input_size}")
    return PoseSegmenter(path)
