"""The pipeline: the steps a frame goes through, in order, for a batch of frames of many streams.

upload -> model (keeping the chosen subject) -> smoothing (along the motion) -> refine -> composite -> download,
on the frame's Y, U and V planes from end to end (RGB only at the models' input size). Each stream's state comes in with
its frame and goes out with the result (nothing is kept here between frames), so one `Pipeline` per
process serves every stream, from several worker threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

import numpy as np
import torch

from models.zoo import ModelRegistry, Plan

from .backgrounds import BackgroundStore
from .composite import compose
from .config import SessionConfig
from .filters import boundary
from .frames import DeviceFrame, Frame, Masked, Processed, StreamState, download, planes_of
from .motion import flow, positions, reproduces, warp
from .refine import upsample_mask
from .segment import ModelCache, denormals_flushed, find_people, segment, segment_regions
from .smoothing import SmoothingState, smooth_mask
from .subject import keep_subject
from .timing import StageClock, StageTimes
from .yuv import Planes

_T = TypeVar("_T")


@dataclass
class _Work:
    """One frame on its way through the steps: made as it enters (its plan resolved, its planes uploaded);
    each step fills in what the next one reads."""

    frame: Frame
    plan: Plan  # what frame.config.model runs, resolved once
    state: StreamState
    picture: DeviceFrame  # the frame's planes on the device
    mask: torch.Tensor | None = None  # (1,1,h,w) at the model's size, then (1,1,H,W) after `refine`
    motion: _Motion | None = None  # the flow from this frame back to the last, once a step needed it
    propagated: bool = False  # the mask is the last one moved along the flow: the model did not run
    result: tuple[torch.Tensor, torch.Tensor] | None = None  # Y and UV: the frame as the session's mode shows it
    output: Planes | None = None  # the result on the CPU


Step = Callable[["Pipeline", list[_Work]], None]

UNTRUSTED_EDGE = 0.1  # keyframes: the model runs when more of the mask's edge than this fails the flow check


@dataclass(frozen=True)
class _Motion:
    """The flow from a frame back to the stream's last, at mask size, and where it checks out."""

    now: np.ndarray  # this frame's luma at mask size
    backward: np.ndarray  # (h,w,2): the flow to the last frame
    where: np.ndarray  # (h,w,2): each pixel's position plus the flow, where warping reads (motion.positions)
    tracked: torch.Tensor  # (1,1,h,w) bool: pixels the last frame, moved along the flow, reproduces


def _motion(w: _Work, size: tuple[int, int]) -> _Motion | None:
    """The motion of `w`'s frame since its stream's last, at `size`; None when there is no last frame to
    compare with (a new stream, another size or model)."""
    if w.motion is None or w.motion.now.shape != size:
        last = w.state.smoothing
        before = last.grey
        if last.key != (w.picture.size, w.plan.name) or before is None or before.shape != size:
            return None
        now = w.picture.luma_at(size)
        backward = flow(now, before)
        where = positions(backward)
        tracked = torch.from_numpy(reproduces(now, before, backward, where=where))[None, None]
        w.motion = _Motion(now, backward, where, tracked)
    return w.motion


def _propagates(w: _Work) -> bool:
    """Whether the stream's last mask, moved along the flow, can stand for the model's on this frame
    (config.keyframes): the model ran recently enough, nothing in the config changed, the tracked region
    has settled, and the flow checks out on the mask's edge, where a wrong move would show."""
    config, last = w.frame.config, w.state.smoothing
    if config.keyframes <= 0 or last.mask is None or last.since_model + 1 >= config.keyframes:
        return False
    if last.config != config or w.state.tracking.moved:  # a new config, or a region still settling
        return False
    motion = _motion(w, (last.mask.shape[-2], last.mask.shape[-1]))
    if motion is None:
        return False
    # Counted in NumPy on the CPU, where the flow and its check are: torch's reductions and the copy of the
    # check to the mask's device took 0.34 against 0.14 ms a frame at 320x240.
    edge = _edge(last.mask).cpu().numpy()
    edges = np.count_nonzero(edge)
    if not edges:
        return True  # nobody on the last frame: a newcomer waits for the model's next run at most
    untrusted = np.count_nonzero(edge & ~motion.tracked.numpy())
    return bool(untrusted <= UNTRUSTED_EDGE * edges)


def _edge(mask: torch.Tensor) -> torch.Tensor:
    """(1,1,h,w) bool: the pixels within 2 px of the mask's person boundary (p = 0.5)."""
    return boundary(mask >= 0.5, 2)


def _segment(pipeline: Pipeline, work: list[_Work]) -> None:
    for w in work:
        if _propagates(w):
            last, motion = w.state.smoothing, _ready(w.motion)
            w.mask, w.propagated = warp(_ready(last.mask), motion.backward, where=motion.where), True
    work = [w for w in work if not w.propagated]
    whole = [w for w in work if not w.frame.config.region]
    masks = segment(pipeline.models, [w.picture for w in whole], [w.plan for w in whole])
    for w, mask in zip(whole, masks, strict=True):
        people = partial(find_people, pipeline.models, w.picture)
        w.mask, subject = keep_subject(mask, w.frame.config.subject, w.state.tracking.subject, people)
        w.state = replace(w.state, tracking=replace(w.state.tracking, subject=subject))
    tracked = [w for w in work if w.frame.config.region]
    if tracked:
        pictures, plans = [w.picture for w in tracked], [w.plan for w in tracked]
        states, choices = [w.state.tracking for w in tracked], [w.frame.config.subject for w in tracked]
        masks, states = segment_regions(pipeline.models, pictures, plans, states, choices)
        for w, mask, tracking in zip(tracked, masks, states, strict=True):
            w.mask, w.state = mask, replace(w.state, tracking=tracking)


