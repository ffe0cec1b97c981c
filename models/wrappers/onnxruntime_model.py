"""An exported ONNX segmenter (e.g. an int8-quantized one) served through ONNX Runtime with the zoo's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

METADATA_PREFIX = "backdrop."


class OnnxSegmenter(nn.Module):
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) probabilities, computed by ONNX Runtime on the CPU.

    Tensors on other devices or dtypes are moved to float32 CPU and the result moved back.
    """

    def __init__(self, source: Path | bytes, threads: int | None = None) -> None:
        super().__init__()
        path = "<in memory>" if isinstance(source, bytes) else source
        options = ort.SessionOptions()
        # One pool per session: the pipeline's workers each run frames on a thread of their own.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            model = source if isinstance(source, bytes) else str(source)
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({str(exc)[:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not all(isinstance(d, int) for d in inputs[0].shape[2:]):
            raise ValueError(f"{path}: expected one (N,3,H,W) input with a fixed H and W")
        self.input_name = inputs[0].name
        self.input_size: tuple[int, int] = tuple(inputs[0].shape[2:])
        self.fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None
        self.metadata = {
            k[len(METADATA_PREFIX) :]: v
            for k, v in self.session.get_modelmeta().custom_metadata_map.items()
            if k.startswith(METADATA_PREFIX)
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.fixed_batch is not None and array.shape[0] != self.fixed_batch:
            # A model exported with a fixed batch runs its frames one batch at a time.
            out = np.concatenate(
                [self._run(array[i : i + self.fixed_batch]) for i in range(0, len(array), self.fixed_batch)]
            )
        else:
            out = self._run(array)
        return torch.from_numpy(out).to(x.device, x.dtype)

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: array})[0]
