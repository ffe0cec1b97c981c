"""Accuracy on a labelled folder, on frame sequences, and flicker and warping error on videos, through the
serving pipeline (so the figures are what users see: the same resizing, tracking, smoothing, refinement)."""

from __future__ import annotations

import heapq
from pathlib import Path
from statistics import mean

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.images import read_image
from models.labelled import labelled_pairs, split_pairs
from models.training.metrics import boundary_f, flicker, iou

from ..files.media import read_video, video_info
from ..pipeline.backgrounds import BackgroundState, BackgroundStore
from ..pipeline.composite import compose
from ..pipeline.config import SessionConfig, Subject, SubjectPoint
from ..pipeline.frames import DeviceFrame, Frame, StreamState, download, planes_of
from ..pipeline.motion import consistent, flow, grey, warp
from ..pipeline.pipeline import Pipeline
from ..pipeline.region import canvas_size
from .gallery import Case, write_gallery


class WarpingError:
    """Temporal error of a mask video (Lai et al., ECCV 2018): the mean over frames of mean |m_t - W(m_t-1)|
    over the pixels whose flow passes a forward-backward check, W moving the previous mask along the flow.
    A mask that flickers scores badly, and so does one that trails behind the motion."""

    def __init__(self) -> None:
        self.previous: tuple[np.ndarray, torch.Tensor] | None = None
        self.values: list[float] = []

    def add(self, image: np.ndarray, mask: torch.Tensor) -> None:
        """The next frame (H,W,3) uint8 and its final mask (H,W) in [0,1]; compared at 320 px at most."""
        size = canvas_size((image.shape[0], image.shape[1]))
        now = grey(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), size)
        small = F.interpolate(mask.float().cpu()[None, None], size=size, mode="area")
        if self.previous is not None:
            before, previous = self.previous
            backward = flow(now, before)
            valid = torch.from_numpy(consistent(backward, flow(before, now)))
            if valid.any():
                self.values.append((small - warp(previous, backward))[0, 0].abs()[valid].mean().item())
        self.previous = (now, small)

    @property
    def value(self) -> float:
        return mean(self.values) if self.values else 0.0


# The colour the edge error composites over: a saturated magenta, far from skin, hair, clothes and walls, so
# that any of the old background left at the edge counts (colour mode's default green hides more of it: the
# same masks measured about 2/3 of the error over #00b140).
EDGE_COLOR = "#ff00ff"


