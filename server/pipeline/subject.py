"""Subject selection: only the chosen person stays in the mask; everyone else becomes background.

The mask's people are split into connected parts (p >= 0.5, 8-connected). The subject is picked once:
the part under a point (the nearest part when the point misses), or for "main" the largest part near the
frame's centre. From then on it is followed: each frame keeps the parts that lie mostly within reach of
where the subject was on the last frame (grown by how far a person moves between frames), so a limb that
comes apart stays and a bystander does not. A part that suddenly grows well beyond the subject's last
size (someone touching or crossing them) is cut back to that reach. When no part is within reach, the
subject is away: what is left within reach stays (a flicker of the model does not blank them) and nobody
else is shown; after `REACQUIRE` frames away, the subject is picked again by the "main" rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .config import Subject, SubjectPoint

PERSON = 0.5  # probability from which a pixel belongs to a person
REACH = 0.05  # how far a subject may move between frames, as a fraction of the mask's height
GROWTH = 1.6  # a kept part larger than this times the subject's last area is cut back to the reach
SPECK = 0.002  # parts smaller than this share of the mask are nobody, when picking
CENTRE_WEIGHT = 0.75  # "main": a part's area counts less by this much at the frame's corners
FRINGE = 2  # pixels of soft edge kept around the kept parts (the mask's ramp below PERSON)
REACQUIRE = 15  # frames (0.5 s at 30 fps) a subject may be away before someone is picked again


@dataclass(frozen=True)
class SubjectState:
    """What subject selection keeps of a stream: who was chosen, and where they were on the last frame."""

    choice: Subject = "all"  # the config's subject this was picked for: a new choice picks again
    kept: np.ndarray | None = None  # (h,w) bool: the subject's pixels on the last frame they were seen
    area: int = 0  # their number
    absent: int = 0  # frames since they were last seen


def keep_subject(mask: torch.Tensor, choice: Subject, state: SubjectState) -> tuple[torch.Tensor, SubjectState]:
    """The (1,1,h,w) mask with everyone but the chosen subject set to 0, and the state for the next frame."""
    if choice == "all":
        return mask, SubjectState()
    height, width = mask.shape[-2:]
    if state.choice != choice or (state.kept is not None and state.kept.shape != (height, width)):
        state = SubjectState(choice)
    binary = (mask[0, 0] >= PERSON).to(torch.uint8).cpu().numpy()
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    areas[0] = 0  # the background
    if state.kept is None or state.absent >= REACQUIRE:
        picked = _pick(choice if state.kept is None else "main", labels, areas, centroids)
        if picked is None:
            return torch.zeros_like(mask), SubjectState(choice, None, 0, state.absent + 1)
        keep = labels == picked
    else:
        reach = _grow(state.kept, max(1, round(REACH * height)))
        inside = np.bincount(labels[reach], minlength=count)
        inside[0] = 0
        if not inside.any():  # away (or unseen by the model this frame): keep what is where they were
            held = torch.from_numpy(reach).to(mask.device)[None, None]
            return mask * held, SubjectState(choice, state.kept, state.area, state.absent + 1)
        wanted = inside * 2 >= areas
        wanted[int(inside.argmax())] = True
        wanted[0] = False
        keep = wanted[labels]
        if keep.sum() > GROWTH * max(state.area, 1):
            keep &= reach
    area = int(keep.sum())
    shown = torch.from_numpy(_grow(keep, FRINGE)).to(mask.device)[None, None]
    return mask * shown, SubjectState(choice, keep, area, 0)


def _pick(choice: Subject, labels: np.ndarray, areas: np.ndarray, centroids: np.ndarray) -> int | None:
    """The label of the part the choice means, or None when there is nobody."""
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
        np.minimum.at(nearest, labels[ys, xs], distance)
        return int(nearest.argmin())
    # "main": the largest part, counted less the further its centre lies from the frame's.
    offsets = (centroids[people] - [width / 2, height / 2]) / [width / 2, height / 2]
    distance = np.minimum(1.0, np.hypot(offsets[:, 0], offsets[:, 1]) / np.sqrt(2))
    return int(people[np.argmax(areas[people] * (1.0 - CENTRE_WEIGHT * distance))])


def _grow(pixels: np.ndarray, radius: int) -> np.ndarray:
    """`pixels` (bool) dilated by a square of `radius` pixels each way."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(pixels.astype(np.uint8), kernel).astype(bool)
