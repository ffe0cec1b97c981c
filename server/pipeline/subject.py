"""Subject selection: only the chosen person stays in the mask; everyone else becomes background.

The mask's people are split into connected parts (p >= 0.5, 8-connected); people who touch make one part,
which the person detector splits (`people`: each pixel goes to the nearest body, relative to its size).
The subject is picked once: the part under a point (the nearest part when the point misses), or for
"main" the largest part near the frame's centre, with the small pieces near it (a hand, a lock of hair).
From then on it is followed: each frame keeps the parts that lie mostly within reach of where the subject
was on the last frame (grown by how far a person moves between frames), so a limb that comes apart stays
and a bystander does not. Someone who comes to touch
the subject keeps their side: where the parts now join, each pixel goes to whoever was nearer it on the
last frame. When what would be kept still grows well beyond the subject's usual size, the detector splits
the parts; if it cannot, what lies beyond the reach is cut. When no part is within reach, the subject is away: what
is left within reach stays (a flicker of the model does not blank them) and nobody else is shown; after
`REACQUIRE` frames away, the subject is picked again by the "main" rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .config import Subject, SubjectPoint

PERSON = 0.5  # probability from which a pixel belongs to a person
REACH = 0.05  # how far a subject may move between frames, as a fraction of the mask's height
GROWTH = 1.6  # kept parts larger than this times the subject's usual area are split, else cut back to the reach
SPECK = 0.002  # parts smaller than this share of the mask are nobody, when picking
CENTRE_WEIGHT = 0.75  # "main": a part's area counts less by this much at the frame's corners
FRINGE = 1  # pixels (of the parts' grid) of soft edge kept around the kept parts: the mask's ramp below PERSON
STEP = 2  # the parts are found on every STEP-th pixel of the mask each way...
MIN_ROWS = 60  # ...unless that leaves fewer rows than this
REACQUIRE = 15  # frames (0.5 s at 30 fps) a subject may be away before someone is picked again
OTHERS = 0.25  # parts that are not the subject count as someone else from this share of their usual size
HEAD_DIP = 0.08  # a dip in the outline between two heads, as a share of the mask's height, on both sides
HEAD_WIDTH = 0.08  # a head's least width, as a share of the mask's width
USUAL = 0.05  # how fast the subject's usual size follows their size


@dataclass(frozen=True)
class Body:
    """One person the detector found: the centre (hips) and radius of the circle around their body, as
    fractions of the frame's width (x) and height (y, radius)."""

    x: float
    y: float
    radius: float


People = Callable[[], list[Body]]  # the people on the frame, asked for only when parts need splitting


@dataclass(frozen=True)
class SubjectState:
    """What subject selection keeps of a stream: who was chosen, and where they were on the last frame."""

    choice: Subject = "all"  # the config's subject this was picked for: a new choice picks again
    kept: np.ndarray | None = None  # (h,w) bool: the subject's pixels on the last frame they were seen
    others: np.ndarray | None = None  # (h,w) bool: everyone else's pixels on that frame
    usual: float = 0.0  # their usual area in pixels, following their area slowly
    absent: int = 0  # frames since they were last seen


