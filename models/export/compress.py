"""Post-training compression: int8 quantization (ONNX Runtime, static, calibrated on real images,
checked against the float model) and magnitude pruning (torch.nn.utils.prune) of a trained checkpoint."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn
from torch.nn.utils import prune

from ..checkpoint import Checkpoint
from ..images import read_image
from ..labelled import labelled_pairs
from ..zoo import ModelRegistry
from .formats import check_inputs, export


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of (1,3,H,W) float32 arrays."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name, self.batches = name, iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


def calibration_images(pairs: list[tuple[Path, Path]], size: tuple[int, int], count: int) -> list[np.ndarray]:
    """Up to `count` images of a labelled folder, stretched to `size`, as (1,3,H,W) floats in [0,1]."""
    step = max(1, len(pairs) // count)
    images = [read_image(image, size=size) for image, _ in pairs[::step][:count]]
    return [np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0 for image in images]


def quantize_onnx(source: Path, output: Path, images: list[np.ndarray]) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) of an ONNX model; activation ranges come from `images`."""
    if not images:
        raise ValueError("quantization needs at least one calibration image")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        name = onnx.load(str(prepared)).graph.input[0].name
        quantize_static(
            str(prepared),
            str(output),
            _Calibration(name, images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    _copy_metadata(source, output, suffix="int8")
    return output


@dataclass(frozen=True)
class QuantizeReport:
    """The int8 file and how closely it agrees with the float model it came from."""

    output: Path
    images: int  # calibration images used
    mean_abs_diff: float
    max_abs_diff: float
    same_side: float  # fraction of pixels on the same side of 0.5 as the float model


def quantize_model(registry: ModelRegistry, model: str, calibration: Path, count: int, output: Path) -> QuantizeReport:
    """Quantize a registered model (exported to ONNX first unless it is one) and compare it with the original
    on a synthetic check image and a calibration image."""
    info = registry.info(model)
    images = calibration_images(labelled_pairs(calibration), info.input_size, count)
    with tempfile.TemporaryDirectory() as tmp:
        source = info.path if info.path is not None and info.path.suffix == ".onnx" else None
        if source is None:
            source = export(registry.load(model, "cpu", runtime=False), info, "onnx", Path(tmp) / "fp32.onnx").path
        quantize_onnx(source, output, images)
    quantized = registry.load(registry.register_file(output), "cpu")
    reference = registry.load(model, "cpu")
    x = torch.cat([check_inputs(info.input_size), torch.from_numpy(images[0])])
    with torch.inference_mode():
        ours, theirs = quantized(x), reference(x)
    diff = (ours - theirs).abs()
    same = ((ours >= 0.5) == (theirs >= 0.5)).float().mean().item()
    return QuantizeReport(output, len(images), diff.mean().item(), diff.max().item(), same)


def _copy_metadata(source: Path, output: Path, suffix: str) -> None:
    """Carry the name/size metadata over (the quantizer drops it), naming the result `<name>-<suffix>`."""
    src, dst = onnx.load(str(source)), onnx.load(str(output))
    existing = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        value = f"{prop.value}-{suffix}" if prop.key.endswith(".name") else prop.value
        if prop.key in existing:
            next(p for p in dst.metadata_props if p.key == prop.key).value = value
        else:
            dst.metadata_props.add(key=prop.key, value=value)
    onnx.save(dst, str(output))


def prune_checkpoint(checkpoint: Checkpoint, amount: float) -> tuple[Checkpoint, float]:
    """Zero the `amount` fraction of smallest-magnitude conv weights, ranked over the whole network
    (global L1); returns the pruned checkpoint and the achieved sparsity of those weights."""
    if not 0.0 < amount < 1.0:
        raise ValueError("amount must be between 0 and 1")
    model = checkpoint.model()
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in convs:
        prune.remove(module, name)  # bake the mask into the weights: a plain state dict again
    zeros = sum(int((m.weight == 0).sum()) for m, _ in convs)
    total = sum(m.weight.numel() for m, _ in convs)
    meta = {
        **checkpoint.meta,
        "pruned": {"method": "global L1 unstructured", "amount": amount, "conv_sparsity": zeros / total},
    }
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = Checkpoint(
        checkpoint.arch,
        checkpoint.input_size,
        checkpoint.mean,
        checkpoint.std,
        state,
        f"{checkpoint.name}-pruned{round(amount * 100)}",
        meta,
    )
    return pruned, zeros / total
