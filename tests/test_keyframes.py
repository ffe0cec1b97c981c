"""Keyframes: the model runs when the propagated mask cannot be trusted, and the flow carries it between."""

from __future__ import annotations

import numpy as np
import pytest

from server.pipeline.config import SessionConfig
from server.pipeline.frames import StreamState
from server.pipeline.pipeline import Pipeline
from server.tools.client import Peer, photo_frames

from conftest import FACE, TOP_LEFT, open_session, region


def runs(pipeline: Pipeline, frames: list[np.ndarray], config: SessionConfig) -> tuple[list[bool], list[np.ndarray]]:
    """Whether the model ran on each frame of one stream, and the composited frames."""
    state, ran, out = StreamState(), [], []
    for frame in frames:
        result = pipeline.process_one(frame, state, config)
        state = result.state
        ran.append(state.smoothing.model_ran)
        out.append(result.pixels)
    return ran, out


@pytest.mark.unit
def test_a_still_scene_runs_the_model_rarely_and_looks_the_same(pipeline: Pipeline, astronaut: np.ndarray) -> None:
    frames = [astronaut] * 20
    ran, out = runs(pipeline, frames, SessionConfig(mode="color", keyframes=5))
    assert sum(ran) == 4 and ran[0] and ran[5] and not any(ran[1:5])  # every 5th frame, the longest gap
    _, every = runs(pipeline, frames, SessionConfig(mode="color", keyframes=0))
    assert np.abs(out[-1].astype(int) - every[-1].astype(int)).mean() < 1.0


@pytest.mark.unit
def test_a_cut_or_a_config_change_runs_the_model_at_once(
    pipeline: Pipeline, astronaut: np.ndarray, grace_hopper: np.ndarray
) -> None:
    import cv2

    other = cv2.resize(grace_hopper, (astronaut.shape[1], astronaut.shape[0]))
    config = SessionConfig(mode="color", keyframes=10)
    state = StreamState()
    for _ in range(3):
        state = pipeline.process_one(astronaut, state, config).state
    assert state.smoothing.since_model == 2
    state = pipeline.process_one(other, state, config).state  # a cut: the flow explains nothing
    assert state.smoothing.model_ran
    state = pipeline.process_one(other, state, config).state
    assert state.smoothing.since_model == 1
    state = pipeline.process_one(other, state, config.updated({"color": "#ff0000"})).state
    assert state.smoothing.model_ran


@pytest.mark.unit
def test_keyframes_off_runs_the_model_on_every_frame(pipeline: Pipeline, astronaut: np.ndarray) -> None:
    ran, _ = runs(pipeline, [astronaut] * 6, SessionConfig(mode="color", keyframes=0))
    assert all(ran)


@pytest.mark.e2e
async def test_a_session_with_keyframes_returns_the_right_pixels_and_counts_model_runs(make_client, astronaut) -> None:
    frames = photo_frames(astronaut, count=30)
    client = await make_client()
    peer = Peer(frames)
    answer = await open_session(client, peer, {"mode": "color", "color": "#0000ff", "keyframes": 4})
    try:
        got = await peer.frames(30)
        assert np.abs(region(got[-1], TOP_LEFT) - (0, 0, 255)).mean() < 25  # background replaced
        assert np.abs(region(got[-1], FACE).mean(0) - region(frames[0], FACE).mean(0)).max() < 25  # person kept
        async with client.get(f"/sessions/{answer['session_id']}") as response:
            stats = (await response.json())["stats"]
        assert 0 < stats["model_runs"] < stats["frames_out"]
    finally:
        await peer.close()