class _Parts:
    """The people pixels of a mask as connected parts: labels (0 = nobody), each part's area and centre."""

    def __init__(self, binary: np.ndarray) -> None:
        self.count, self.labels, stats, self.centres = cv2.connectedComponentsWithStats(binary, connectivity=8)
        self.areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
        self.areas[0] = 0

    def split_by(self, people: list[Body]) -> None:
        """Each part that holds several people's centres divided between them: each pixel to the nearest
        body, its distance counted in that body's radius."""
        height, width = self.labels.shape
        by_part: dict[int, list[tuple[float, float, float]]] = {}
        for body in people:
            x, y = min(max(body.x * width, 0), width - 1), min(max(body.y * height, 0), height - 1)
            part = int(self.labels[int(y), int(x)])
            if part:
                by_part.setdefault(part, []).append((body.x * width, body.y * height, max(body.radius * height, 1)))
        for part, centres in by_part.items():
            if len(centres) < 2:
                continue
            ys, xs = np.nonzero(self.labels == part)
            distance = np.stack([np.hypot(xs - x, ys - y) / r for x, y, r in centres])
            nearest = distance.argmin(axis=0)
            for k in range(1, len(centres)):
                self.labels[ys[nearest == k], xs[nearest == k]] = self.count
                self.count += 1
        self._measure()

    def split_by_heads(self) -> None:
        """Each part whose outline along the top rises into two heads or more divided between them, at the
        deepest point of the dip between each two (people side by side, shoulder to shoulder, as in a call):
        a dip counts when it is `HEAD_DIP` of the mask's height deep on both sides and each side's rise is a
        head's width (`HEAD_WIDTH` of the mask's) wide, not a raised hand."""
        height, width = self.labels.shape
        for part in np.flatnonzero(self.areas >= max(1.0, SPECK * height * width)):
            pixels = self.labels == part
            columns = pixels.any(axis=0)
            top = np.where(columns, height - pixels.argmax(axis=0), 0).astype(np.float32)  # the outline's height
            cuts = _dips(top, HEAD_DIP * height, max(1, round(HEAD_WIDTH * width)))
            for left, right in zip([0, *cuts], [*cuts, width], strict=True):
                if left > 0:  # the first side keeps the part's label
                    pixels[:, :left] = False
                    side = pixels.copy()
                    side[:, right:] = False
                    self.labels[side] = self.count
                    self.count += 1
        self._measure()

    def _measure(self) -> None:
        """Each part's area and centre, again, after a split."""
        width = self.labels.shape[1]
        flat = self.labels.ravel()
        self.areas = np.bincount(flat, minlength=self.count).astype(np.int64)
        self.areas[0] = 0
        rows, cols = np.divmod(np.arange(flat.size), width)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.centres = np.stack(
                [np.bincount(flat, cols, self.count) / self.areas, np.bincount(flat, rows, self.count) / self.areas], 1
            )


def keep_subject(
    mask: torch.Tensor, choice: Subject, state: SubjectState, people: People | None = None
) -> tuple[torch.Tensor, SubjectState]:
    """The (1,1,h,w) mask with everyone but the chosen subject set to 0, and the state for the next frame;
    `people` tells touching people apart when it is given. The parts are found on every `STEP`-th pixel each
    way (people are large; OpenCV's labelling took 1 ms at 240x320), and the kept pixels scaled back."""
    if choice == "all":
        return mask, SubjectState()
    step = STEP if mask.shape[-2] >= 2 * MIN_ROWS else 1
    binary = (mask[0, 0, ::step, ::step] >= PERSON).to(torch.uint8).cpu().numpy()
    height = binary.shape[0]
    if state.choice != choice or (state.kept is not None and state.kept.shape != binary.shape):
        state = SubjectState(choice)
    parts = _Parts(binary)
    keep: np.ndarray | None
    if state.kept is None or state.absent >= REACQUIRE:
        if parts.count > 1:
            parts.split_by_heads()
        if people is not None and parts.count > 1:
            parts.split_by(people())
        picked = _pick(choice if state.kept is None else "main", parts)
        if picked is None:
            return torch.zeros_like(mask), SubjectState(choice, None, None, 0.0, state.absent + 1)
        keep = _with_pieces(parts, picked, max(1, round(REACH * height)))
        usual = float(keep.sum())
    else:
        reach = _grow(state.kept, max(1, round(REACH * height)))
        keep = _within(parts, reach)
        if keep is None:  # away (or unseen by the model this frame): keep what is where they were
            held = _shown(reach, mask)
            return mask * held, SubjectState(choice, state.kept, state.others, state.usual, state.absent + 1)
        if state.others is not None and (keep & state.others).any():  # joined by someone: each keeps their side
            keep &= _nearer(state.kept, state.others)
        if keep.sum() > GROWTH * state.usual and people is not None:  # someone joined them: split
            parts.split_by(people())
            keep = _within(parts, reach)
        if keep is None or keep.sum() > GROWTH * state.usual:
            keep = (keep if keep is not None else parts.labels > 0) & reach
        usual = state.usual + USUAL * (float(keep.sum()) - state.usual)
    shown = _shown(_grow(keep, FRINGE), mask)
    # Everyone else, as far as they are people (a quarter of the subject's size): the model's specks are not
    # someone whose side a moving subject must leave alone.
    others = (parts.areas >= OTHERS * usual)[parts.labels] & ~keep
    return mask * shown, SubjectState(choice, keep, others, usual, 0)


