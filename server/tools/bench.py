"""Per-stage timings of the pipeline and the model, against the TFLite reference interpreter in the same run."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from models.weights import weights_path
from models.zoo import ModelRegistry

from ..pipeline.config import SessionConfig
from ..pipeline.frames import Frame, StreamState
from ..pipeline.pipeline import Pipeline
from ..pipeline.segment import denormals_flushed
from ..pipeline.timing import STAGES, StageTimes
from ..pipeline.yuv import Planes

SIZES = {"640x480": (480, 640), "1280x720": (720, 1280), "1920x1080": (1080, 1920)}
TFLITE_FILES = {
    "mediapipe-general": "selfie_segmentation.tflite",
    "mediapipe-landscape": "selfie_segmentation_landscape.tflite",
    "mediapipe-pose": "pose_landmark_full.tflite",
}


def _median_ms(fn: Callable[[], None], runs: int, warmup: int, sync: torch.device | None = None) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        if sync is not None and sync.type == "cuda":
            torch.cuda.synchronize(sync)
        start = time.perf_counter()
        fn()
        if sync is not None and sync.type == "cuda":
            torch.cuda.synchronize(sync)
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def tflite_runner(baseline: str, threads: int) -> Callable[[], None] | None:
    """A callable running the TFLite reference interpreter (ai-edge-litert) on `baseline` (see `baseline_of`)
    once, or None if not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    interpreter = Interpreter(model_path=str(weights_path(TFLITE_FILES[baseline])), num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = np.random.default_rng(0).random(inp["shape"], dtype=np.float32)

    def run() -> None:
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        interpreter.get_tensor(out["index"])

    return run


def baseline_of(registry: ModelRegistry, model: str) -> str:
    """The model whose TFLite file is the speed baseline for `model`: its own, or, for models without a
    TFLite original (trained checkpoints, ONNX files), MediaPipe general's."""
    name = registry.plan(model).region.name
    return name if name in TFLITE_FILES else "mediapipe-general"


def model_runner(pipeline: Pipeline, model: str, batch: int) -> Callable[[], None]:
    """A callable running the bare model once on a batch at its input size."""
    h, w = pipeline.registry.info(model).input_size
    net = pipeline.models.warm(model)
    with torch.inference_mode():  # an inference tensor in plain NCHW, as the pipeline's frames are
        x = torch.rand(batch, 3, h, w, device=pipeline.device, dtype=pipeline.models.dtype)

    def run() -> None:
        with torch.inference_mode():
            net(x)

    return run


def paired_ms(
    baseline: Callable[[], None], candidate: Callable[[], None], rounds: int, runs: int, device: torch.device
) -> tuple[float, float, float]:
    """Median ms of each and the median per-round ratio, alternating the two so both see the same machine."""
    base, cand, ratios = [], [], []
    for _ in range(rounds):
        base.append(_median_ms(baseline, runs, warmup=3))
        cand.append(_median_ms(candidate, runs, warmup=3, sync=device))
        ratios.append(cand[-1] / base[-1])
    return statistics.median(base), statistics.median(cand), statistics.median(ratios)


def pipeline_stages(
    pipeline: Pipeline,
    size: tuple[int, int],
    batch: int,
    runs: int,
    config: SessionConfig,
    image: np.ndarray | None = None,
) -> dict[str, float]:
    """Median per-stage ms for one batch of `batch` streams at `size` (H, W), and the total per frame.

    The frames are `image` stretched to `size`, or noise (nobody in it: region tracking then runs a
    whole-frame pass every frame), as yuv420p planes, as a decoder hands them to the server; the first 10
    frames of each stream are not timed (a tracker settles)."""
    if image is None:
        pixels = np.random.default_rng(0).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    else:
        pixels = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    planes = Planes.of_video_frame(Planes.of_rgb(pixels).video_frame())
    frames = [Frame(planes, StreamState(), config) for _ in range(batch)]
    for _ in range(10):
        frames = [Frame(f.pixels, p.state, config) for f, p in zip(frames, pipeline.process(frames), strict=True)]
    samples = []
    for _ in range(runs):
        times = StageTimes()
        frames = [
            Frame(f.pixels, p.state, config) for f, p in zip(frames, pipeline.process(frames, times), strict=True)
        ]
        samples.append(times.ms)
    stages = {stage: statistics.median(s[stage] for s in samples) for stage in STAGES}
    total = statistics.median(sum(s.values()) for s in samples)
    return {**stages, "total_ms": total, "per_frame_ms": total / batch, "frames_per_s": 1000.0 * batch / total}


@denormals_flushed()  # as the pipeline does (XNNPACK does the same for TFLite)
def run_bench(
    registry: ModelRegistry,
    devices: list[str],
    sizes: list[str],
    batches: list[int],
    models: list[str],
    runs: int,
    config: SessionConfig,
    threads: int,
    compile: bool = False,
    image: np.ndarray | None = None,
) -> dict:
    """All measurements as one JSON-ready dict; `models` are names in `registry`."""
    report: dict = {  # "tflite": every paired measurement of the reference, ms per frame
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "config": config.model_dump(),
        "runs": runs,
        "compile": compile,
        "frames": "noise" if image is None else "image",
        "tflite": {},
        "model": [],
        "pipeline": [],
    }
    # One interpreter per baseline: several trained models share MediaPipe general's.
    references = {b: tflite_runner(b, threads) for b in dict.fromkeys(baseline_of(registry, m) for m in models)}
    for device in devices:
        precisions = [False, True] if device.startswith("cuda") else [False]
        for half in precisions:
            pipeline = Pipeline(device=device, half=half, compile=compile, registry=registry)
            dtype = "fp16" if half else "fp32"
            for model in models:
                name, baseline = registry.resolve(model), baseline_of(registry, model)
                for batch in batches:
                    run = model_runner(pipeline, model, batch)
                    reference = references[baseline]
                    if reference is None:
                        ms, ref, ratio = _median_ms(run, runs * 4, warmup=5, sync=pipeline.device), None, None
                    else:
                        # The reference runs one frame per call; the ratio is per frame.
                        ref, ms, ratio = paired_ms(reference, run, rounds=5, runs=runs, device=pipeline.device)
                        ratio /= batch
                        report["tflite"].setdefault(baseline, []).append(ref)
                    report["model"].append(
                        {
                            "device": device,
                            "dtype": dtype,
                            "model": name,
                            "batch": batch,
                            "ms": ms,
                            "ms_per_frame": ms / batch,
                            "baseline": f"tflite {baseline}",
                            "tflite_ms": ref,
                            "ratio_vs_tflite": ratio,
                        }
                    )
            for size in sizes:
                for batch in batches:
                    first: float | None = None  # the first model's ms per frame: the others' baseline
                    for model in models:
                        name = registry.resolve(model)
                        stages = pipeline_stages(
                            pipeline, SIZES[size], batch, runs, config.model_copy(update={"model": name}), image
                        )
                        first = first or stages["per_frame_ms"]
                        report["pipeline"].append(
                            {
                                "device": device,
                                "dtype": dtype,
                                "model_choice": name,  # "model" is the model stage's ms
                                "size": size,
                                "batch": batch,
                                **stages,
                                "ratio_vs_first": stages["per_frame_ms"] / first,
                            }
                        )
    return report


def format_report(report: dict) -> str:
    compiled = ", models compiled (CPU)" if report.get("compile") else ""
    lines = [f"torch {report['torch']}, {report['threads']} threads{compiled}; medians of {report['runs']}+ runs"]
    for name, samples in report["tflite"].items():
        lines.append(f"TFLite reference {name}: median {statistics.median(samples):.2f} ms/frame over the paired runs")
    if not report["tflite"]:
        lines.append("TFLite reference: not installed (pip install ai-edge-litert)")
    lines.append(f"{'model':<31}device  dtype batch  ms/frame  x TFLite (median of paired rounds)")
    for row in report["model"]:
        ratio = "-" if row["ratio_vs_tflite"] is None else f"{row['ratio_vs_tflite']:.2f}"
        lines.append(
            f"{row['model']:<31}{row['device']:<8}{row['dtype']:<6}{row['batch']:>5}{row['ms_per_frame']:>10.2f}{ratio:>10}"
        )
    lines.append(
        f"{'pipeline':<20}size       device  dtype batch "
        + " ".join(f"{s:>9}" for s in STAGES)
        + "  ms/frame    fps  x first"
    )
    for row in report["pipeline"]:
        stages = " ".join(f"{row[s]:>9.2f}" for s in STAGES)
        lines.append(
            f"{row['model_choice']:<20}{row['size']:<11}{row['device']:<8}{row['dtype']:<6}{row['batch']:>5} {stages}"
            f"{row['per_frame_ms']:>10.2f}{row['frames_per_s']:>7.0f}{row['ratio_vs_first']:>9.2f}"
        )
    return "\n".join(lines)
