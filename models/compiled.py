"""A model compiled with TorchInductor for the CPU, one frame at a time.

On a CPU, batching frames barely helps (or hurts) while a compiled, weight-frozen graph runs the
MediaPipe model 2-4x faster than eager PyTorch. Shapes are static (batch 1) so that the graph is
compiled once, at load time, and never again while frames flow.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

log = logging.getLogger(__name__)


class FrameByFrame(nn.Module):
    """Runs `compiled` on each frame of a batch; `eager` is the same network uncompiled."""

    def __init__(self, compiled: nn.Module, eager: nn.Module) -> None:
        super().__init__()
        self.compiled, self.eager = compiled, eager

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.compiled(x[i : i + 1]) for i in range(x.shape[0])])


def compile_for_cpu(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """`model` compiled (inductor, frozen weights, batch 1) and warmed up; the eager model if compiling
    fails (e.g. no C++ compiler on the machine), with a warning that says why."""
    import torch._inductor.config as inductor

    inductor.freezing = True  # weights become constants the compiler can fold and lay out for the CPU
    compiled = torch.compile(model, dynamic=False)
    example = torch.rand(1, 3, *input_size).contiguous(memory_format=torch.channels_last)
    started = time.perf_counter()
    try:
        with torch.inference_mode():  # the mode the pipeline calls it in: no recompile on the first frame
            compiled(example)
    except Exception as exc:  # inductor raises many kinds (compiler missing, codegen errors)
        log.warning("torch.compile failed (%s: %s); running the model uncompiled", type(exc).__name__, str(exc)[:200])
        return model
    log.info("compiled %s in %.1f s", type(model).__name__, time.perf_counter() - started)
    return FrameByFrame(compiled, model)
