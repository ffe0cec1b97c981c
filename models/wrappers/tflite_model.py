"""A MediaPipe .tflite segmenter run by Google's own interpreter (LiteRT, XNNPACK) with the zoo's contract."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from ai_edge_litert.interpreter import Interpreter
from torch import nn


class TFLiteSegmenter(nn.Module):
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) probabilities, computed on the CPU by the LiteRT interpreter.

    An interpreter runs one call at a time: each thread that calls gets its own, with as many threads as
    torch has on that thread (the server's pipeline workers run one each). Frames of a batch run one by one
    (the files have a batch of 1).
    """

    # The layout the interpreter reads (NHWC): a caller that passes it spares the copies into it.
    input_layout = torch.channels_last

    def __init__(self, path: Path, output: str | None = None, logits: bool = False) -> None:
        """`output`: the name of the segmentation among the file's outputs (default: its only one);
        `logits`: that output is a logit, made a probability here."""
        super().__init__()
        self.path = path
        self.logits = logits
        self._local = threading.local()
        interpreter = self._interpreter()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
            raise ValueError(f"{path}: expected one (1,H,W,3) input")
        named = [o["index"] for o in outputs if output is None or o["name"] == output]
        if len(named) != 1:
            raise ValueError(f"{path}: no single output named {output!r}")
        # Tensor indices are the file's, the same in every thread's interpreter: looked up once, not per frame.
        self.input: int = inputs[0]["index"]
        self.output: int = named[0]
        self.input_size: tuple[int, int] = (int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2]))

    def _interpreter(self) -> Interpreter:
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            interpreter = Interpreter(model_path=str(self.path), num_threads=torch.get_num_threads())
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
        return interpreter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        interpreter = self._interpreter()
        frames = x.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()  # NHWC, as TFLite wants it
        masks = []
        for i in range(len(frames)):
            interpreter.set_tensor(self.input, np.ascontiguousarray(frames[i : i + 1]))
            interpreter.invoke()
            masks.append(interpreter.get_tensor(self.output))  # (1,h,w,C): a copy, the buffer is reused
        # NHWC to NCHW, the first channel: a view, then a copy only where the file has more than one channel
        # (np.concatenate of the channel's strided views took 0.3 ms per 256x256 frame).
        nhwc = masks[0] if len(masks) == 1 else np.concatenate(masks)
        out = torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)[:, :1]))
        return (torch.sigmoid(out) if self.logits else out).to(x.device, x.dtype)
