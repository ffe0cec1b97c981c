"""Segmentation: the models a pipeline has loaded (compiled and in the precision its device wants), and
person probabilities for a batch of frames at each model's input size."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from models.wrappers import CompiledOnCPU
from models.zoo import ModelRegistry, Network, Plan, check_precision, default_device

from .config import Subject
from .detect import Box, bodies, body_box, detect
from .filters import resize_bilinear
from .frames import DeviceFrame
from .region import (
    MARGIN,
    REDETECT_EVERY,
    Region,
    TrackingState,
    canvas_size,
    follow,
    paste,
    person_box,
    reaches_edge,
    region_around,
    touches_edge,
)
from .subject import Body, SubjectState, keep_subject


class ModelCache:
    """Loads each model once, on first use, for one device; compiles it on CPUs when asked to."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: torch.device | str | None = None,
        half: bool | None = None,
        compile: bool = False,
    ) -> None:
        self.registry = registry
        self.device = torch.device(device) if device is not None else default_device()
        self.half = self.device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        check_precision(self.device, self.dtype)
        # torch.compile of the models, frame by frame, on CPU devices only (see models/wrappers/compiled.py).
        self.compile = compile and self.device.type == "cpu"
        self._models: dict[str, nn.Module] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> nn.Module:
        """The loaded network for `name` (loaded on first use); a policy's is the one for its regions."""
        return self.segmenter(self.registry.plan(name).region)

    def segmenter(self, network: Network) -> nn.Module:
        """The loaded segmenter `network` (loaded, and with `compile` compiled, on first use)."""
        with self._lock:
            if network.name not in self._models:
                model = self.registry.load(network.name, self.device, self.dtype)
                if self.compile and any(True for _ in model.parameters()):  # not ONNX Runtime models
                    model = CompiledOnCPU(model, network.input_size)
                self._models[network.name] = model
            return self._models[network.name]

    def detector(self, network: Network) -> nn.Module:
        """The loaded person detector `network` (loaded on first use; always eager)."""
        with self._lock:
            if network.name not in self._models:
                self._models[network.name] = self.registry.load_detector(network.name, self.device, self.dtype)
            return self._models[network.name]

    def warm(self, name: str) -> nn.Module:
        """The networks `name` runs, loaded and, with `compile`, compiled before this returns (start-up,
        benchmarks); returns the one for its regions."""
        plan = self.registry.plan(name)
        for network in plan.networks:
            model = self.detector(network) if network.detector else self.segmenter(network)
            if isinstance(model, CompiledOnCPU):
                model.wait()
        return self.segmenter(plan.region)


