"""`backdrop` command line: serve, fetch-weights, evaluate, bench, loadtest, train, export, quantize, prune, process."""

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
    if getattr(args, "model", None):
        args.model = _model_arg(args.model)
    return SessionConfig(**{name: getattr(args, name) for name in SessionConfig.model_fields})


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=_env("DEVICE"), help="torch device, e.g. cpu or cuda:0 (default: cuda when available, else cpu) [BACKDROP_DEVICE]")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None, help="fp16 model inference (default: on for CUDA, off for CPU)")


def _add_compile_option(parser: argparse.ArgumentParser, default: bool) -> None:
    """--compile: worth its start-up cost for the long-running server, not for one-shot commands."""
    default = (_env("COMPILE") or str(default)).lower() in ("1", "true", "yes", "on")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=default,
                        help="CPU only: torch.compile each model as it loads (10-30 s, on a thread of its own; the "
                        "server waits for the --preload ones before it listens; needs a C++ compiler, else the model "
                        f"runs eager with a warning), then run it 2x+ faster (default: {'on' if default else 'off'}) [BACKDROP_COMPILE]")  # fmt: skip


def _pipeline(args: argparse.Namespace):
    from .pipeline import Pipeline

    return Pipeline(device=args.device, half=args.fp16, compile=args.compile)


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from models.weights import fetch_weights, weights_dir

    for path in fetch_weights(force=args.force, wheel=args.wheel):
        print(f"ok  {path}")
    print(f"licence and attribution: {weights_dir()}/LICENSE-mediapipe.txt, NOTICE.txt")
    return 0


def _model_arg(value: str) -> str:
    """A --model value: a built-in name, or a trained checkpoint (.pt) / ONNX file, registered by name."""
    from models import resolve_model_arg

    try:
        return resolve_model_arg(value)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc.args[0] if exc.args else exc)) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import evaluate_folder, evaluate_video

    pipeline = _pipeline(args)
    if args.data.is_dir():
        result = evaluate_folder(pipeline, args.model, args.data, args.refine, args.gallery, limit=args.limit, holdout=args.holdout)
        part = "" if args.holdout is None else " held out"
        text = f"{result['model']} on {result['images']}{part} images (refine={'on' if args.refine else 'off'}): mean IoU {result['mean_iou']:.4f}, boundary F {result['boundary_f']:.4f}"
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
    report = run_bench(devices, args.sizes, args.batches, args.models, args.runs, config, torch.get_num_threads(), args.compile)
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
    try:
        report = asyncio.run(
            run_loadtest(args.sessions, args.seconds, (height, width), config, args.url, args.device, args.compile, args.server_cores)
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
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
            if "server_cpu_ms_per_frame" in run:
                print(f"  server CPU {run['server_cpu_ms_per_frame']} ms/frame ({run['server_cpu_cores_busy']} of "
                      f"{run['cores']} cores busy): about {run['sessions_at_25fps_estimate']} sessions at 25 fps "
                      "with the clients elsewhere")  # fmt: skip
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from models.train import TrainOptions, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = TrainOptions(
        arch=args.arch, data=args.data, out=args.out, val=args.val, holdout=args.holdout, epochs=args.epochs,
        batch_size=args.batch_size, size=args.size, lr=args.lr, weight_decay=args.weight_decay, amp=args.amp,
        device=args.device, seed=args.seed, resume=args.resume, init=args.init, workers=args.workers,
        max_steps=args.max_steps, progress=not args.quiet, name=args.name,
    )  # fmt: skip
    summary = train(options)
    print(json.dumps(summary, indent=2) if args.json else
          f"{summary['arch']}: best val IoU {summary['best_val_iou']:.4f} -> {summary['best']} (log {summary['log']})")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from models import load_model, model_info
    from models.export import TOLERANCE, export

    info = model_info(args.model)
    output = args.output or Path(f"{info.name}.{ {'onnx': 'onnx', 'torchscript': 'pt', 'tflite': 'tflite'}[args.format] }")
    result = export(load_model(args.model, "cpu"), info, args.format, output)
    verdict = "ok" if result.ok else f"FAILED (tolerance {TOLERANCE})"
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB); {result.runtime} vs PyTorch: max |diff| {result.max_abs_diff:.2e} {verdict}")
    return 0 if result.ok else 1


