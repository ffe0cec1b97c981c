"""Finding people on whole frames with a person detector: a box around everyone found, for region tracking.

The frame is letterboxed (scaled to fit, centred, black bars) to the detector's square input, as the
detector was trained. Each detection's keypoints 0 (hips) and 1 (on the circle around the body) give the
body's square; the box returned covers every detection above the score threshold, so the region covers
all the people in the frame. `bodies` gives them one by one, for subject selection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .frames import DeviceFrame
from .subject import Body

SCORE = 0.5  # MediaPipe's threshold for a pose detection

Box = tuple[float, float, float, float]  # (top, bottom, left, right) as fractions of the frame
SAME_PERSON = 0.5  # two detections whose centres are closer than this times the larger radius are one


def letterbox(frame: DeviceFrame, size: int) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """A frame scaled to fit a size x size square and centred on black: the square as (1,3,size,size) RGB
    float in [0,1], the scale, and the (top, left) padding."""
    height, width = frame.size
    scale = size / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - h) // 2, (size - w) // 2
    fitted = frame.rgb_at((h, w)).float().div_(255.0)
    return F.pad(fitted, (left, size - w - left, top, size - h - top)), scale, (top, left)


def detect(
    detector: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    frame: DeviceFrame,
    size: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The people a detector (square input of `size`) finds on a frame, best first: (D,2,2) keypoints 0 (the
    hips) and 1 (on the circle around the body) of each detection above the score threshold, as (x, y) in
    frame pixels (the letterbox undone), on the CPU."""
    square, scale, (top, left) = letterbox(frame, size)
    scores, keypoints = detector(square.to(dtype))
    found = (scores[0] >= SCORE).nonzero()[:, 0]
    found = found[scores[0, found].argsort(descending=True)]
    points = keypoints[0, found, :2].float().cpu() * size
    return (points - torch.tensor([float(left), float(top)])) / scale


def body_box(points: torch.Tensor, frame: tuple[int, int]) -> Box | None:
    """The box (fractions of the frame) around every detection's body square (`detect`'s points), or None if
    nobody is there."""
    if len(points) == 0:
        return None
    height, width = frame
    xs, ys = points[..., 0], points[..., 1]
    radius = torch.hypot(xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0])
    # Not clipped to the frame: a person seen from the waist up has their hips, the square's centre, below
    # it, and the pose segmenter expects the square MediaPipe would give it (black outside the frame).
    top = float((ys[:, 0] - radius).min()) / height
    bottom = float((ys[:, 0] + radius).max()) / height
    left = float((xs[:, 0] - radius).min()) / width
    right = float((xs[:, 0] + radius).max()) / width
    if not (math.isfinite(top + bottom + left + right) and bottom > top and right > left):
        return None
    return top, bottom, left, right


def bodies(points: torch.Tensor, frame: tuple[int, int]) -> list[Body]:
    """Each person the detector found once (`detect`'s points, best first; its anchors overlap: the first of
    each cluster stays), best first."""
    height, width = frame
    kept: list[tuple[float, float, float]] = []
    for (x0, y0), (x1, y1) in points.tolist():
        radius = math.hypot(x1 - x0, y1 - y0)
        if not (math.isfinite(x0 + y0 + radius) and radius > 0):
            continue
        if all(math.hypot(x0 - x, y0 - y) >= SAME_PERSON * max(radius, r) for x, y, r in kept):
            kept.append((x0, y0, radius))
    return [Body(x / width, y / height, r / height) for x, y, r in kept]
