"""`backdrop` command line: serve, fetch-weights, evaluate, bench, loadtest, process."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import SessionConfig


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"BACKDROP_{name}", default)


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    """One flag per SessionConfig field, with the field's description as help."""
    for name, field in SessionConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=field.description)
        else:
            kind = float if field.annotation is float else str
            parser.add_argument(flag, type=kind, default=field.default, help=f"{field.description} (default: {field.default})")


def _session_config(args: argparse.Namespace) -> SessionConfig:
    return SessionConfig(**{name: getattr(args, name) for name in SessionConfig.model_fields})


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=_env("DEVICE"), help="torch device, e.g. cpu or cuda:0 (default: cuda when available, else cpu) [BACKDROP_DEVICE]")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None, help="fp16 model inference (default: on for CUDA, off for CPU)")


def _pipeline(args: argparse.Namespace):
    from .pipeline import Pipeline

    return Pipeline(device=args.device, half=args.fp16)


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from models.weights import fetch_weights, weights_dir

    for path in fetch_weights(force=args.force, wheel=args.wheel):
        print(f"ok  {path}")
    print(f"licence and attribution: {weights_dir()}/LICENSE-mediapipe.txt, NOTICE.txt")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import evaluate_folder, evaluate_video

    pipeline = _pipeline(args)
    if args.data.is_dir():
        result = evaluate_folder(pipeline, args.model, args.data, args.refine, args.gallery, limit=args.limit)
        text = f"{result['model']} on {result['images']} images (refine={'on' if args.refine else 'off'}): mean IoU {result['mean_iou']:.4f}, boundary F {result['boundary_f']:.4f}"
    elif args.data.is_file():
        result = evaluate_video(pipeline, args.model, args.data, args.refine, args.smoothing, limit=args.limit)
        text = (
            f"{result['model']} on {result['video']} ({result['frames']} frames): flicker {result['flicker_raw']:.5f} raw, "
            f"{result['flicker_smoothed']:.5f} with smoothing {args.smoothing} ({100 * result['reduction']:.1f}% less)"
        )
    else:
        print(f"error: {args.data} is neither a folder nor a video file", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import format_report, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    config = SessionConfig(mode=args.mode, model=args.models[0])
    report = run_bench(devices, args.sizes, args.batches, args.models, args.runs, config, torch.get_num_threads())
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text)
    print(text if args.json else format_report(report))
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from .offline import process_file

    if not args.input.is_file():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    pipeline = _pipeline(args)
    if args.mode == "image" and Path(args.image).is_file():
        args.image = pipeline.backgrounds.add(Path(args.image).read_bytes())
    elif args.mode == "image" and args.image not in pipeline.backgrounds:
        print(f"error: --image {args.image!r} is neither a file nor a preset ({', '.join(pipeline.backgrounds.presets())})", file=sys.stderr)
        return 2
    frames = process_file(pipeline, args.input, args.output, _session_config(args), progress=not args.quiet)
    print(f"wrote {args.output} ({frames} frame{'s' if frames != 1 else ''})")
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    import asyncio

    from .loadtest import run_loadtest

    width, height = (int(v) for v in args.size.split("x"))
    config = {"mode": args.mode, "model": args.model}
    report = asyncio.run(run_loadtest(args.sessions, args.seconds, (height, width), config, args.url, args.device))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for run in report["runs"]:
            p50 = [s["processing_ms_p50"] for s in run["server"]]
            p95 = [s["processing_ms_p95"] for s in run["server"]]
            print(f"{run['sessions']} session(s) at {report['size']}: fps each {run['fps_each']} "
                  f"(>= 25 for all: {run['all_at_least_25fps']}); server processing ms p50 {p50}, p95 {p95}")  # fmt: skip
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import run_server

    return run_server(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backdrop", description="Real-time background replacement for WebRTC video.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WebRTC server and the demo page")
    from .settings import add_server_options

    add_server_options(serve)
    _add_device_options(serve)
    serve.set_defaults(func=cmd_serve)

    fetch = sub.add_parser("fetch-weights", help="download, verify (sha256) and cache the pinned model weights")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached copies are valid")
    fetch.add_argument("--wheel", type=Path, default=None, help="use this local mediapipe wheel instead of downloading it")
    fetch.set_defaults(func=cmd_fetch_weights)

    evaluate = sub.add_parser("evaluate", help="accuracy on a labelled folder, or flicker on a video")
    evaluate.add_argument("--model", default="general", help="model name (general, landscape) (default: general)")
    evaluate.add_argument("--data", type=Path, required=True, help="folder with images/*.jpg + masks/*.png (255 = person), or a video file")
    evaluate.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True, help="edge-aware upsampling of the mask (default: on)")
    evaluate.add_argument("--smoothing", type=float, default=SessionConfig().smoothing, help="smoothing strength compared against none, for videos")
    evaluate.add_argument("--gallery", type=Path, default=None, help="write the worst cases to this .png or .html file")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N images / frames")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_device_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser("bench", help="per-stage timings at several sizes and batch sizes, vs the TFLite interpreter")
    bench.add_argument("--devices", nargs="+", default=None, help="devices to time (default: cpu, and cuda when present)")
    bench.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"], choices=["640x480", "1280x720", "1920x1080"])
    bench.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16], help="batch sizes (default: 1 4 16)")
    bench.add_argument("--models", nargs="+", default=["general", "landscape"], help="models to time; the first one runs in the pipeline")
    bench.add_argument("--mode", default="blur", help="background mode timed in the pipeline (default: blur)")
    bench.add_argument("--runs", type=int, default=20, help="timed runs per measurement; medians are reported (default: 20)")
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    bench.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(func=cmd_bench)

    load = sub.add_parser("loadtest", help="open N real WebRTC sessions and measure the fps each gets back")
    load.add_argument("--sessions", nargs="+", type=int, default=[1, 2, 3, 4], help="session counts to measure, in turn (default: 1 2 3 4)")
    load.add_argument("--seconds", type=float, default=10.0, help="measuring time per session count (default: 10)")
    load.add_argument("--size", default="640x480", help="frame size WxH sent by each client (default: 640x480)")
    load.add_argument("--mode", default="blur", help="background mode (default: blur)")
    load.add_argument("--model", default="general", help="model (default: general)")
    load.add_argument("--url", default=None, help="server to test (default: start `backdrop serve` on a free port)")
    load.add_argument("--device", default=None, help="device for the started server")
    load.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    load.add_argument("--json", action="store_true", help="print JSON")
    load.set_defaults(func=cmd_loadtest)

    process = sub.add_parser("process", help="replace the background of an image or video file")
    process.add_argument("input", type=Path, help="image (.jpg, .png, ...) or video (.mp4, .webm, ...)")
    process.add_argument("output", type=Path, help="where to write the result (video: H.264 .mp4)")
    _add_session_options(process)
    process.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_options(process)
    process.set_defaults(func=cmd_process)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.weights import WeightsMissingError

    try:
        return args.func(args)
    except WeightsMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
