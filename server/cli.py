"""`backdrop` command line: the parsers, and the dispatch of each command to the layer that does the work.

Only light modules are imported at the top (no torch), so `backdrop --help` answers at once; each
command imports what it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from models.labelled import DEFAULT_HOLDOUT
from models.names import MODEL_CHOICES_TEXT
from models.nets import ARCHS

from .pipeline.config import ConfigError, SessionConfig, first_error
from .web.settings import DeviceSettings, ServerSettings, env_name, flag

if TYPE_CHECKING:
    from models.zoo import ModelRegistry

    from .pipeline.pipeline import Pipeline
    from .tools.client import Network

SIZES = ["640x480", "1280x720", "1920x1080"]
FORMATS = ["onnx", "torchscript", "tflite"]


class CommandError(Exception):
    """A command that cannot do what it was asked; its message is the `error:` line."""


# --- options ---------------------------------------------------------------------------------------


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The flags of `serve`: one per ServerSettings field, in its order (the device's last, shared with the
    other commands); type, default, help and environment variable come from the field. A flag not given leaves
    its setting to the environment or the default."""
    for name, field in ServerSettings.model_fields.items():
        if name in DeviceSettings.model_fields:
            continue
        default = field.get_default(call_default_factory=True)
        kind: Any = {int: int, float: float}.get(type(default), str) if default is not None else str
        if Path in _types(field.annotation):
            kind = Path
        text = f"{field.description} (default: {_shown(default)}) [{env_name(name)}]"
        if isinstance(default, list):
            parser.add_argument(
                flag(name, field), dest=name, action="append", type=kind, default=argparse.SUPPRESS, help=text
            )
        elif isinstance(default, bool):  # --name / --no-name
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag(name, field), dest=name, action=action, default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag(name, field), dest=name, type=kind, default=argparse.SUPPRESS, help=text)
    _add_device_options(parser, compile_default=True)


def _types(annotation: object) -> set[object]:
    """The types an annotation is made of: `Path | None` and `list[Path]` hold Path."""
    args = typing.get_args(annotation)
    return {annotation}.union(*(_types(arg) for arg in args)) if args else {annotation}


def _add_device_options(parser: argparse.ArgumentParser, compile_default: bool | None = None) -> None:
    fields = DeviceSettings.model_fields
    parser.add_argument(
        "--device", default=argparse.SUPPRESS, help=f"{fields['device'].description} [{env_name('device')}]"
    )
    parser.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help=f"{fields['fp16'].description} [{env_name('fp16')}]",
    )
    if compile_default is not None:
        parser.add_argument(
            "--compile",
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=f"{fields['compile'].description} (default: {'on' if compile_default else 'off'}) "
            f"[{env_name('compile')}]",
        )
        parser.set_defaults(compile_default=compile_default)


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    """One flag per SessionConfig field, with the field's description as help."""
    for name, field in SessionConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=field.default, help=field.description
            )
        else:
            kind = float if field.annotation is float else str
            parser.add_argument(
                flag, type=kind, default=field.default, help=f"{field.description} (default: {field.default})"
            )


