"""The `backdrop` commands as a user runs them: files in, files and numbers out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.training.metrics import boundary_f, iou
from server.files.media import VideoWriter, read_video
from server.pipeline.config import SessionConfig
from server.pipeline.frames import Frame, StreamState
from server.tools.client import photo_frames

from conftest import FACE, TOP_RIGHT, backdrop, region


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, astronaut, grace_hopper, pipeline) -> Path:
    """A tiny labelled folder: photos plus masks made by thresholding the model's own output."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for name, photo in (("00001", astronaut), ("00002", grace_hopper)):
        frame = photo_frames(photo, size=(320, 240), count=1)[0]
        Image.fromarray(frame).save(root / "images" / f"{name}.jpg", quality=98)
        mask = pipeline.masks([Frame(frame, StreamState(), SessionConfig(smoothing=0.0, refine=False))])[0].mask
        Image.fromarray(((mask >= 0.5).numpy() * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
    return root


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_process_image(tmp_path, astronaut) -> None:
    source = tmp_path / "in.png"
    frame = photo_frames(astronaut, count=1)[0]
    Image.fromarray(frame).save(source)
    result = backdrop("process", str(source), str(tmp_path / "out.png"), "--mode", "color", "--color", "#ff0000")
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert out.shape == frame.shape
    assert np.abs(region(out, TOP_RIGHT) - [255, 0, 0]).mean() < 3
    assert np.abs(region(out, FACE) - region(frame, FACE)).mean() < 3


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_process_video_keeps_size_and_frame_count(tmp_path, astronaut) -> None:
    source = tmp_path / "in.mp4"
    with VideoWriter(source, rate=25) as writer:
        for frame in photo_frames(astronaut, size=(240, 320), count=10):
            writer.write(frame)
    result = backdrop(
        "process", str(source), str(tmp_path / "out.mp4"), "--mode", "color", "--color", "#0000ff", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    frames = list(read_video(tmp_path / "out.mp4"))
    assert len(frames) == 10 and frames[0].shape == (240, 320, 3)
    assert np.abs(frames[-1][:20, -30:].reshape(-1, 3).astype(float) - [0, 0, 255]).mean() < 20


@pytest.mark.e2e
def test_process_refuses_bad_input(tmp_path) -> None:
    result = backdrop("process", str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = backdrop("process", str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--blur", "3")
    assert result.returncode != 0


@pytest.mark.e2e
def test_evaluate_folder_json_and_gallery(tmp_path, labelled) -> None:
    gallery = tmp_path / "worst.png"
    result = backdrop(
        "evaluate", "--model", "general", "--data", str(labelled), "--no-refine", "--json", "--gallery", str(gallery)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 2 and report["mean_iou"] > 0.99 and report["boundary_f"] > 0.95
    with Image.open(gallery) as sheet:
        assert sheet.width >= 4 * 100 and sheet.height >= 2 * 240


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_evaluate_video_reports_flicker(tmp_path, astronaut) -> None:
    source = tmp_path / "clip.mp4"
    with VideoWriter(source, rate=25) as writer:
        for frame in photo_frames(astronaut, size=(240, 320), count=12):
            writer.write(frame)
    result = backdrop("evaluate", "--data", str(source), "--json", "--smoothing", "0.8")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 12 and report["flicker_raw"] > 0
    assert report["flicker_smoothed"] < report["flicker_raw"]


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_bench_writes_json(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = backdrop(
        "bench", "--sizes", "640x480", "--batches", "1", "2", "--runs", "3", "--models", "general", "fullbody",
        "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert min(report["tflite"]["mediapipe-general"]) > 0 and min(report["tflite"]["mediapipe-pose"]) > 0
    rows = report["pipeline"]
    assert {(r["model_choice"], r["size"], r["batch"]) for r in rows} == {
        (m, "640x480", b) for m in ("mediapipe-general", "mediapipe-pose") for b in (1, 2)
    }
    assert all(r["ratio_vs_first"] == 1.0 for r in rows if r["model_choice"] == "mediapipe-general")
    for row in rows:
        assert row["per_frame_ms"] > 0 and set(row) >= {
            "upload",
            "model",
            "smoothing",
            "refine",
            "composite",
            "download",
        }
    assert all(r["ratio_vs_tflite"] > 0 for r in report["model"])
    assert "x TFLite" in result.stdout


@pytest.mark.e2e
def test_missing_weights_say_what_to_run(tmp_path) -> None:
    image = tmp_path / "in.png"
    Image.new("RGB", (64, 48)).save(image)
    result = backdrop(
        "process", str(image), str(tmp_path / "out.png"),
        env={"BACKDROP_WEIGHTS": str(tmp_path / "empty"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "backdrop fetch-weights" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.unit
def test_metrics_on_known_shapes() -> None:
    a = torch.zeros(100, 100, dtype=torch.bool)
    a[20:80, 20:80] = True
    b = torch.zeros_like(a)
    b[20:80, 20:50] = True
    assert iou(a, a) == 1.0 and iou(a, b) == pytest.approx(0.5)
    assert boundary_f(a, a) == 1.0
    shifted = torch.roll(a, 1, dims=1)
    assert boundary_f(a, shifted) == 1.0  # within tolerance
    far = torch.zeros_like(a)
    far[0:10, 0:10] = True
    assert boundary_f(a, far) < 0.2


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_loadtest_reports_fps_per_session(tmp_path) -> None:
    out = tmp_path / "load.json"
    result = backdrop("loadtest", "--sessions", "1", "--seconds", "2", "--mode", "color", "--output", str(out))
    assert result.returncode == 0, result.stderr
    run = json.loads(out.read_text())["runs"][0]
    assert run["sessions"] == 1 and run["fps_each"][0] > 1
    assert run["server"][0]["frames_out"] > 0 and run["server"][0]["processing_ms_p50"] > 0
    # The started server's own CPU time per frame: positive, and no more than all cores for the whole run.
    assert 0 < run["server_cpu_ms_per_frame"] <= run["cores"] * 2000.0 / sum(run["fps_each"])
    assert run["sessions_at_25fps_estimate"] >= 0
    # Glass-to-glass, from the counter drawn into the sent frames: readable on most returned frames.
    p50, p95 = run["latency_ms_p50_each"][0], run["latency_ms_p95_each"][0]
    assert 0 < p50 <= p95 < 2000
    assert run["latency_frames_unreadable"] <= 0.2 * run["fps_each"][0] * 2


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_loadtest_pins_the_server_apart_from_the_clients(tmp_path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    too_many = backdrop("loadtest", "--sessions", "1", "--server-cores", str(len(cores)))
    assert too_many.returncode != 0 and "--server-cores" in too_many.stderr and "Traceback" not in too_many.stderr
    out = tmp_path / "load.json"
    result = backdrop(
        "loadtest", "--sessions", "1", "--seconds", "2", "--mode", "color", "--server-cores", "1", "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["server_cpus"] == cores[:1] and report["client_cpus"] == cores[1:]
    assert report["health"]["workers"] == 1  # the server saw one core: one single-threaded worker
    run = report["runs"][0]
    assert run["fps_each"][0] > 1 and run["cores"] == 1
    assert 0 < run["server_cpu_cores_busy"] <= 1.1  # one core, measured over a little more than the run


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_command_errors_end_in_one_line(tmp_path, astronaut) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    image = tmp_path / "in.png"
    Image.fromarray(photo_frames(astronaut, size=(120, 160), count=1)[0]).save(image)
    for args in (
        ("prune", "--model", str(junk)),
        ("process", str(image), str(tmp_path / "out.mp4"), "--quiet"),
        ("evaluate", "--data", str(tmp_path / "nowhere")),
        ("process", str(image), str(tmp_path / "out.png"), "--model", "nope"),
        ("loadtest", "--video", str(tmp_path / "none.mp4")),
        ("bench", "--vp8-speeds", "6", "10", "--video", str(tmp_path / "none.mp4")),
        ("bench", "--vp8-speeds", "6", "--video", str(tmp_path)),  # a folder without frames
        ("bench", "--vp8-qmins", "2", "57"),
        ("bench", "--vp8-speeds", "6", "17"),
    ):
        result = backdrop(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    # A bad environment variable for a flag is named as such.
    result = backdrop("serve", "--no-compile", timeout=60, env={**os.environ, "BACKDROP_PORT": "x"})
    assert result.returncode == 2 and result.stderr.startswith("error: port: ") and "BACKDROP_PORT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = backdrop("serve", "--no-compile", "--vp8-speed", "17", timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: vp8_speed: "), result.stderr
    result = backdrop("serve", "--no-compile", "--vp8-speed-max", "3", timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: vp8_speed_max: "), result.stderr
    result = backdrop("serve", "--no-compile", "--vp8-qmin", "57", timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: vp8_qmin: "), result.stderr


@pytest.mark.unit
def test_help_answers_without_loading_torch() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from server.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print('torch' in sys.modules, 'serve' in out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "True"]
    assert "run the WebRTC server" in backdrop("--help").stdout


@pytest.mark.e2e
def test_the_wheel_ships_the_page(tmp_path) -> None:
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), root],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("backdrop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"server/web/static/{name}" for name in ("index.html", "app.js", "style.css")} <= names
    assert not any(name.startswith("static/") for name in names)


@pytest.mark.e2e
@pytest.mark.usefixtures("weights")
def test_loadtest_soak_samples_the_server_while_sessions_come_and_go(tmp_path) -> None:
    out = tmp_path / "soak.json"
    args = ("--soak", "0.4", "--sessions", "2", "--no-compile", "--mode", "color", "--size", "320x240")
    result = backdrop("loadtest", *args, "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "RSS" in result.stdout and "threads" in result.stdout
    report = json.loads(out.read_text())
    assert sum(n for how, n in report["sessions_ended"].items() if how in ("delete", "hang up")) >= 2
    assert len(report["samples"]) >= 3 and all(s["rss_mb"] > 0 for s in report["samples"])
    # Sessions ended every way leave the server's threads and files where they were.
    assert report["threads_end"] <= report["threads_after_warmup"] + 2
    assert report["fds_end"] <= report["fds_after_warmup"] + 2
