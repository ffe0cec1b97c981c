"""Finding people on whole frames with a person detector: a box around everyone found, for region tracking.

The frame is letterboxed (scaled to fit, centred, black bars) to the detector's square input, as the
detector was trained. Each detection's keypoints 0 (hips) and 1 (on the circle around the body) give the
body's square; the box returned covers every detection above the score threshold, so the region covers
all the people in the frame.
"""

from __future__ import annotations

import math

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


def body_box(
    scores: torch.Tensor,
    keypoints: torch.Tensor,
    frame: tuple[int, int],
    size: int,
    scale: float,
    padding: tuple[int, int],
) -> Box | None:
    """The box (fractions of the frame) around every detection's body square, or None if nobody is there.

    `scores` (A,) and `keypoints` (A,4,2) are one frame's detector outputs, the keypoints as fractions of
    the letterboxed input."""
    found = (scores >= SCORE).nonzero()[:, 0]
    if len(found) == 0:
        return None
    height, width = frame
    # Keypoints in frame pixels: undo the letterbox.
    points = keypoints[found, :2].float().cpu() * size
    xs = (points[..., 0] - padding[1]) / scale
    ys = (points[..., 1] - padding[0]) / scale
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


def bodies(
    scores: torch.Tensor,
    keypoints: torch.Tensor,
    frame: tuple[int, int],
    size: int,
    scale: float,
    padding: tuple[int, int],
) -> list[Body]:
    """Each person the detector found once (its anchors overlap: the best-scored of each cluster stays),
    best first; the outputs as in `body_box`."""
    found = (scores >= SCORE).nonzero()[:, 0]
    if len(found) == 0:
        return []
    found = found[scores[found].argsort(descending=True)]
    height, width = frame
    points = keypoints[found, :2].float().cpu() * size
    xs = ((points[..., 0] - padding[1]) / scale).tolist()
    ys = ((points[..., 1] - padding[0]) / scale).tolist()
    kept: list[tuple[float, float, float]] = []
    for (x0, x1), (y0, y1) in zip(xs, ys, strict=True):
        radius = math.hypot(x1 - x0, y1 - y0)
        if not (math.isfinite(x0 + y0 + radius) and radius > 0):
            continue
        if all(math.hypot(x0 - x, y0 - y) >= SAME_PERSON * max(radius, r) for x, y, r in kept):
            kept.append((x0, y0, radius))
    return [Body(x / width, y / height, r / height) for x, y, r in kept]