def _smooth(pipeline: Pipeline, work: list[_Work]) -> None:
    for w in work:
        config, picture, last = w.frame.config, w.picture, w.state.smoothing
        key = (picture.size, w.plan.name)
        current = _ready(w.mask).float()
        size = (current.shape[-2], current.shape[-1])
        since_model = last.since_model + 1 if w.propagated else 0
        if w.propagated:  # the last mask, moved: smoothing it against itself would change nothing
            w.state = replace(
                w.state, smoothing=SmoothingState(current, key, _ready(w.motion).now, since_model, config)
            )
            continue
        previous = last.mask if last.key == key else None
        wants_motion = config.motion and (config.smoothing > 0 or config.keyframes > 0)
        motion = _motion(w, size) if wants_motion and previous is not None else None
        tracked = None
        if motion is not None and previous is not None and config.smoothing > 0:
            # The previous mask moved to where the person is now: the blend no longer leans on where they were.
            previous = warp(previous, motion.backward, where=motion.where)
            tracked = motion.tracked.to(previous.device)
        w.mask = smooth_mask(previous, current, config.smoothing, tracked)
        now = motion.now if motion is not None else picture.luma_at(size) if wants_motion else None
        w.state = replace(w.state, smoothing=SmoothingState(w.mask, key, now, since_model, config))


def _refine(pipeline: Pipeline, work: list[_Work]) -> None:
    for w in work:
        w.mask = upsample_mask(_ready(w.mask), w.picture.y, w.frame.config.refine)


def _composite(pipeline: Pipeline, work: list[_Work]) -> None:
    for w in work:
        y, uv = w.picture.y, w.picture.uv
        w.result, background = compose(y, uv, _ready(w.mask), w.state.background, w.frame.config, pipeline.backgrounds)
        w.state = replace(w.state, background=background)


def _download(pipeline: Pipeline, work: list[_Work]) -> None:
    for w in work:
        y, uv = _ready(w.result)
        w.output = download(y, uv)


# The steps after "upload" (which makes the work as the frames enter).
MASK_STEPS: tuple[tuple[str, Step], ...] = (
    ("model", _segment),
    ("smoothing", _smooth),
    ("refine", _refine),
)
STEPS: tuple[tuple[str, Step], ...] = (*MASK_STEPS, ("composite", _composite), ("download", _download))


def _ready(value: _T | None) -> _T:
    """What an earlier step wrote; a step running out of order is a bug, not bad input."""
    if value is None:
        raise RuntimeError("pipeline steps ran out of order")
    return value


class Pipeline:
    """Segments and composites batches of frames (planes, or RGB uint8) on one device."""

    def __init__(
        self,
        device: torch.device | str | None = None,
        half: bool | None = None,
        compile: bool = False,
        backgrounds: BackgroundStore | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.models = ModelCache(registry or ModelRegistry(), device, half, compile)
        self.backgrounds = backgrounds or BackgroundStore()

    @property
    def registry(self) -> ModelRegistry:
        return self.models.registry

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def half(self) -> bool:
        return self.models.half

    @property
    def compile(self) -> bool:
        return self.models.compile

    def warm(self, name: str) -> None:
        """Load (and compile) a model now rather than on the first frame that asks for it."""
        self.models.warm(name)

    @torch.inference_mode()
    def process(self, frames: Sequence[Frame], times: StageTimes | None = None) -> list[Processed]:
        """One frame of each stream, any size each, back at its size; mode "none" passes the frame through."""
        work = self._run(STEPS, [f for f in frames if f.config.mode != "none"], times)
        done = iter(work)
        return [Processed(f.pixels, f.state) if f.config.mode == "none" else _processed(next(done)) for f in frames]

    def process_one(self, pixels: Planes | np.ndarray, state: StreamState, config: SessionConfig) -> Processed:
        return self.process([Frame(pixels, state, config)])[0]

    @torch.inference_mode()
    def masks(self, frames: Sequence[Frame]) -> list[Masked]:
        """Full-resolution person probabilities (H,W) in [0,1], smoothed and refined as each config says."""
        work = self._run(MASK_STEPS, frames, None)
        return [Masked(_ready(w.mask)[0, 0], w.state) for w in work]

    def _run(
        self, steps: tuple[tuple[str, Step], ...], frames: Sequence[Frame], times: StageTimes | None
    ) -> list[_Work]:
        with denormals_flushed():
            clock = StageClock(self.device, times)
            work = [_Work(f, f.plan or self.registry.plan(f.config.model), f.state, self._upload(f)) for f in frames]
            clock.lap("upload")
            for stage, step in steps:
                if work:
                    step(self, work)
                clock.lap(stage)
        return work

    def _upload(self, frame: Frame) -> DeviceFrame:
        return DeviceFrame(planes_of(frame.pixels), self.device)


def _processed(work: _Work) -> Processed:
    return Processed(_ready(work.output), work.state)