def _shown(default: object) -> str:
    if isinstance(default, list):
        return ", ".join(str(v) for v in default) or "none"
    return "none" if default is None else str(default)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The flags given, over the environment, over the defaults."""
    given = {name: getattr(args, name) for name in ServerSettings.model_fields if hasattr(args, name)}
    return ServerSettings(**given)


def device_settings(args: argparse.Namespace) -> DeviceSettings:
    given = {name: getattr(args, name) for name in DeviceSettings.model_fields if hasattr(args, name)}
    settings = DeviceSettings(**given)
    if settings.compile is None:
        settings = settings.model_copy(update={"compile": getattr(args, "compile_default", False)})
    return settings


def _registry_with(*values: str) -> tuple[ModelRegistry, list[str]]:
    """A registry holding the built-ins and the files among `values` (--model arguments); their names."""
    from models.zoo import ModelRegistry

    registry = ModelRegistry()
    return registry, [registry.resolve_arg(value) for value in values]


def _pipeline(args: argparse.Namespace, registry: ModelRegistry) -> Pipeline:
    from .pipeline.pipeline import Pipeline

    settings = device_settings(args)
    return Pipeline(device=settings.device, half=settings.fp16, compile=bool(settings.compile), registry=registry)


# --- commands --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    processes = settings.processes
    if processes != 1:
        import torch

        from .pipeline.workers import cpu_cores
        from .tools.supervisor import Supervisor, default_processes, supervise

        cuda = (settings.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        processes = processes or default_processes(cuda, cpu_cores())
        if processes > 1:
            # On a CPU the processes share the cores: each gets its share for its workers and torch threads.
            share = None if cuda or settings.cores else max(1, cpu_cores() // processes)
            proxy = (settings.host, settings.port) if settings.proxy == "haproxy" else None
            return supervise(Supervisor(args.argv, processes, settings.port, share, settings.route_prefix, proxy))
    from .web.app import run_server

    run_server(settings)
    return 0


def cmd_proxy_config(args: argparse.Namespace) -> int:
    from .tools.proxy import haproxy_config

    if not 1 <= args.processes <= 64:
        raise CommandError(f"--processes {args.processes}: from 1 to 64")
    text = haproxy_config(args.processes, args.port, args.host)
    if args.output:
        args.output.write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from models.weights import fetch_weights, weights_dir

    for path in fetch_weights(force=args.force, wheel=args.wheel):
        print(f"ok  {path}")
    print(f"licence and attribution: {weights_dir()}/LICENSE-mediapipe.txt, NOTICE.txt")
    return 0


def _subject_spec(value: str) -> str:
    """An evaluate --subject: all, main, click or a point X,Y (checked as a session config checks it)."""
    if value != "click":
        try:
            SessionConfig(subject=value)
        except ValidationError as exc:
            reason = first_error(exc, "")[0]
            raise argparse.ArgumentTypeError(f"{value!r}: all, main, click or X,Y from 0 to 1 ({reason})") from None
    return value


def cmd_crowd(args: argparse.Namespace) -> int:
    from .tools.crowd import make_crowd

    count = make_crowd(args.data, args.out, args.limit, args.seed)
    print(f"{count} images with bystanders written to {args.out} (truth: each subject's own mask)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .tools.evaluate import evaluate_folder, evaluate_sequences, evaluate_video, is_sequence_folder

    registry, (model,) = _registry_with(args.model)
    pipeline = _pipeline(args, registry)
    if args.data.is_dir() and is_sequence_folder(args.data):
        result = evaluate_sequences(
            pipeline,
            model,
            args.data,
            args.refine,
            args.smoothing,
            args.region,
            args.gallery,
            limit=args.limit,
            motion=args.motion,
            subject=args.subject,
            keyframes=args.keyframes,
        )
        sequences = ", ".join(f"{name} {r['mean_iou']:.3f}" for name, r in result["sequences"].items())
        text = (
            f"{result['model']} on {len(result['sequences'])} sequences (region={'on' if args.region else 'off'}, "
            f"smoothing {args.smoothing}, motion={'on' if args.motion else 'off'}): mean IoU "
            f"{result['mean_iou']:.4f}, boundary F {result['boundary_f']:.4f}, warping error "
            f"{result['warping_error']:.5f} ({sequences})"
        )
    elif args.data.is_dir():
        result = evaluate_folder(
            pipeline,
            model,
            args.data,
            args.refine,
            args.gallery,
            limit=args.limit,
            holdout=args.holdout,
            region=args.region,
            band=args.band,
            edges=args.edges,
            **({} if args.edge_color is None else {"color": args.edge_color}),
            subject=args.subject,
        )
        part = "" if args.holdout is None else " held out"
        text = (
            f"{result['model']} on {result['images']}{part} images (refine={'on' if args.refine else 'off'}, "
            f"edges={'on' if args.edges else 'off'}): mean IoU {result['mean_iou']:.4f}, boundary F "
            f"{result['boundary_f']:.4f}, edge error (+-{args.band} px, over {result['edge_color']}) "
            f"{result['edge_error']:.1f}: outer {result['edge_error_outer']:.1f}, "
            f"inner {result['edge_error_inner']:.1f}"
        )
    elif args.data.is_file():
        result = evaluate_video(
            pipeline,
            model,
            args.data,
            args.refine,
            args.smoothing,
            limit=args.limit,
            motion=args.motion,
            keyframes=args.keyframes,
        )
        text = (
            f"{result['model']} on {result['video']} ({result['frames']} frames): "
            f"flicker {result['flicker_raw']:.5f} raw, "
            f"{result['flicker_smoothed']:.5f} with smoothing {args.smoothing} "
            f"({100 * result['reduction']:.1f}% less); "
            f"warping error {result['warping_error_raw']:.5f} raw, {result['warping_error_smoothed']:.5f} smoothed "
            f"({100 * result['warping_reduction']:.1f}% less)"
        )
    else:
        raise CommandError(f"{args.data} is neither a folder nor a video file")
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from models.images import read_image

    from .tools.bench import format_report, run_bench

    if args.vp8_speeds or args.vp8_qmins or args.h264_presets:
        return _bench_encoders(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    registry, models = _registry_with(*args.models)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    config = SessionConfig(mode=args.mode, model=models[0])
    compile = bool(device_settings(args).compile)
    image = None if args.image is None else read_image(args.image)
    report = run_bench(
        registry, devices, args.sizes, args.batches, models, args.runs, config, torch.get_num_threads(), compile, image
    )
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text)
    print(text if args.json else format_report(report))
    return 0


def _video(path: Path, size: tuple[int, int] | None = None, format: str = "yuv420p") -> list[Any]:
    """--video's frames (`tools.encoding.video_frames`; 640x480 unless `size`), or a one-line error naming it."""
    from .tools.encoding import SIZE, video_frames

    if not path.exists():
        raise CommandError(f"--video {path} does not exist")
    try:
        return video_frames(path, size or SIZE, format=format)
    except (ValueError, OSError) as exc:
        raise CommandError(f"--video {path}: {exc}") from None


