"""Compiled models (`--compile`, torch.compile) give the frames the eager ones give, while they compile and after.
Out of the unit layer for its time alone: compiling takes a minute or more on a CPU."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch

from server.pipeline.config import SessionConfig
from server.pipeline.frames import Frame, StreamState
from server.pipeline.pipeline import Pipeline
from server.tools.client import photo_frames

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("weights")]


def test_compiled_models_give_the_same_frames(
    pipeline: Pipeline, astronaut: np.ndarray, grace_hopper: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compiling serves PyTorch models (trained checkpoints); `general`'s port stands in for one here, as the
    # built-in runs its .tflite in LiteRT on a CPU.
    from models.zoo import BUILTINS

    monkeypatch.setitem(BUILTINS, "mediapipe-general", replace(BUILTINS["mediapipe-general"], cpu_runtime="torch"))
    compiled = Pipeline(device="cpu", compile=True)
    frames = [photo_frames(astronaut, count=1)[0], photo_frames(grace_hopper, count=1)[0]]
    config = SessionConfig(mode="color", color="#ff00ff", smoothing=0.0)
    # Frames keep flowing (through the eager model) while the compiler works on its thread.
    while not compiled.models.get("general").wait(timeout=0.01):
        assert compiled.process_one(frames[0], StreamState(), config).pixels.shape == frames[0].shape
    assert compiled.models.get("general").wait()  # it really compiled here
    # What was compiled in the background is what frames use: recompiling now would stall a video ~10 s.
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    # A batch of two streams runs frame by frame through the compiled graph; both must match eager.
    eager_out = [p.pixels for p in pipeline.process([Frame(f, StreamState(), config) for f in frames])]
    compiled_out = [p.pixels for p in compiled.process([Frame(f, StreamState(), config) for f in frames])]
    for a, b in zip(eager_out, compiled_out, strict=True):  # a Y level apart is 1.16 RGB levels
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # The server's CPU workers call the compiled graph from several threads at once.
    with ThreadPoolExecutor(max_workers=2) as workers:
        threaded = list(workers.map(lambda f: compiled.process_one(f, StreamState(), config).pixels, frames * 4))
    for a, b in zip(eager_out * 4, threaded, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