_flushing = threading.local()


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Denormal floats (saturated sigmoids, far-from-person activations) take a slow path on x86 that made
    the model 1.6x slower. The flag is per thread and is put back after, so that a caller's own thread
    (a tool, a test) keeps IEEE arithmetic."""
    depth = getattr(_flushing, "depth", 0)
    _flushing.depth = depth + 1
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        _flushing.depth = depth
        if depth == 0:  # nested uses (a benchmark around the pipeline) keep it on until the outermost ends
            torch.set_flush_denormal(False)


def infer(models: ModelCache, inputs: list[torch.Tensor], networks: list[Network]) -> list[torch.Tensor]:
    """Person probabilities (1,1,h,w) of inputs already at their network's size ((1,3,h,w), values 0..255),
    one batch per network."""
    by_network: dict[Network, list[int]] = {}
    for i, network in enumerate(networks):
        by_network.setdefault(network, []).append(i)
    masks: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
    for network, indices in by_network.items():
        model = models.segmenter(network)
        pictures = [inputs[i] for i in indices]
        # uint8 divided into a new float tensor in one pass (a copy to float, then a division, took two).
        batch = torch.div(pictures[0] if len(pictures) == 1 else torch.cat(pictures), 255.0).to(models.dtype)
        # The pictures come channels-last. PyTorch ports take plain NCHW (their channels-last weights make
        # the first convolution switch layout, fused into the first kernel of a compiled model); a model
        # that reads NHWC (LiteRT) says so, and is spared two copies (0.6 against 0.09 ms at 256x256).
        layout = getattr(model, "input_layout", torch.contiguous_format)
        probabilities = model(batch.contiguous(memory_format=layout))
        for j, i in enumerate(indices):
            masks[i] = probabilities[j : j + 1]
    return masks


def segment(models: ModelCache, pictures: list[DeviceFrame], plans: list[Plan]) -> list[torch.Tensor]:
    """Low-resolution person probabilities (1,1,h,w) of frames at each network's size, by the network each
    plan runs on whole frames.

    The frames are stretched to the network's input size, as the models were trained.
    """
    return _whole_frames(models, pictures, [p.whole_frame for p in plans])


def _whole_frames(models: ModelCache, pictures: list[DeviceFrame], networks: list[Network]) -> list[torch.Tensor]:
    inputs = [p.rgb_at(n.input_size) for p, n in zip(pictures, networks, strict=True)]
    return infer(models, inputs, networks)


@dataclass(eq=False)  # compared by identity
class _Stream:
    """One stream in `segment_regions`: its frame and plan, and its tracking as it moves on."""

    picture: DeviceFrame
    plan: Plan
    region: Region | None
    since_detect: int
    close_up: bool
    choice: Subject
    subject: SubjectState
    mask: torch.Tensor | None = None  # on the canvas, once a pass made it

    @property
    def frame(self) -> tuple[int, int]:
        return self.picture.size

    @property
    def canvas(self) -> tuple[int, int]:
        return canvas_size(self.frame)

    def around(self, box: Box | None) -> Region | None:
        """The region of the plan's aspect around a person's box (fractions of the frame), if any."""
        return None if box is None else region_around(box, self.frame, self.plan.aspect, self.plan.square)

    def chosen(self, mask: torch.Tensor, models: ModelCache) -> torch.Tensor:
        """The mask with only the stream's subject kept (see subject.py): what the region follows."""
        mask, self.subject = keep_subject(mask, self.choice, self.subject, partial(find_people, models, self.picture))
        return mask

    @property
    def one_person(self) -> bool:
        """Whether the region follows one chosen person rather than everyone."""
        return self.choice != "all"

    def tracked(self) -> Region:
        if self.region is None:
            raise RuntimeError("a tracked stream lost its region")
        return self.region