def _bounds(field: Any) -> tuple[int, int]:
    """A setting's (ge, le) limits, as its pydantic field states them."""
    low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
    high = next(m.le for m in field.metadata if hasattr(m, "le"))
    return int(low), int(high)


def _bench_encoders(args: argparse.Namespace) -> int:
    from .tools.encoding import compare_encoders, loadtest_frames

    for option, values, name in (
        ("--vp8-speeds", args.vp8_speeds, "vp8_speed"),
        ("--vp8-qmins", args.vp8_qmins, "vp8_qmin"),
    ):
        low, high = _bounds(ServerSettings.model_fields[name])
        if any(not low <= value <= high for value in values or []):
            raise CommandError(f"{option}: each must be {low} to {high}")

    if args.video is None:
        source, frames = "the loadtest's hand-held photo", loadtest_frames()
    else:
        source, frames = str(args.video), _video(args.video)
    encoders = [("vp8", speed) for speed in args.vp8_speeds or []]
    encoders += [("vp8-qmin", qmin) for qmin in args.vp8_qmins or []]
    encoders += [("h264", preset) for preset in args.h264_presets or []]
    report = {"video": source, **compare_encoders(frames, encoders, args.rounds)}
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text)
    if args.json:
        print(text)
    else:
        print(f"On {source}: {report['frames']} frames at {report['size']}, {report['bitrate_kbps']} kb/s")
        for row in report["encoders"]:
            print(
                f"  {row['codec']} {row['setting']!s:>9}: encode {row['encode_ms_per_frame']:.2f} ms/frame "
                f"({row['time_vs_first']:.2f}x), PSNR {row['psnr_db']:.2f} dB ({row['psnr_vs_first_db']:+.2f}), "
                f"{row['kbps']} kb/s"
            )
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from .files.process import file_config, process_file

    if not args.input.is_file():
        raise CommandError(f"{args.input} does not exist")
    registry, (model,) = _registry_with(args.model)
    pipeline = _pipeline(args, registry)
    changes = {name: getattr(args, name) for name in SessionConfig.model_fields}
    try:  # the config path of a session's: the same checks, the same refusals
        config = file_config(pipeline, {**changes, "model": model})
    except ConfigError as exc:
        name = (exc.field or "config").removeprefix("config.")
        text = exc.message.removeprefix(f"{name}: ")
        if name == "image":
            text += f" (not a file either; presets: {', '.join(pipeline.backgrounds.presets())})"
        raise CommandError(f"--{name.replace('_', '-')}: {text}") from None
    frames = process_file(pipeline, args.input, args.output, config, progress=not args.quiet)
    print(f"wrote {args.output} ({frames} frame{'s' if frames != 1 else ''})")
    return 0