def edge_band(truth: np.ndarray, band: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels within `band` px of the true boundary of `truth` ((H,W) bool, True = person), as its outer
    half (truly background: at most `band` px from the nearest person pixel) and its inner half (truly person:
    at most `band` px from the nearest background pixel); the frame's border is no boundary."""
    person = truth.astype(np.uint8)
    if not person.any() or person.all():
        empty = np.zeros_like(truth, dtype=bool)
        return empty, empty
    to_person = cv2.distanceTransform(1 - person, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_background = cv2.distanceTransform(person, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (person == 0) & (to_person <= band), (person == 1) & (to_background <= band)


def edge_errors(seen: np.ndarray, expected: np.ndarray, truth: np.ndarray, band: int) -> tuple[float, float, float]:
    """Mean absolute RGB error (0-255) of the composite `seen` against `expected` ((H,W,3) uint8, the frame
    composited with the true mask `truth`) over the band of +-`band` px around the true boundary: overall,
    its outer half (truly background) and its inner half (truly person); NaN where a part is empty."""
    error = np.abs(seen.astype(np.int16) - expected.astype(np.int16)).mean(axis=2)
    outer, inner = edge_band(truth, band)

    def over(part: np.ndarray) -> float:
        return float(error[part].mean()) if part.any() else float("nan")

    return over(outer | inner), over(outer), over(inner)


def _mean_of_numbers(values: list[float]) -> float:
    """The mean of the values that are not NaN (an image with no boundary has no band); NaN if none is."""
    numbers = [v for v in values if not np.isnan(v)]
    return mean(numbers) if numbers else float("nan")


def composite_errors(
    image: np.ndarray,
    probability: torch.Tensor,
    truth: np.ndarray,
    config: SessionConfig,
    backgrounds: BackgroundStore,
    band: int,
) -> tuple[float, float, float]:
    """The edge error of one image (H,W,3) uint8 and its mask `probability` (H,W) in [0,1] (on the device the
    image is composited on) against the true mask `truth` (H,W) bool: both composited as a session in `config`
    composites (colour mode), compared by `edge_errors`."""
    seen = _composited(image, probability, config, backgrounds)
    expected = _composited(image, torch.from_numpy(truth).to(probability.device), config, backgrounds)
    return edge_errors(seen, expected, truth, band)


def _composited(
    image: np.ndarray, mask: torch.Tensor, config: SessionConfig, backgrounds: BackgroundStore
) -> np.ndarray:
    """`image` composited with `mask` through the session's compositing step, as RGB."""
    picture = DeviceFrame(planes_of(image), mask.device)
    (y, uv), _ = compose(picture.y, picture.uv, mask.float()[None, None], BackgroundState(), config, backgrounds)
    return download(y, uv).rgb()


def subject_for(spec: str, truth: np.ndarray) -> Subject:
    """The `subject` a run asks for: "all", "main", "x,y" (a point), or "click": a click on the labelled person,
    at the pixel of `truth` ((H,W) bool) deepest inside their mask (a person's first frame, for a sequence)."""
    if spec != "click":
        return SessionConfig(subject=spec).subject
    # The frame's border counts as background: a person cut by it is clicked inside what is seen of them.
    depth = cv2.distanceTransform(np.pad(truth.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    return SubjectPoint(x=(x + 0.5) / truth.shape[1], y=(y + 0.5) / truth.shape[0])


def evaluate_folder(
    pipeline: Pipeline,
    model: str,
    data: Path,
    refine: bool,
    gallery: Path | None = None,
    worst: int = 12,
    limit: int | None = None,
    progress: bool = True,
    holdout: float | None = None,
    region: bool = True,
    band: int = 6,
    edges: bool = True,
    color: str = EDGE_COLOR,
    subject: str = "all",
) -> dict:
    """Mean person IoU and boundary F over the folder (mask = p >= 0.5 at the image's own size);
    with `holdout`, over the part `train` held out of it.

    And the edge error, what a viewer sees at the edge: each image composited in colour mode over `EDGE_COLOR`
    as a session composites it (the refined mask, `edges` as the session config's), against the image
    composited over that colour with the true mask, mean absolute RGB error over the band of +-`band` px around
    the true boundary (see `edge_errors`), per image, then averaged."""
    config = SessionConfig(model=model, refine=refine, smoothing=0.0, mode="mask", region=region)
    shown = SessionConfig(
        model=model, refine=refine, smoothing=0.0, mode="color", color=color, region=region, edges=edges
    )
    pairs = labelled_pairs(data)
    if holdout is not None:
        pairs = split_pairs(pairs, holdout)[1]
    pairs = pairs[:limit]
    ious: list[float] = []
    fscores: list[float] = []
    errors: list[tuple[float, float, float]] = []
    cases: list[tuple[float, int, Case]] = []
    for index, (image_path, mask_path) in enumerate(tqdm(pairs, desc="evaluate", unit="img", disable=not progress)):
        image = read_image(image_path)
        truth = torch.from_numpy(read_image(mask_path, "L") >= 128)
        chosen = config if subject == "all" else config.updated({"subject": subject_for(subject, truth.numpy())})
        probability = pipeline.masks([Frame(image, StreamState(), chosen)])[0].mask
        prediction = probability.cpu() >= 0.5
        ious.append(iou(prediction, truth))
        fscores.append(boundary_f(prediction, truth))
        errors.append(composite_errors(image, probability, truth.numpy(), shown, pipeline.backgrounds, band))
        if gallery is not None:
            # Keep only the `worst` lowest-IoU cases in memory (a heap on -IoU).
            case = Case(image_path.stem, ious[-1], image, truth.numpy(), prediction.numpy())
            heapq.heappush(cases, (-case.iou, index, case))
            if len(cases) > worst:
                heapq.heappop(cases)
    if gallery is not None:
        write_gallery(sorted((c for _, _, c in cases), key=lambda c: c.iou), gallery)
    overall, outer, inner = (_mean_of_numbers([e[k] for e in errors]) for k in range(3))
    return {
        "model": model,
        "refine": refine,
        "region": region,
        "edges": edges,
        "subject": subject,
        "images": len(pairs),
        "mean_iou": mean(ious),
        "boundary_f": mean(fscores),
        "edge_error": overall,
        "edge_error_outer": outer,
        "edge_error_inner": inner,
        "edge_band": band,
        "edge_color": shown.color,
        "worst": sorted(zip(ious, [p[0].stem for p in pairs], strict=True))[: min(worst, len(pairs))],
    }


def _share(per: dict[str, dict]) -> float:
    """The share of frames the model ran on, over every sequence."""
    return sum(p["model_runs"] for p in per.values()) / max(1, sum(p["frames"] for p in per.values()))


def is_sequence_folder(data: Path) -> bool:
    """A folder of frame sequences: SEQ/images/*.jpg + SEQ/masks/*.png, one folder a sequence."""
    return not (data / "images").is_dir() and any((d / "images").is_dir() for d in data.iterdir())


def evaluate_sequences(
    pipeline: Pipeline,
    model: str,
    data: Path,
    refine: bool,
    smoothing: float,
    region: bool = True,
    gallery: Path | None = None,
    worst: int = 12,
    limit: int | None = None,
    progress: bool = True,
    motion: bool = True,
    subject: str = "all",
    keyframes: int = 0,
) -> dict:
    """IoU and boundary F per sequence and overall (the mean of the sequences'), each sequence's frames in
    order through one stream, so that region tracking and smoothing are part of what is measured; `subject`
    (see `subject_for`) is read on each sequence's first frame, then followed as a session follows it."""
    config = SessionConfig(
        model=model, refine=refine, smoothing=smoothing, mode="mask", region=region, motion=motion, keyframes=keyframes
    )
    sequences = sorted(d for d in data.iterdir() if (d / "images").is_dir())
    per: dict[str, dict] = {}
    cases: list[tuple[float, int, Case]] = []
    index = 0
    for sequence in sequences:
        pairs = labelled_pairs(sequence)[:limit]
        state = StreamState()
        ious: list[float] = []
        fscores: list[float] = []
        warping = WarpingError()
        chosen = None
        runs = 0
        for image_path, mask_path in tqdm(pairs, desc=sequence.name, unit="frame", disable=not progress):
            image = read_image(image_path)
            truth = torch.from_numpy(read_image(mask_path, "L") >= 128)
            if chosen is None:
                chosen = config.updated({"subject": subject_for(subject, truth.numpy())})
            result = pipeline.masks([Frame(image, state, chosen)])[0]
            runs += result.state.smoothing.model_ran
            state = result.state
            warping.add(image, result.mask)
            prediction = result.mask.cpu() >= 0.5
            ious.append(iou(prediction, truth))
            fscores.append(boundary_f(prediction, truth))
            if gallery is not None:
                case = Case(f"{sequence.name}/{image_path.stem}", ious[-1], image, truth.numpy(), prediction.numpy())
                heapq.heappush(cases, (-case.iou, index, case))
                if len(cases) > worst:
                    heapq.heappop(cases)
            index += 1
        per[sequence.name] = {
            "frames": len(pairs),
            "mean_iou": mean(ious),
            "boundary_f": mean(fscores),
            "warping_error": warping.value,
            "model_runs": runs,
        }
    if gallery is not None:
        write_gallery(sorted((c for _, _, c in cases), key=lambda c: c.iou), gallery)
    return {
        "model": model,
        "refine": refine,
        "region": region,
        "smoothing": smoothing,
        "motion": motion,
        "subject": subject,
        "keyframes": keyframes,
        "model_runs_share": _share(per),
        "sequences": per,
        "mean_iou": mean(p["mean_iou"] for p in per.values()),
        "boundary_f": mean(p["boundary_f"] for p in per.values()),
        "warping_error": mean(p["warping_error"] for p in per.values()),
    }


def evaluate_video(
    pipeline: Pipeline,
    model: str,
    video: Path,
    refine: bool,
    smoothing: float,
    limit: int | None = None,
    progress: bool = True,
    motion: bool = True,
    keyframes: int = 0,
) -> dict:
    """Flicker (mean over consecutive frames of mean |p_t - p_t-1|) and warping error (see `WarpingError`)
    with and without smoothing (both with `keyframes`)."""
    configs = [
        SessionConfig(model=model, refine=refine, smoothing=s, mode="mask", motion=motion, keyframes=keyframes)
        for s in (0.0, smoothing)
    ]
    runs = 0
    states = [StreamState(), StreamState()]
    previous: list[torch.Tensor | None] = [None, None]
    totals: list[list[float]] = [[], []]
    warping = [WarpingError(), WarpingError()]
    frames, _ = video_info(video)
    total = min(frames, limit) if frames and limit else (frames or limit)
    for frame in tqdm(
        read_video(video, limit), total=total or None, desc=video.name, unit="frame", disable=not progress
    ):
        results = pipeline.masks([Frame(frame, state, config) for state, config in zip(states, configs, strict=True)])
        states = [r.state for r in results]
        runs += states[1].smoothing.model_ran
        for k, result in enumerate(results):
            warping[k].add(frame, result.mask)
            before = previous[k]
            if before is not None:
                totals[k].append(flicker(before, result.mask))
            previous[k] = result.mask
    raw, smoothed = (mean(t) if t else 0.0 for t in totals)
    return {
        "model": model,
        "video": video.name,
        "frames": len(totals[0]) + 1,
        "refine": refine,
        "smoothing": smoothing,
        "motion": motion,
        "flicker_raw": raw,
        "flicker_smoothed": smoothed,
        "reduction": 0.0 if raw == 0 else 1.0 - smoothed / raw,
        "warping_error_raw": warping[0].value,
        "warping_error_smoothed": warping[1].value,
        "warping_reduction": 0.0 if warping[0].value == 0 else 1.0 - warping[1].value / warping[0].value,
        "keyframes": keyframes,
        "model_runs_share": runs / max(1, len(totals[1]) + 1),
    }
