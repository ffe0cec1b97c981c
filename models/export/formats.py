"""Export a zoo model (built-in or trained) to ONNX, TorchScript or TFLite, each checked against
PyTorch on the same inputs by the runtime that will run it."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..wrappers.onnxruntime_model import METADATA_PREFIX
from ..zoo import ModelInfo

FORMATS = ("onnx", "torchscript", "tflite")
TOLERANCE = 1e-3


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # exported vs PyTorch on the check inputs
    runtime: str

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


def check_inputs(size: tuple[int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Random pixels plus a smooth gradient image (random noise alone rarely crosses the decision boundary)."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 3, h, w, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    noise[0] = torch.stack([yy, xx, (yy + xx) / 2])
    return noise


def export(model: nn.Module, info: ModelInfo, fmt: str, path: Path) -> ExportResult:
    """Export `model` (float32, CPU) to `path` and compare the exported file's outputs with PyTorch's."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = model.to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    inputs = check_inputs(info.input_size)
    with torch.inference_mode():
        expected = model(inputs).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    runner = {"onnx": _onnx, "torchscript": _torchscript, "tflite": _tflite}[fmt]
    actual, runtime = runner(model, info, path, inputs)
    return ExportResult(path, fmt, float(np.abs(actual - expected).max()), runtime)


def _onnx(model: nn.Module, info: ModelInfo, path: Path, inputs: torch.Tensor) -> tuple[np.ndarray, str]:
    import onnx
    import onnxruntime as ort

    example = inputs[:2]  # not 1: export specialises a dimension whose example size is 1
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["mask"],
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},),
            verbose=False,
        )
    graph = onnx.load(str(path))
    metadata = {
        "name": info.name,
        "input_size": f"{info.input_size[0]}x{info.input_size[1]}",
        "source": info.description,
    }
    for key, value in metadata.items():
        graph.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": inputs.numpy()})[0], f"onnxruntime {ort.__version__}"


def _torchscript(model: nn.Module, info: ModelInfo, path: Path, inputs: torch.Tensor) -> tuple[np.ndarray, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode and says so; it still serves C++/mobile
        scripted = torch.jit.trace(model, inputs[:1], check_trace=False)
        scripted.save(str(path))
        loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return loaded(inputs).numpy(), f"torch.jit {torch.__version__}"


def _tflite(model: nn.Module, info: ModelInfo, path: Path, inputs: torch.Tensor) -> tuple[np.ndarray, str]:
    try:
        import litert_torch
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeError("TFLite export needs the converter: pip install 'backdrop[tflite]' (litert-torch)") from None
    with warnings.catch_warnings(), _quiet("absl"):
        warnings.simplefilter("ignore")
        litert_torch.convert(model, (inputs[:1],)).export(str(path))
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for i in range(len(inputs)):  # converted with a fixed batch of 1
        interpreter.set_tensor(inp["index"], inputs[i : i + 1].numpy())
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(outputs), "ai-edge-litert (TFLite)"


class _quiet:
    """Lower a chatty library's logger for the duration of an export."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