def _network(args: argparse.Namespace) -> Network | None:
    """The clients' impaired network from --network, --uplink and --downlink (None: loopback as it is)."""
    from .tools.client import Network
    from .tools.impair import Impairment

    specs = {}
    for name in ("uplink", "downlink"):
        spec = ",".join(s for s in (args.network, getattr(args, name)) if s)
        try:
            specs[name] = Impairment.parse(spec)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"--{name if getattr(args, name) else 'network'}: {exc}") from None
    if not (specs["uplink"].active or specs["downlink"].active):
        return None
    return Network(specs["uplink"], specs["downlink"], args.seed)


def cmd_loadtest(args: argparse.Namespace) -> int:
    import asyncio

    from .tools.loadtest import run_loadtest

    try:
        width, height = (int(v) for v in args.size.split("x"))
    except ValueError:
        raise CommandError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    config: dict[str, object] = {"mode": args.mode, "model": args.model}
    if args.keyframes is not None:
        config["keyframes"] = args.keyframes
    compile = bool(device_settings(args).compile)
    network = _network(args)
    if args.soak is not None:
        return _soak(args, (height, width), config, compile)
    frames = None if args.video is None else _video(args.video, (width, height), "rgb24")
    report = asyncio.run(
        run_loadtest(
            args.sessions,
            args.seconds,
            (height, width),
            config,
            args.url,
            args.device,
            compile,
            args.server_cores,
            args.processes,
            args.client_receive == "marker",
            network,
            fec=args.fec,
            frames=frames,
        )
    )
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for run in report["runs"]:
        p50 = [s["processing_ms_p50"] for s in run["server"]]
        p95 = [s["processing_ms_p95"] for s in run["server"]]
        print(
            f"{run['sessions']} session(s) at {report['size']}: fps each {run['fps_each']} "
            f"(>= 25 for all: {run['all_at_least_25fps']}); server processing ms p50 {p50}, p95 {p95}"
        )
        print(
            f"  glass-to-glass ms p50 {run['latency_ms_p50_each']}, p95 {run['latency_ms_p95_each']} "
            f"({run['latency_frames_unreadable']} frame(s) without a readable counter)"
        )
        print(
            f"  longest freeze ms {run['longest_freeze_ms_each']}, frozen s (gaps > 200 ms) {run['frozen_s_each']}, "
            f"received kb/s {run['received_kbps_each']}, VP8 speed at the end {run['server_vp8_speed']}"
        )
        for repair in run.get("repair_each", []):
            print(f"  network: {repair}")
        if "server_cpu_ms_per_frame" in run:
            print(
                f"  server CPU {run['server_cpu_ms_per_frame']} ms/frame ({run['server_cpu_cores_busy']} of "
                f"{run['cores']} cores busy): about {run['sessions_at_25fps_estimate']} sessions at 25 fps "
                "with the clients elsewhere"
            )
    return 0


def _soak(args: argparse.Namespace, size: tuple[int, int], config: dict, compile: bool) -> int:
    import asyncio

    from .tools.loadtest import run_soak

    def show(sample: dict) -> None:
        if not args.json:
            print(
                f"{sample['t_s']:>7.0f} s: RSS {sample['rss_mb']} MB, {sample['threads']} threads, {sample['fds']} fds"
            )

    sessions = max(args.sessions)
    report = asyncio.run(run_soak(args.soak, sessions, size, config, args.url, args.device, compile, progress=show))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"soak {args.soak:g} min, {sessions} session(s) coming and going (ended: {report['sessions_ended']}): "
        f"RSS {report['rss_mb_after_warmup']} -> {report['rss_mb_end']} MB after warm-up "
        f"({report['rss_growth_after_warmup_mb']:+} MB), threads {report['threads_after_warmup']} -> "
        f"{report['threads_end']}, fds {report['fds_after_warmup']} -> {report['fds_end']}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from models.training.train import TrainOptions, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = TrainOptions(
        arch=args.arch,
        data=args.data,
        out=args.out,
        val=args.val,
        holdout=args.holdout,
        epochs=args.epochs,
        batch_size=args.batch_size,
        size=args.size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        amp=args.amp,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        init=args.init,
        workers=args.workers,
        max_steps=args.max_steps,
        progress=not args.quiet,
        name=args.name,
    )
    summary = train(options)
    print(
        json.dumps(summary, indent=2)
        if args.json
        else f"{summary['arch']}: best val IoU {summary['best_val_iou']:.4f} -> {summary['best']} "
        f"(log {summary['log']})"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from models.export.formats import TOLERANCE, export

    registry, (model,) = _registry_with(args.model)
    info = registry.info(model)
    suffix = {"onnx": "onnx", "torchscript": "pt", "tflite": "tflite"}[args.format]
    output = args.output or Path(f"{info.name}.{suffix}")
    result = export(registry.load(model, "cpu", runtime=False), info, args.format, output)
    verdict = "ok" if result.ok else f"FAILED (tolerance {TOLERANCE})"
    print(
        f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB); {result.runtime} vs PyTorch: "
        f"max |diff| {result.max_abs_diff:.2e} {verdict}"
    )
    return 0 if result.ok else 1


