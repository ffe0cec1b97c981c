"""Models compiled with TorchInductor for the CPU, run one frame at a time.

On a CPU, batching frames barely helps (or hurts) while a compiled, weight-frozen graph runs the
MediaPipe model 2-4x faster than eager PyTorch. Shapes are static (batch 1) so that the graph is
compiled once and never again while frames flow. Compiling takes 10-30 s, so it happens on a
thread of its own: until it is done, frames go through the eager model and nobody's video stalls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

_TRACE_WAIT_S = 5.0  # how long an eager frame waits out the compiler's tracing before it fails


class CompiledOnCPU(nn.Module):
    """`eager` until its compiled twin is ready (or failed to compile), then the twin, frame by frame."""

    def __init__(self, eager: nn.Module, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.eager = eager
        self.input_size = input_size
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = (
            None  # not a submodule: it shares eager's weights
        )
        self._ready = threading.Event()
        threading.Thread(target=self._compile, name="torch.compile", daemon=True).start()

    def _compile(self) -> None:
        import torch._inductor.config as inductor

        # Weights become constants the compiler folds and lays out for the CPU. Dynamo reads this flag
        # globally (as `options` it is silently ignored), so it is set for the process.
        inductor.freezing = True
        started = time.perf_counter()
        try:
            # The graph's glue code in C++ too saves ~0.3 ms of Python per frame on these ~100-kernel
            # graphs (the compile takes ~5 s longer); as an option it also holds for any recompile.
            compiled = torch.compile(self.eager, dynamic=False, options={"cpp_wrapper": True})
            # The pipeline's frames are inference tensors; an example of another kind would be compiled
            # for nothing, then the first real frame would recompile on the frame path.
            with torch.inference_mode():
                example = torch.rand(1, 3, *self.input_size)  # plain NCHW, as forward passes it
                compiled(example)
            self._compiled = compiled
            log.info("compiled %s in %.1f s", type(self.eager).__name__, time.perf_counter() - started)
        except Exception as exc:  # inductor raises many kinds (no C++ compiler, codegen errors)
            log.warning("torch.compile failed (%s: %s); the model runs uncompiled", type(exc).__name__, str(exc)[:200])
        finally:
            self._ready.set()

    def _eager_while_compiling(self, x: torch.Tensor) -> torch.Tensor:
        """The eager model, while the compiler may be tracing on its thread.

        FX's symbolic tracing (the compiler uses it for some passes) patches `nn.Module.__call__` for the
        whole process; a module called from another thread meanwhile fails with NameError before it
        computes anything. Such a frame waits for the trace to end and runs again.
        """
        deadline = time.monotonic() + _TRACE_WAIT_S
        while True:
            try:
                return self.eager(x)
            except NameError:
                if self._ready.is_set() or time.monotonic() > deadline:
                    raise
                time.sleep(0.002)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until compiling ends; True if the compiled model is in use."""
        self._ready.wait(timeout)
        return self._compiled is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self._compiled
        if compiled is None:
            return self._eager_while_compiling(x)
        if not x.is_inference():  # the graph is for inference tensors (the pipeline's)
            return self.eager(x)
        x = x.contiguous()  # the layout the graph was compiled for: another would recompile
        if x.shape[0] == 1:
            return compiled(x)
        return torch.cat([compiled(x[i : i + 1]) for i in range(x.shape[0])])
