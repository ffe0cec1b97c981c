"""Training, checkpoints, export, compression and serving of trained models, on a dataset the tests make."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from models import checkpoint as ckpt
from models import load_model, model_info
from models.export.formats import TOLERANCE, export
from models.labelled import labelled_pairs, split_pairs
from models.nets import ARCHS, build
from models.training.data import PortraitDataset
from models.training.losses import segmentation_loss
from models.wrappers import Segmenter
from models.zoo import ModelInfo, ModelRegistry
from server.tools.client import Peer

from conftest import backdrop, open_session
from synthetic import make_portraits

HOLDOUT = 8


@pytest.fixture(scope="module")
def portraits(tmp_path_factory) -> Path:
    return make_portraits(tmp_path_factory.mktemp("portraits"), count=48, size=(96, 128))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, portraits) -> Path:
    """A U-Net trained by the `train` command for a few seconds: good enough to find the synthetic person."""
    out = tmp_path_factory.mktemp("runs") / "shapes-unet"
    result = backdrop(
        "train",
        "--arch",
        "unet",
        "--data",
        str(portraits),
        "--holdout",
        str(HOLDOUT),
        "--epochs",
        "10",
        "--size",
        "64",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--quiet",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["best_val_iou"] > 0.8, summary
    return Path(summary["best"])


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.training
@pytest.mark.parametrize("arch", list(ARCHS))
def test_two_training_steps_reduce_the_loss(arch: str, portraits: Path) -> None:
    torch.manual_seed(0)
    dataset = PortraitDataset(labelled_pairs(portraits)[:4], (64, 64))
    images, masks = (torch.stack(t) for t in zip(*(dataset[i] for i in range(4)), strict=True))
    x, target = images.float() / 255, masks.float()
    model = Segmenter(build(arch)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):  # loss before, after one step, after two
        loss = segmentation_loss(model.logits(x), target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[2] < losses[0], losses


@pytest.mark.training
@pytest.mark.parametrize("arch", list(ARCHS))
def test_checkpoint_round_trip_gives_identical_outputs(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Segmenter(build(arch)).eval()
    path = tmp_path / f"{arch}.pt"
    ckpt.save(ckpt.Checkpoint(arch, (64, 64), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), model.state_dict(), "x"), path)
    loaded = ckpt.load(path)
    assert loaded.arch == arch and loaded.input_size == (64, 64) and loaded.mean == (0.5, 0.5, 0.5)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded.model()(x))


@pytest.mark.training
def test_not_a_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    with pytest.raises(ckpt.CheckpointError, match="not a Backdrop checkpoint"):
        ckpt.load(bogus)
    result = backdrop("evaluate", "--model", str(bogus), "--data", str(tmp_path))
    assert result.returncode == 2 and "not a Backdrop checkpoint" in result.stderr


@pytest.mark.training
def test_train_logs_keeps_best_and_resumes(trained: Path, portraits: Path) -> None:
    out = trained.parent
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    best = ckpt.load(out / "best.pt")
    assert best.training is None and best.meta["val_iou"] == max(float(r["val_iou"]) for r in rows)
    assert ckpt.load(out / "last.pt").training is not None

    result = backdrop(
        "train",
        "--arch",
        "unet",
        "--data",
        str(portraits),
        "--holdout",
        str(HOLDOUT),
        "--epochs",
        "11",
        "--size",
        "64",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--resume",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "resuming unet after epoch 10" in result.stdout
    assert [int(r["epoch"]) for r in _rows(out / "metrics.csv")] == list(range(1, 12))


@pytest.mark.training
def test_training_is_reproducible(tmp_path: Path, portraits: Path) -> None:
    runs = []
    for name in ("a", "b"):
        result = backdrop(
            "train",
            "--arch",
            "deeplabv3-mobilenetv3",
            "--data",
            str(portraits),
            "--holdout",
            str(HOLDOUT),
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--size",
            "64",
            "--batch-size",
            "4",
            "--seed",
            "3",
            "--out",
            str(tmp_path / name),
            "--quiet",
        )
        assert result.returncode == 0, result.stderr
        runs.append(_rows(tmp_path / name / "metrics.csv")[0])
    assert runs[0]["train_loss"] == runs[1]["train_loss"] and runs[0]["val_iou"] == runs[1]["val_iou"]


@pytest.mark.unit
def test_holdout_split_is_fixed_and_disjoint(portraits: Path) -> None:
    pairs = labelled_pairs(portraits)
    train, held = split_pairs(pairs, HOLDOUT)
    assert len(held) == HOLDOUT and len(train) == len(pairs) - HOLDOUT
    assert not {p[0] for p in train} & {p[0] for p in held}
    assert split_pairs(pairs, HOLDOUT) == (train, held)


@pytest.mark.unit
def test_flat_layout_is_read(tmp_path: Path, portraits: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for image, mask in labelled_pairs(portraits)[:3]:
        (flat / image.name).write_bytes(image.read_bytes())
        (flat / f"{image.stem}_matte.png").write_bytes(mask.read_bytes())
    assert [p[0].name for p in labelled_pairs(flat)] == [p[0].name for p in labelled_pairs(portraits)[:3]]


@pytest.mark.training
def test_evaluate_export_quantize_prune_a_trained_checkpoint(trained: Path, portraits: Path, tmp_path: Path) -> None:
    def evaluate(model: Path) -> dict:
        result = backdrop(
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(portraits),
            "--holdout",
            str(HOLDOUT),
            "--json",
            "--device",
            "cpu",
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    fp32 = evaluate(trained)
    assert fp32["images"] == HOLDOUT and fp32["mean_iou"] > 0.8

    onnx_file = tmp_path / "shapes.onnx"
    result = backdrop("export", "--model", str(trained), "--format", "onnx", "--output", str(onnx_file))
    assert result.returncode == 0 and " ok" in result.stdout, result.stdout + result.stderr
    assert abs(evaluate(onnx_file)["mean_iou"] - fp32["mean_iou"]) < 1e-3

    result = backdrop(
        "export", "--model", str(trained), "--format", "torchscript", "--output", str(tmp_path / "shapes.ts.pt")
    )
    assert result.returncode == 0 and " ok" in result.stdout, result.stdout + result.stderr
    scripted = torch.jit.load(str(tmp_path / "shapes.ts.pt"))
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert (scripted(x) - load_model(str(trained), "cpu")(x)).abs().max() <= TOLERANCE

    int8 = tmp_path / "shapes-int8.onnx"
    result = backdrop(
        "quantize", "--model", str(trained), "--calibration", str(portraits), "--images", "16", "--output", str(int8)
    )
    assert result.returncode == 0, result.stderr
    assert int8.stat().st_size < 0.4 * onnx_file.stat().st_size  # int8 weights: about a quarter of fp32
    assert abs(evaluate(int8)["mean_iou"] - fp32["mean_iou"]) < 0.05

    pruned = tmp_path / "shapes-pruned.pt"
    result = backdrop("prune", "--model", str(trained), "--amount", "0.3", "--output", str(pruned))
    assert result.returncode == 0 and "30.0% of conv weights are zero" in result.stdout, result.stdout + result.stderr
    assert evaluate(pruned)["mean_iou"] > 0.5


@pytest.mark.training
@pytest.mark.usefixtures("weights")
@pytest.mark.parametrize("name", ["general", *ARCHS])
def test_onnx_export_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    if name == "general":
        model, info = load_model("general", "cpu", runtime=False), model_info("general")
    else:
        torch.manual_seed(2)
        model, info = Segmenter(build(name)).eval(), ModelInfo(name, (96, 96), name)
    result = export(model, info, "onnx", tmp_path / f"{name}.onnx")
    assert result.max_abs_diff <= TOLERANCE


@pytest.mark.training
def test_tflite_export_of_a_trained_checkpoint(trained: Path, tmp_path: Path) -> None:
    output = tmp_path / "shapes.tflite"
    result = backdrop("export", "--model", str(trained), "--format", "tflite", "--output", str(output))
    assert result.returncode == 0 and " ok" in result.stdout, result.stdout + result.stderr
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(output))
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 3, 64, 64]


@pytest.mark.training
async def test_server_serves_a_trained_checkpoint(trained: Path, tmp_path: Path, make_client) -> None:
    name = ModelRegistry().register_file(trained)
    client = await make_client(models=[trained], default_model=name)
    listed = await (await client.get("/models")).json()
    assert name in [m["name"] for m in listed["models"]] and listed["default"] == name

    # A new portrait of the kind the model learned, scaled up to a camera's 640x480, and where its
    # person and background are for sure.
    root = make_portraits(tmp_path / "frame", count=1, size=(96, 128), seed=7)
    frame = np.asarray(Image.open(root / "images" / "00000.jpg").convert("RGB").resize((640, 480), Image.BILINEAR))
    person = np.asarray(Image.open(root / "masks" / "00000.png").resize((640, 480), Image.NEAREST)) >= 128
    inside = ndimage.binary_erosion(person, iterations=40)
    outside = ~ndimage.binary_dilation(person, iterations=60)

    peer = Peer([frame] * 4)
    body = await open_session(client, peer, {"mode": "color", "color": "#0000ff"})
    try:
        described = await (await client.get(f"/sessions/{body['session_id']}")).json()
        assert described["config"]["model"] == name
        got = (await peer.frames(12))[-1].astype(float)
        assert np.abs(got[outside] - [0, 0, 255]).mean() < 25
        assert np.abs(got[inside] - frame[inside]).mean() < 25
    finally:
        await peer.close()


@pytest.mark.training
@pytest.mark.usefixtures("weights")
def test_process_and_bench_take_a_checkpoint(trained: Path, tmp_path: Path) -> None:
    root = make_portraits(tmp_path / "photo", count=1, size=(96, 128), seed=9)
    source = tmp_path / "in.png"
    Image.open(root / "images" / "00000.jpg").resize((320, 240), Image.BILINEAR).save(source)
    person = np.asarray(Image.open(root / "masks" / "00000.png").resize((320, 240), Image.NEAREST)) >= 128
    result = backdrop(
        "process",
        str(source),
        str(tmp_path / "out.png"),
        "--model",
        str(trained),
        "--mode",
        "color",
        "--color",
        "#ff0000",
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(float)
    outside = ~ndimage.binary_dilation(person, iterations=30)
    assert np.abs(out[outside] - [255, 0, 0]).mean() < 25

    result = backdrop(
        "bench",
        "--models",
        str(trained),
        "--sizes",
        "640x480",
        "--batches",
        "1",
        "--runs",
        "3",
        "--devices",
        "cpu",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (row,) = report["model"]
    assert row["model"] == "shapes-unet" and row["ms_per_frame"] > 0 and row["baseline"] == "tflite mediapipe-general"
    assert row["ratio_vs_tflite"] > 0 and report["pipeline"][0]["per_frame_ms"] > 0


@pytest.mark.training
def test_mixed_precision_training_runs_on_cpu(tmp_path: Path, portraits: Path) -> None:
    result = backdrop(
        "train",
        "--arch",
        "segnet",
        "--data",
        str(portraits),
        "--holdout",
        str(HOLDOUT),
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--size",
        "64",
        "--batch-size",
        "4",
        "--amp",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "amp"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    row = _rows(tmp_path / "amp" / "metrics.csv")[0]
    assert np.isfinite(float(row["train_loss"])) and 0.0 <= float(row["val_iou"]) <= 1.0


@pytest.mark.training
@pytest.mark.cuda
def test_training_on_cuda_with_fp16_reduces_the_loss(tmp_path: Path, portraits: Path) -> None:
    result = backdrop(
        "train",
        "--arch",
        "unet",
        "--data",
        str(portraits),
        "--holdout",
        str(HOLDOUT),
        "--epochs",
        "4",
        "--size",
        "64",
        "--batch-size",
        "8",
        "--amp",
        "--device",
        "cuda",
        "--out",
        str(tmp_path / "cuda"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "cuda" / "metrics.csv")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
