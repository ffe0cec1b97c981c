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
from ..pipeline.config import SessionConfig
from ..pipeline.frames import Frame, StreamState
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
) -> dict:
    """Mean person IoU and boundary F over the folder (mask = p >= 0.5 at the image's own size);
    with `holdout`, over the part `train` held out of it."""
    config = SessionConfig(model=model, refine=refine, smoothing=0.0, mode="mask", region=region)
    pairs = labelled_pairs(data)
    if holdout is not None:
        pairs = split_pairs(pairs, holdout)[1]
    pairs = pairs[:limit]
    ious: list[float] = []
    fscores: list[float] = []
    cases: list[tuple[float, int, Case]] = []
    for index, (image_path, mask_path) in enumerate(tqdm(pairs, desc="evaluate", unit="img", disable=not progress)):
        image = read_image(image_path)
        truth = torch.from_numpy(read_image(mask_path, "L") >= 128)
        probability = pipeline.masks([Frame(image, StreamState(), config)])[0].mask.cpu()
        prediction = probability >= 0.5
        ious.append(iou(prediction, truth))
        fscores.append(boundary_f(prediction, truth))
        if gallery is not None:
            # Keep only the `worst` lowest-IoU cases in memory (a heap on -IoU).
            case = Case(image_path.stem, ious[-1], image, truth.numpy(), prediction.numpy())
            heapq.heappush(cases, (-case.iou, index, case))
            if len(cases) > worst:
                heapq.heappop(cases)
    if gallery is not None:
        write_gallery(sorted((c for _, _, c in cases), key=lambda c: c.iou), gallery)
    return {
        "model": model,
        "refine": refine,
        "region": region,
        "images": len(pairs),
        "mean_iou": mean(ious),
        "boundary_f": mean(fscores),
        "worst": sorted(zip(ious, [p[0].stem for p in pairs], strict=True))[: min(worst, len(pairs))],
    }


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
) -> dict:
    """IoU and boundary F per sequence and overall (the mean of the sequences'), each sequence's frames in
    order through one stream, so that region tracking and smoothing are part of what is measured."""
    config = SessionConfig(model=model, refine=refine, smoothing=smoothing, mode="mask", region=region, motion=motion)
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
        for image_path, mask_path in tqdm(pairs, desc=sequence.name, unit="frame", disable=not progress):
            image = read_image(image_path)
            truth = torch.from_numpy(read_image(mask_path, "L") >= 128)
            result = pipeline.masks([Frame(image, state, config)])[0]
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
        }
    if gallery is not None:
        write_gallery(sorted((c for _, _, c in cases), key=lambda c: c.iou), gallery)
    return {
        "model": model,
        "refine": refine,
        "region": region,
        "smoothing": smoothing,
        "motion": motion,
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
) -> dict:
    """Flicker (mean over consecutive frames of mean |p_t - p_t-1|) and warping error (see `WarpingError`)
    with and without smoothing."""
    configs = [
        SessionConfig(model=model, refine=refine, smoothing=s, mode="mask", motion=motion) for s in (0.0, smoothing)
    ]
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
    }