def segment_regions(
    models: ModelCache,
    pictures: list[DeviceFrame],
    plans: list[Plan],
    states: list[TrackingState],
    choices: list[Subject] | None = None,
) -> tuple[list[torch.Tensor], list[TrackingState]]:
    """Person probabilities on a canvas of each frame (see region.canvas_size), segmented in the region
    each stream tracks, and the streams' tracking moved on. With a `choices` entry other than "all", only
    that stream's chosen person stays in its mask, and its region follows them alone."""
    choices = choices or ["all"] * len(pictures)
    # A new choice of subject looks at the whole frame again: the region may hold someone else, or not everyone.
    states = [s if s.subject.choice == c else TrackingState() for s, c in zip(states, choices, strict=True)]
    streams = [
        _Stream(p, plan, s.region, s.since_detect + 1, s.close_up, choice, s.subject)
        for p, plan, s, choice in zip(pictures, plans, states, choices, strict=True)
    ]
    # Whole-frame passes that find people: streams with nobody yet, and, now and then, the others (a
    # newcomer). A close-up is not looked for every frame: its whole-frame masks show when it steps back.
    detect = [s for s in streams if (s.region is None and not s.close_up) or s.since_detect >= REDETECT_EVERY]
    detected = set(detect)
    if detect:
        boxes, found = _find(models, [s.picture for s in detect], [s.plan.finder for s in detect])
        for s, box, mask in zip(detect, boxes, found, strict=True):
            if s.one_person and s.region is not None:  # it follows its subject, not whoever else is there
                s.since_detect = 0
                continue
            if s.one_person and mask is not None:  # a segmenter found them: the region goes round the chosen one
                mask = s.chosen(resize_bilinear(mask.float(), s.canvas), models)
                box = person_box(mask)
            target = s.around(box)
            if s.region is not None and target is not None:  # while tracking: cover a newcomer too
                target = _union(s.region, target, s.frame, s.plan.square)
            s.region, s.since_detect, s.close_up = target, 0, box is not None and target is None
            if target is None and mask is not None and s.plan.whole_frame == s.plan.finder:
                s.mask = resize_bilinear(mask.float(), s.canvas) if not s.one_person else mask
    # No region (a close-up, nobody): the whole frame, by the network for that when the finder is another.
    rest = [s for s in streams if s.region is None and s.mask is None]
    if rest:
        wholes = _whole_frames(models, [s.picture for s in rest], [s.plan.whole_frame for s in rest])
        for s, whole in zip(rest, wholes, strict=True):
            s.mask = s.chosen(resize_bilinear(whole.float(), s.canvas), models)
            if s.close_up and s not in detected:  # someone who stepped back is tracked from here on
                box = person_box(s.mask)
                s.region = s.around(box)
                s.close_up = box is not None and s.region is None  # nobody left: look for people again
    # Region passes.
    tracked = [s for s in streams if s.region is not None and s.mask is None]
    if tracked:
        inputs = [s.picture.rgb_in(s.tracked().box(), s.plan.region.input_size) for s in tracked]
        segmented = infer(models, inputs, [s.plan.region for s in tracked])
        for s, probabilities in zip(tracked, segmented, strict=True):
            region = s.tracked()
            s.mask = s.chosen(paste(probabilities, region, s.frame, s.canvas), models)
            target = s.around(person_box(s.mask))
            # Someone else cut by the crop's border does not make it grow: only the subject's own edge.
            edge = (
                reaches_edge(s.mask, region, s.frame) if s.one_person else touches_edge(probabilities, region, s.frame)
            )
            s.region = follow(region, target, edge)
    masks = [s.mask for s in streams if s.mask is not None]
    return masks, [
        TrackingState(s.region, s.since_detect, s.close_up, s.subject, s.region != state.region)
        for s, state in zip(streams, states, strict=True)
    ]


def find_people(models: ModelCache, picture: DeviceFrame) -> list[Body]:
    """Everyone the person detector finds on a frame, once each."""
    network = models.registry.people_detector()
    return bodies(detect(models.detector(network), picture, network.input_size[0], models.dtype), picture.size)


def _find(
    models: ModelCache, pictures: list[DeviceFrame], finders: list[Network]
) -> tuple[list[Box | None], list[torch.Tensor | None]]:
    """Whole-frame passes: the box around the people in each frame, and the finder's mask where the finder
    is a segmenter (a detector gives none)."""
    boxes: list[Box | None] = [None] * len(pictures)
    masks: list[torch.Tensor | None] = [None] * len(pictures)
    by_finder: dict[Network, list[int]] = {}
    for i, finder in enumerate(finders):
        by_finder.setdefault(finder, []).append(i)
    for finder, indices in by_finder.items():
        if finder.detector:
            detector = models.detector(finder)
            for i in indices:
                points = detect(detector, pictures[i], finder.input_size[0], models.dtype)
                boxes[i] = body_box(points, pictures[i].size)
        else:
            found = _whole_frames(models, [pictures[i] for i in indices], [finder] * len(indices))
            for i, mask in zip(indices, found, strict=True):
                boxes[i], masks[i] = person_box(mask), mask
    return boxes, masks


def _union(a: Region, b: Region, frame: tuple[int, int], square: bool) -> Region | None:
    """The region covering both, or None if that is most of the frame."""
    boxes = [r.box() for r in (a, b)]
    top, bottom = min(x[0] for x in boxes), max(x[1] for x in boxes)
    left, right = min(x[2] for x in boxes), max(x[3] for x in boxes)
    # region_around adds its margin again: give it the union without one
    inner_h, inner_w = (bottom - top) / (1 + 2 * MARGIN), (right - left) / (1 + 2 * MARGIN)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    h, w = frame
    box = ((cy - inner_h / 2) / h, (cy + inner_h / 2) / h, (cx - inner_w / 2) / w, (cx + inner_w / 2) / w)
    return region_around(box, frame, a.aspect, square)