def cmd_quantize(args: argparse.Namespace) -> int:
    from models.export.compress import quantize_model

    registry, (model,) = _registry_with(args.model)
    info = registry.info(model)
    output = args.output or Path(f"{info.name}-int8.onnx")
    report = quantize_model(registry, model, args.calibration, args.images, output)
    print(
        f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB), calibrated on {report.images} images of "
        f"{args.calibration}; vs fp32: mean |diff| {report.mean_abs_diff:.4f}, max {report.max_abs_diff:.3f}, "
        f"{100 * report.same_side:.2f}% of pixels on the same side of 0.5"
    )
    print(
        f"measure it: backdrop evaluate --model {output} --data DIR; "
        f"backdrop bench --models {info.path or info.name} {output}"
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from models import checkpoint
    from models.export.compress import prune_checkpoint

    if not args.model.is_file():
        raise CommandError(f"{args.model} does not exist")
    pruned, sparsity = prune_checkpoint(checkpoint.load(args.model), args.amount)
    output = args.output or args.model.with_name(f"{pruned.name}.pt")
    checkpoint.save(pruned, output)
    print(
        f"wrote {output}: {100 * sparsity:.1f}% of conv weights are zero; "
        f"measure it: backdrop evaluate --model {output} --data DIR"
    )
    return 0


# --- parsers ---------------------------------------------------------------------------------------

MODEL_HELP = f"model: {MODEL_CHOICES_TEXT}, or a trained .pt / exported .onnx file"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backdrop", description="Real-time background replacement for WebRTC video.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WebRTC server and the demo page")
    add_server_options(serve)
    serve.set_defaults(func=cmd_serve)

    proxy = sub.add_parser(
        "proxy-config",
        help="the HAProxy configuration in front of `serve --processes N` (one origin, sessions routed to their "
        "process, new offers to the one with most room)",
    )
    proxy.add_argument("--processes", type=int, required=True, help="the processes `serve --processes` runs")
    proxy.add_argument(
        "--port", type=int, default=8080, help="the port HAProxy listens on: serve's --port (default: 8080)"
    )
    proxy.add_argument("--host", default="0.0.0.0", help="the address HAProxy listens on (default: 0.0.0.0)")
    proxy.add_argument("--output", type=Path, default=None, help="write it to this file (default: print it)")
    proxy.set_defaults(func=cmd_proxy_config)
    fetch = sub.add_parser("fetch-weights", help="download, verify (sha256) and cache the pinned model weights")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached copies are valid")
    fetch.add_argument(
        "--wheel", type=Path, default=None, help="use this local mediapipe wheel instead of downloading it"
    )
    fetch.set_defaults(func=cmd_fetch_weights)

    evaluate = sub.add_parser("evaluate", help="accuracy on a labelled folder, or flicker on a video")
    evaluate.add_argument("--model", default="general", help=f"{MODEL_HELP} (default: general)")
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with images/*.jpg + masks/*.png (255 = person), a folder of such folders (frame "
        "sequences, each through one stream), or a video file",
    )
    evaluate.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="edge-aware upsampling of the mask (default: on)",
    )
    evaluate.add_argument(
        "--region",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the person and segment a crop around them (default: on, as sessions do)",
    )
    evaluate.add_argument(
        "--motion",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="smoothing moves the previous mask along the optical flow first (default: on, as sessions do)",
    )
    evaluate.add_argument(
        "--smoothing",
        type=float,
        default=SessionConfig().smoothing,
        help="smoothing strength: compared against none for a video, used on frame sequences",
    )
    evaluate.add_argument(
        "--edges",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clean edges in the composite the edge error measures (default: on, as sessions do)",
    )
    evaluate.add_argument(
        "--band",
        type=int,
        default=6,
        help="labelled images: the edge error's band, +-N px around the true boundary (default: 6)",
    )
    evaluate.add_argument(
        "--edge-color",
        default=None,
        help="labelled images: the colour the edge error composites over, '#rrggbb' (default: #ff00ff, magenta)",
    )
    evaluate.add_argument(
        "--subject",
        default="all",
        type=_subject_spec,
        help="who is kept: all, main, X,Y (a point, 0..1 from the top left) or click (a click on the labelled "
        "person, deepest inside their mask); on a sequence, read on its first frame, then followed (default: all)",
    )
    evaluate.add_argument(
        "--keyframes",
        type=int,
        default=0,
        help="frame sequences and videos: the model runs at most every N frames while the flow explains the mask "
        "(default: 0, every frame)",
    )
    evaluate.add_argument("--gallery", type=Path, default=None, help="write the worst cases to this .png or .html file")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N images / frames")
    evaluate.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="only the part `train --holdout` held out of this folder (same value, same split)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_device_options(evaluate, compile_default=False)
    evaluate.set_defaults(func=cmd_evaluate)

    crowd = sub.add_parser(
        "crowd",
        help="a multi-person dev set from a labelled portrait folder: other portraits' people pasted behind each "
        "subject, the truth still the subject's mask (for evaluate --subject)",
    )
    crowd.add_argument("--data", type=Path, required=True, help="folder with images/*.jpg + masks/*.png")
    crowd.add_argument("--out", type=Path, required=True, help="the folder to write images/ and masks/ to")
    crowd.add_argument("--limit", type=int, default=None, help="only the first N images")
    crowd.add_argument("--seed", type=int, default=0, help="the same seed gives the same set (default: 0)")
    crowd.set_defaults(func=cmd_crowd)

    bench = sub.add_parser(
        "bench", help="per-stage timings at several sizes and batch sizes, vs the TFLite interpreter"
    )
    bench.add_argument(
        "--devices", nargs="+", default=None, help="devices to time (default: cpu, and cuda when present)"
    )
    bench.add_argument("--sizes", nargs="+", default=SIZES, choices=SIZES)
    bench.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16], help="batch sizes (default: 1 4 16)")
    bench.add_argument(
        "--models",
        nargs="+",
        default=["general", "landscape"],
        help="models to time (names or .pt / .onnx files), alone and in the pipeline; the first is the baseline",
    )
    bench.add_argument("--mode", default="blur", help="background mode timed in the pipeline (default: blur)")
    bench.add_argument(
        "--runs", type=int, default=20, help="timed runs per measurement; medians are reported (default: 20)"
    )
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    bench.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help=f"{DeviceSettings.model_fields['compile'].description} (default: off) [{env_name('compile')}]",
    )
    bench.add_argument(
        "--image",
        type=Path,
        default=None,
        help="a photo the pipeline is timed on (stretched to each size); default: noise, with nobody to track",
    )
    bench.add_argument(
        "--vp8-speeds",
        nargs="+",
        type=int,
        default=None,
        metavar="SPEED",
        help="instead: the server's encoders against each other at 640x480, 2 Mb/s (CPU ms a frame, PSNR of what "
        "a viewer decodes, kb/s): VP8 at these speeds, e.g. 6 8 10 12; the first encoder is the baseline",
    )
    bench.add_argument(
        "--h264-presets",
        nargs="+",
        default=None,
        metavar="PRESET",
        choices=typing.get_args(ServerSettings.model_fields["h264_preset"].annotation),
        help="instead, or after --vp8-speeds: H.264 at these x264 presets, e.g. veryfast medium",
    )
    bench.add_argument(
        "--vp8-qmins",
        nargs="+",
        type=int,
        default=None,
        metavar="QMIN",
        help="instead, or after --vp8-speeds: VP8 at the default speed with these finest quantizers (0-56), e.g. 2 10",
    )
    bench.add_argument(
        "--video",
        type=Path,
        default=None,
        help="with --vp8-speeds, --vp8-qmins or --h264-presets: a video file, or a folder of .jpg frames, to "
        "encode (its first 300 frames); default: the loadtest's hand-held photo",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --vp8-speeds, --vp8-qmins or --h264-presets: rounds of each in turn (default: 3)",
    )
    bench.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(func=cmd_bench, compile_default=False)

    load = sub.add_parser(
        "loadtest",
        help="open N real WebRTC sessions and measure the fps each gets back",
        description="Open N real WebRTC sessions and measure the fps each gets back. With the server it starts, "
        "also the server's CPU ms per frame and how many 25 fps sessions the machine's cores could serve "
        "with the clients elsewhere (the client peers run in this process, on the same machine).",
    )
    load.add_argument(
        "--sessions",
        nargs="+",
        type=int,
        default=[1, 2, 3, 4],
        help="session counts to measure, in turn (default: 1 2 3 4)",
    )
    load.add_argument("--seconds", type=float, default=10.0, help="measuring time per session count (default: 10)")
    load.add_argument("--size", default="640x480", help="frame size WxH sent by each client (default: 640x480)")
    load.add_argument("--mode", default="blur", help="background mode (default: blur)")
    load.add_argument("--model", default="general", help="model name the sessions ask for (default: general)")
    load.add_argument(
        "--keyframes",
        type=int,
        default=None,
        help="the sessions' config.keyframes: the model at most every N frames (default: the server's default)",
    )
    load.add_argument("--url", default=None, help="server to test (default: start `backdrop serve` on a free port)")
    load.add_argument("--device", default=None, help="device for the started server")
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes the started server runs, behind its own HAProxy above 1 (default: 1)",
    )
    load.add_argument(
        "--server-cores",
        type=int,
        default=0,
        help="run the started server on this many cores and the client peers on the others, so the figures are "
        "the server's alone (default: 0, all share every core)",
    )
    load.add_argument(
        "--client-receive",
        choices=["marker", "timestamp"],
        default="marker",
        help="when the client peers decode a returned frame: on its last packet (RTP marker bit), as browsers do, "
        "or on the next frame's first packet, as aiortc alone does, a frame interval later (default: marker)",
    )
    load.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help=f"compile the started server's models (default: on) [{env_name('compile')}]",
    )
    load.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="MINUTES",
        help="instead: for MINUTES, keep max(--sessions) sessions joining and leaving (each streams 3-15 s, "
        "then ends by DELETE or by hanging up) and sample the started server's RSS, threads and fds every 10 s",
    )
    impair_help = (
        "impair the media packets each client {}, in user space: comma-separated loss=5%% (long-run share), "
        "burst=2 (mean run of lost packets; Gilbert-Elliott), delay=40ms, jitter=10ms (uniform +/-, reorders), "
        "rate=600kbps (the link's rate), queue=300ms (what it holds before it drops) (default: none)"
    )
    load.add_argument("--uplink", default="", metavar="SPEC", help=impair_help.format("sends"))
    load.add_argument("--downlink", default="", metavar="SPEC", help=impair_help.format("receives"))
    load.add_argument(
        "--network", default="", metavar="SPEC", help="the same impairment both ways (--uplink/--downlink add to it)"
    )
    load.add_argument("--seed", type=int, default=0, help="seed of the impairments' draws (default: 0)")
    load.add_argument(
        "--video",
        type=Path,
        default=None,
        help="what each client's camera sends, in a loop: a video file or a folder of .jpg frames (its first 300, "
        "scaled to --size); a real camera's noise and motion cost the codecs more than the default, a photo "
        "shifted a few pixels a frame",
    )
    load.add_argument(
        "--fec",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the client peers offer forward error correction (ULPFEC in RED), and a server it starts takes it "
        "(--no-fec: neither, for a comparison in the same build) (default: on)",
    )
    load.add_argument("--output", type=Path, default=None, help="also write the JSON report to this file")
    load.add_argument("--json", action="store_true", help="print JSON")
    load.set_defaults(func=cmd_loadtest, compile_default=True)

    train = sub.add_parser(
        "train",
        help="train a segmentation network on a labelled folder",
        description="Train from scratch (or from a local backbone file) on images/*.jpg + masks/*.png "
        "or NAME.jpg + NAME_mask.png; writes OUT/best.pt, OUT/last.pt and OUT/metrics.csv.",
    )
    train.add_argument("--arch", required=True, choices=list(ARCHS), help="architecture")
    train.add_argument("--data", type=Path, required=True, help="labelled folder to train on")
    train.add_argument(
        "--val",
        type=Path,
        default=None,
        help="separate labelled folder to validate on (default: hold out part of --data)",
    )
    train.add_argument(
        "--holdout",
        type=float,
        default=DEFAULT_HOLDOUT,
        help="held-out part of --data when no --val: a fraction, or a count if >= 1; the split is fixed and "
        f"seeded, `evaluate --holdout` uses the same (default: {DEFAULT_HOLDOUT})",
    )
    train.add_argument("--epochs", type=int, default=30, help="epochs (default: 30)")
    train.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16)")
    train.add_argument(
        "--size", type=int, default=256, help="square input size the network trains and runs at (default: 256)"
    )
    train.add_argument(
        "--lr", type=float, default=2e-3, help="peak AdamW learning rate; warm-up then cosine decay (default: 2e-3)"
    )
    train.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    train.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="mixed precision: fp16 on CUDA, bf16 on CPU (default: off)",
    )
    train.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    train.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and augmentation (default: 0)")
    train.add_argument(
        "--out", type=Path, required=True, help="output folder; its name is the model's name unless --name"
    )
    train.add_argument("--name", default=None, help="name stored in the checkpoints (default: the --out folder's name)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        help="local state dict (e.g. torchvision ImageNet weights) for the backbone; nothing is downloaded",
    )
    train.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: 0)")
    train.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch (quick runs)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="export a model to ONNX, TorchScript or TFLite, checked against PyTorch")
    export.add_argument("--model", required=True, help="model: general, landscape, or a trained .pt file")
    export.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="onnx (any batch; checked with ONNX Runtime), torchscript (checked with torch.jit) or tflite "
        "(batch 1; needs backdrop[tflite]; checked with ai-edge-litert)",
    )
    export.add_argument(
        "--output", type=Path, default=None, help="output file (default: NAME.onnx / NAME.pt / NAME.tflite)"
    )
    export.set_defaults(func=cmd_export)

    quantize = sub.add_parser(
        "quantize", help="int8 post-training quantization to ONNX (ONNX Runtime, calibrated on images)"
    )
    quantize.add_argument("--model", required=True, help="model: a name, a trained .pt or an exported .onnx file")
    quantize.add_argument(
        "--calibration", type=Path, required=True, help="labelled folder whose images calibrate the activation ranges"
    )
    quantize.add_argument("--images", type=int, default=64, help="calibration images (default: 64)")
    quantize.add_argument("--output", type=Path, default=None, help="output .onnx (default: NAME-int8.onnx)")
    quantize.set_defaults(func=cmd_quantize)

    prune = sub.add_parser("prune", help="magnitude pruning of a trained checkpoint (global L1 over conv weights)")
    prune.add_argument("--model", type=Path, required=True, help="trained checkpoint (.pt)")
    prune.add_argument("--amount", type=float, default=0.5, help="fraction of conv weights set to zero (default: 0.5)")
    prune.add_argument(
        "--output", type=Path, default=None, help="output .pt (default: NAME-prunedNN.pt beside the input)"
    )
    prune.set_defaults(func=cmd_prune)

    process = sub.add_parser("process", help="replace the background of an image or video file")
    process.add_argument("input", type=Path, help="image (.jpg, .png, ...) or video (.mp4, .webm, ...)")
    process.add_argument("output", type=Path, help="where to write the result (video: H.264 .mp4)")
    _add_session_options(process)
    process.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_options(process, compile_default=False)
    process.set_defaults(func=cmd_process)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):  # a setting from a flag or its environment variable
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
        fields = [str(e["loc"][0]) for e in exc.errors() if e["loc"]]
        where = f" (flag or {', '.join(env_name(f) for f in fields)})" if fields else ""
        return "; ".join(problems) + where
    if isinstance(exc, KeyError) and exc.args:  # str() of a KeyError is its repr
        return str(exc.args[0])
    if isinstance(exc, (CommandError, OSError, ValueError, RuntimeError)):
        return str(exc) or type(exc).__name__
    return f"internal error ({type(exc).__name__}: {exc})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `serve --processes` starts copies of itself
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure of a command ends in one line, never a traceback
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
