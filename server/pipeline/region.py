"""Region-of-interest tracking: where the person is, so that the model sees them large rather than as a
few pixels of a whole frame stretched to its input.

A region is a box of the model's aspect around every person pixel, with a margin. It is found on a
whole-frame pass (when a stream starts, when the track is lost, and every `REDETECT_EVERY` frames, so a
newcomer is picked up), then followed from each frame's own mask: its centre eases towards the mask's,
it grows at once when the mask touches its edge and shrinks slowly, and small moves are ignored, so the
crop does not jitter. A region that would cover most of the frame is no region: the whole frame is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .filters import resize_bilinear
from .subject import SubjectState

MARGIN = (
    0.15  # added on each side of the person's box, as a fraction of its size (fullbody-dev: 0.823 vs 0.776 at 0.25)
)
WHOLE_FRAME = 0.8  # a region that shows this much of the frame's height and width means: use the whole frame
REDETECT_EVERY = 30  # frames between whole-frame passes while tracking
FOLLOW = 0.5  # how far the centre moves towards the mask's per frame
SHRINK = 0.1  # how far the size shrinks towards the mask's per frame (growing is immediate)
DEADBAND = 0.03  # moves smaller than this fraction of the region's height are ignored
PERSON = 0.5  # probability from which a pixel belongs to the person


@dataclass(frozen=True)
class Region:
    """A box in frame pixels: centre and height; its width follows from the model's aspect."""

    cx: float
    cy: float
    height: float
    aspect: float  # width / height of the model's input

    @property
    def width(self) -> float:
        return self.height * self.aspect

    def box(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) in whole pixels; may reach outside the frame."""
        top, left = round(self.cy - self.height / 2), round(self.cx - self.width / 2)
        return top, top + max(1, round(self.height)), left, left + max(1, round(self.width))


@dataclass(frozen=True)
class TrackingState:
    """What region tracking keeps of a stream between frames."""

    region: Region | None = None  # where the person is, while config.region tracks them
    since_detect: int = 0  # frames since the last whole-frame pass
    close_up: bool = False  # that pass found someone filling the frame: whole frames until the next one
    subject: SubjectState = field(default_factory=SubjectState)  # who is kept when config.subject chooses one person
    moved: bool = False  # the last pass moved or resized the region: it has not settled on the person yet


def person_box(mask: torch.Tensor, threshold: float = PERSON) -> tuple[float, float, float, float] | None:
    """(top, bottom, left, right) of the person pixels of a (1,1,h,w) mask, as fractions of its size."""
    # Each row's and column's maximum, then the threshold: 0.12 ms at 240x320 against 0.45 for thresholding
    # every pixel and reducing the booleans (torch's bool reductions are slow on the CPU).
    rows = (mask[0, 0].amax(dim=1) >= threshold).nonzero()[:, 0].tolist()
    cols = (mask[0, 0].amax(dim=0) >= threshold).nonzero()[:, 0].tolist()
    if not rows:
        return None
    h, w = mask.shape[-2:]
    return rows[0] / h, (rows[-1] + 1) / h, cols[0] / w, (cols[-1] + 1) / w


def region_around(
    box: tuple[float, float, float, float], frame: tuple[int, int], aspect: float, square: bool = False
) -> Region | None:
    """The region of the model's aspect around a person's box (fractions of the frame; a detector's may reach
    beyond it), or None when it would show most of the frame anyway.

    `square`: the region network wants its crop around the person even when they fill the frame one way (the
    pose segmenter, trained on such squares); otherwise (the selfie models, trained on whole frames) a region
    that spans most of the frame's height or width is the whole frame."""
    height, width = frame
    top, bottom, left, right = box[0] * height, box[1] * height, box[2] * width, box[3] * width
    box_h, box_w = (bottom - top) * (1 + 2 * MARGIN), (right - left) * (1 + 2 * MARGIN)
    region_h = max(box_h, box_w / aspect, 16.0)
    region = Region((left + right) / 2, (top + bottom) / 2, region_h, aspect)
    # For the pose segmenter a tall, narrow person still gains from a square (the whole frame would be
    # squeezed into it), and so does someone whose body square reaches out of the frame: only a region that
    # shows most of the frame both ways is no gain. (portraits-dev, general: 0.9633 with that rule, 0.9637
    # with the whole frame for anyone who spans it one way.)
    r_top, r_bottom, r_left, r_right = region.box()
    shown_h = (min(r_bottom, height) - max(r_top, 0)) >= WHOLE_FRAME * height
    shown_w = (min(r_right, width) - max(r_left, 0)) >= WHOLE_FRAME * width
    if (shown_h and shown_w) if square else (shown_h or shown_w):
        return None
    return region