def cmd_quantize(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from models import load_model, model_info, register_file
    from models.compress import calibration_images, quantize_onnx
    from models.data import labelled_pairs
    from models.export import check_inputs, export

    info = model_info(args.model)
    output = args.output or Path(f"{info.name}-int8.onnx")
    images = calibration_images(labelled_pairs(args.calibration), info.input_size, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        source = info.path if info.path is not None and info.path.suffix == ".onnx" else None
        if source is None:
            source = export(load_model(args.model, "cpu"), info, "onnx", Path(tmp) / "fp32.onnx").path
        quantize_onnx(source, output, images)
    quantized = load_model(register_file(output), "cpu")
    reference = load_model(args.model, "cpu")
    x = torch.cat([check_inputs(info.input_size), torch.from_numpy(images[0])])
    with torch.inference_mode():
        ours, theirs = quantized(x), reference(x)
    diff = (ours - theirs).abs()
    same = ((ours >= 0.5) == (theirs >= 0.5)).float().mean().item()
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB), calibrated on {len(images)} images of {args.calibration}; "
          f"vs fp32: mean |diff| {diff.mean().item():.4f}, max {diff.max().item():.3f}, {100 * same:.2f}% of pixels on the same side of 0.5")  # fmt: skip
    print(f"measure it: backdrop evaluate --model {output} --data DIR; backdrop bench --models {info.path or info.name} {output}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from models import checkpoint
    from models.compress import prune_checkpoint

    if not args.model.is_file():
        print(f"error: {args.model} does not exist", file=sys.stderr)
        return 2
    pruned, sparsity = prune_checkpoint(checkpoint.load(args.model), args.amount)
    output = args.output or args.model.with_name(f"{pruned.name}.pt")
    checkpoint.save(pruned, output)
    print(f"wrote {output}: {100 * sparsity:.1f}% of conv weights are zero; measure it: backdrop evaluate --model {output} --data DIR")
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
    _add_compile_option(serve, default=True)
    serve.set_defaults(func=cmd_serve)

    fetch = sub.add_parser("fetch-weights", help="download, verify (sha256) and cache the pinned model weights")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached copies are valid")
    fetch.add_argument("--wheel", type=Path, default=None, help="use this local mediapipe wheel instead of downloading it")
    fetch.set_defaults(func=cmd_fetch_weights)

    evaluate = sub.add_parser("evaluate", help="accuracy on a labelled folder, or flicker on a video")
    evaluate.add_argument("--model", default="general", type=_model_arg, help="model: general, landscape, or a trained .pt / exported .onnx file (default: general)")
    evaluate.add_argument("--data", type=Path, required=True, help="folder with images/*.jpg + masks/*.png (255 = person), or a video file")
    evaluate.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True, help="edge-aware upsampling of the mask (default: on)")
    evaluate.add_argument("--smoothing", type=float, default=SessionConfig().smoothing, help="smoothing strength compared against none, for videos")
    evaluate.add_argument("--gallery", type=Path, default=None, help="write the worst cases to this .png or .html file")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N images / frames")
    evaluate.add_argument("--holdout", type=float, default=None, help="only the part `train --holdout` held out of this folder (same value, same split)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_device_options(evaluate)
    _add_compile_option(evaluate, default=False)
    evaluate.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser("bench", help="per-stage timings at several sizes and batch sizes, vs the TFLite interpreter")
    bench.add_argument("--devices", nargs="+", default=None, help="devices to time (default: cpu, and cuda when present)")
    bench.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"], choices=["640x480", "1280x720", "1920x1080"])
    bench.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16], help="batch sizes (default: 1 4 16)")
    bench.add_argument("--models", nargs="+", type=_model_arg, default=["general", "landscape"], help="models to time (names or .pt / .onnx files); the first one runs in the pipeline")
    bench.add_argument("--mode", default="blur", help="background mode timed in the pipeline (default: blur)")
    bench.add_argument("--runs", type=int, default=20, help="timed runs per measurement; medians are reported (default: 20)")
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _add_compile_option(bench, default=False)
    bench.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(func=cmd_bench)

    load = sub.add_parser(
        "loadtest",
        help="open N real WebRTC sessions and measure the fps each gets back",
        description="Open N real WebRTC sessions and measure the fps each gets back. With the server it starts, "
        "also the server's CPU ms per frame and how many 25 fps sessions the machine's cores could serve "
        "with the clients elsewhere (the client peers run in this process, on the same machine).",
    )
    load.add_argument("--sessions", nargs="+", type=int, default=[1, 2, 3, 4], help="session counts to measure, in turn (default: 1 2 3 4)")
    load.add_argument("--seconds", type=float, default=10.0, help="measuring time per session count (default: 10)")
    load.add_argument("--size", default="640x480", help="frame size WxH sent by each client (default: 640x480)")
    load.add_argument("--mode", default="blur", help="background mode (default: blur)")
    load.add_argument("--model", default="general", help="model name the sessions ask for (default: general)")
    load.add_argument("--url", default=None, help="server to test (default: start `backdrop serve` on a free port)")
    load.add_argument("--device", default=None, help="device for the started server")
    load.add_argument("--server-cores", type=int, default=0, help="run the started server on this many cores and the client peers on the others, so the figures are the server's alone (default: 0, all share every core)")
    _add_compile_option(load, default=True)
    load.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    load.add_argument("--json", action="store_true", help="print JSON")
    load.set_defaults(func=cmd_loadtest)

    from models.archs import ARCHS
    from models.data import DEFAULT_HOLDOUT

    train = sub.add_parser("train", help="train a segmentation network on a labelled folder",
                           description="Train from scratch (or from a local backbone file) on images/*.jpg + masks/*.png "
                           "or NAME.jpg + NAME_mask.png; writes OUT/best.pt, OUT/last.pt and OUT/metrics.csv.")  # fmt: skip
    train.add_argument("--arch", required=True, choices=list(ARCHS), help="architecture")
    train.add_argument("--data", type=Path, required=True, help="labelled folder to train on")
    train.add_argument("--val", type=Path, default=None, help="separate labelled folder to validate on (default: hold out part of --data)")
    train.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, help=f"held-out part of --data when no --val: a fraction, or a count if >= 1; the split is fixed and seeded, `evaluate --holdout` uses the same (default: {DEFAULT_HOLDOUT})")
    train.add_argument("--epochs", type=int, default=30, help="epochs (default: 30)")
    train.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16)")
    train.add_argument("--size", type=int, default=256, help="square input size the network trains and runs at (default: 256)")
    train.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate; warm-up then cosine decay (default: 2e-3)")
    train.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    train.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False, help="mixed precision: fp16 on CUDA, bf16 on CPU (default: off)")
    train.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    train.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and augmentation (default: 0)")
    train.add_argument("--out", type=Path, required=True, help="output folder; its name is the model's name unless --name")
    train.add_argument("--name", default=None, help="name stored in the checkpoints (default: the --out folder's name)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument("--init", type=Path, default=None, help="local state dict (e.g. torchvision ImageNet weights) for the backbone; nothing is downloaded")
    train.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: 0)")
    train.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch (quick runs)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="export a model to ONNX, TorchScript or TFLite, checked against PyTorch")
    export.add_argument("--model", required=True, type=_model_arg, help="model: general, landscape, or a trained .pt file")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript", "tflite"], help="onnx (any batch; checked with ONNX Runtime), torchscript (checked with torch.jit) or tflite (batch 1; needs backdrop[tflite]; checked with ai-edge-litert)")
    export.add_argument("--output", type=Path, default=None, help="output file (default: NAME.onnx / NAME.pt / NAME.tflite)")
    export.set_defaults(func=cmd_export)

    quantize = sub.add_parser("quantize", help="int8 post-training quantization to ONNX (ONNX Runtime, calibrated on images)")
    quantize.add_argument("--model", required=True, type=_model_arg, help="model: a name, a trained .pt or an exported .onnx file")
    quantize.add_argument("--calibration", type=Path, required=True, help="labelled folder whose images calibrate the activation ranges")
    quantize.add_argument("--images", type=int, default=64, help="calibration images (default: 64)")
    quantize.add_argument("--output", type=Path, default=None, help="output .onnx (default: NAME-int8.onnx)")
    quantize.set_defaults(func=cmd_quantize)

    prune = sub.add_parser("prune", help="magnitude pruning of a trained checkpoint (global L1 over conv weights)")
    prune.add_argument("--model", type=Path, required=True, help="trained checkpoint (.pt)")
    prune.add_argument("--amount", type=float, default=0.5, help="fraction of conv weights set to zero (default: 0.5)")
    prune.add_argument("--output", type=Path, default=None, help="output .pt (default: NAME-prunedNN.pt beside the input)")
    prune.set_defaults(func=cmd_prune)

    process = sub.add_parser("process", help="replace the background of an image or video file")
    process.add_argument("input", type=Path, help="image (.jpg, .png, ...) or video (.mp4, .webm, ...)")
    process.add_argument("output", type=Path, help="where to write the result (video: H.264 .mp4)")
    _add_session_options(process)
    process.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_options(process)
    _add_compile_option(process, default=False)
    process.set_defaults(func=cmd_process)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.weights import WeightsMissingError

    try:
        return args.func(args)
    except (WeightsMissingError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