def _shown(pixels: np.ndarray, mask: torch.Tensor) -> torch.Tensor:
    """(h',w') bool pixels on the parts' grid as a (1,1,h,w) 0/1 tensor like `mask` (nearest neighbour)."""
    height, width = mask.shape[-2:]
    if pixels.shape != (height, width):
        pixels = cv2.resize(pixels.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(pixels.astype(bool)).to(mask.device)[None, None]


def _nearer(kept: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The pixels nearer to `kept` than to `others` (both bool, non-empty)."""
    to_kept = cv2.distanceTransform((~kept).astype(np.uint8), cv2.DIST_L2, 3)
    to_others = cv2.distanceTransform((~others).astype(np.uint8), cv2.DIST_L2, 3)
    return to_kept <= to_others


def _with_pieces(parts: _Parts, picked: int, reach: int) -> np.ndarray:
    """The picked part's pixels, and those of the smaller parts within `reach` of it (a hand or a lock of
    hair the threshold cut off): anything under `OTHERS` of its size is not someone else."""
    keep = parts.labels == picked
    near = np.bincount(parts.labels[_grow(keep, reach)], minlength=parts.count)
    pieces = (near > 0) & (parts.areas < OTHERS * parts.areas[picked])
    pieces[0] = False
    return keep | pieces[parts.labels] if pieces.any() else keep


def _within(parts: _Parts, reach: np.ndarray) -> np.ndarray | None:
    """The pixels of the parts that lie mostly within `reach`, and of the one most within it; None if none is."""
    inside = np.bincount(parts.labels[reach], minlength=parts.count)
    inside[0] = 0
    if not inside.any():
        return None
    wanted = inside * 2 >= parts.areas
    wanted[int(inside.argmax())] = True
    wanted[0] = False
    return wanted[parts.labels]


def _pick(choice: Subject, parts: _Parts) -> int | None:
    """The label of the part the choice means, or None when there is nobody."""
    labels, areas = parts.labels, parts.areas
    height, width = labels.shape
    people = np.flatnonzero(areas >= max(1.0, SPECK * height * width))
    if len(people) == 0:
        return None
    if isinstance(choice, SubjectPoint):
        x, y = min(int(choice.x * width), width - 1), min(int(choice.y * height), height - 1)
        if labels[y, x] in people:
            return int(labels[y, x])
        # The nearest person to the point: each part's closest pixel.
        ys, xs = np.nonzero(np.isin(labels, people))
        distance = (ys - y) ** 2 + (xs - x) ** 2
        nearest = np.full(len(areas), np.inf)
        np.minimum.at(nearest, labels[ys, xs].astype(np.intp), distance)
        return int(nearest.argmin())
    # "main": the largest part, counted less the further its centre lies from the frame's.
    offsets = (parts.centres[people] - [width / 2, height / 2]) / [width / 2, height / 2]
    distance = np.minimum(1.0, np.hypot(offsets[:, 0], offsets[:, 1]) / np.sqrt(2))
    return int(people[np.argmax(areas[people] * (1.0 - CENTRE_WEIGHT * distance))])


def _dips(profile: np.ndarray, depth: float, width: int) -> list[int]:
    """The columns where a profile (an outline's height per column) dips at least `depth` below a rise on
    either side that is `width` columns wide at half that depth: the deepest column of each dip, in order."""
    smooth = np.convolve(profile, np.ones(5, np.float32) / 5, mode="same")
    left, right = np.maximum.accumulate(smooth), np.maximum.accumulate(smooth[::-1])[::-1]
    below = np.minimum(left, right) - smooth
    cuts: list[int] = []
    start = None
    for x in range(len(smooth) + 1):
        if x < len(smooth) and below[x] >= depth:
            start = x if start is None else start
            continue
        if start is not None:
            cut = start + int(below[start:x].argmax())
            level = smooth[cut] + depth / 2
            before = smooth[cuts[-1] if cuts else 0 : cut]
            after = smooth[cut:]
            if (before >= level).sum() >= width and (after >= level).sum() >= width:
                cuts.append(cut)
            start = None
    return cuts


def _grow(pixels: np.ndarray, radius: int) -> np.ndarray:
    """`pixels` (bool) dilated by a square of `radius` pixels each way."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(pixels.astype(np.uint8), kernel).astype(bool)