def follow(previous: Region, target: Region | None, touches_edge: bool) -> Region | None:
    """The next frame's region: eased towards `target`, grown at once when the mask reached the edge."""
    if target is None:
        return None
    height = (
        target.height
        if target.height > previous.height
        else previous.height + SHRINK * (target.height - previous.height)
    )
    if touches_edge:
        height = max(height, previous.height * 1.3)
    dx, dy = target.cx - previous.cx, target.cy - previous.cy
    if abs(dx) < DEADBAND * previous.height and abs(dy) < DEADBAND * previous.height:
        dx = dy = 0.0
    if abs(height - previous.height) < DEADBAND * previous.height:
        height = previous.height
    return Region(previous.cx + FOLLOW * dx, previous.cy + FOLLOW * dy, height, previous.aspect)


def paste(probabilities: torch.Tensor, region: Region, frame: tuple[int, int], canvas: tuple[int, int]) -> torch.Tensor:
    """A (1,1,h,w) crop's probabilities placed at `region` on a canvas of the frame at `canvas` size, zero
    outside the region."""
    scale_y, scale_x = canvas[0] / frame[0], canvas[1] / frame[1]
    top, bottom, left, right = region.box()
    ctop, cbottom = round(top * scale_y), max(round(bottom * scale_y), round(top * scale_y) + 1)
    cleft, cright = round(left * scale_x), max(round(right * scale_x), round(left * scale_x) + 1)
    resized = resize_bilinear(probabilities.float(), (cbottom - ctop, cright - cleft))
    out = torch.zeros(1, 1, *canvas, device=probabilities.device, dtype=torch.float32)
    y0, y1, x0, x1 = max(ctop, 0), min(cbottom, canvas[0]), max(cleft, 0), min(cright, canvas[1])
    if y0 < y1 and x0 < x1:
        out[..., y0:y1, x0:x1] = resized[..., y0 - ctop : y1 - ctop, x0 - cleft : x1 - cleft]
    return out


def touches_edge(probabilities: torch.Tensor, region: Region, frame: tuple[int, int]) -> bool:
    """Whether the person reaches a border of the crop that lies inside the frame (they go on beyond it)."""
    top, bottom, left, right = region.box()
    p = probabilities[0, 0]  # only its borders are thresholded
    return bool(
        (top > 0 and p[0].max() >= PERSON)
        or (bottom < frame[0] and p[-1].max() >= PERSON)
        or (left > 0 and p[:, 0].max() >= PERSON)
        or (right < frame[1] and p[:, -1].max() >= PERSON)
    )


def reaches_edge(mask: torch.Tensor, region: Region, frame: tuple[int, int]) -> bool:
    """`touches_edge` read on a (1,1,h,w) canvas of the whole frame (a mask with only the chosen person left):
    whether they reach a border of the region that lies inside the frame."""
    top, bottom, left, right = region.box()
    h, w = mask.shape[-2:]
    scale_y, scale_x = h / frame[0], w / frame[1]
    y0, y1 = max(0, round(top * scale_y)), min(h, round(bottom * scale_y))
    x0, x1 = max(0, round(left * scale_x)), min(w, round(right * scale_x))
    if y0 >= y1 or x0 >= x1:
        return False
    return touches_edge(mask[..., y0:y1, x0:x1], region, frame)


def canvas_size(frame: tuple[int, int], longest: int = 320) -> tuple[int, int]:
    """The size masks are kept at for a frame while regions are tracked: its aspect, `longest` at most."""
    scale = min(1.0, longest / max(frame))
    return max(1, round(frame[0] * scale)), max(1, round(frame[1] * scale))
