"""Shared fixtures: real weights, real photos from dependencies, one pipeline per test run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.client import HTTPConnection

import aiohttp
import numpy as np
import pytest
import skimage.data
from aiohttp import web
from hypothesis import settings
from matplotlib import cbook

from models import fetch_weights
from server.pipeline.pipeline import Pipeline
from server.tools.client import Peer, photo_frames
from server.tools.loadtest import free_port
from server.web.app import create_app
from server.web.settings import ServerSettings

OPERATOR = {"Authorization": "Bearer op-token"}

# Fuzzing: a few hundred cases in the suite; `pytest --hypothesis-profile long tests/test_boundary.py` for 10,000+.
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=False)
settings.register_profile("long", max_examples=12_000, deadline=None)
settings.load_profile("ci")

# Regions of the astronaut frames from `peer.photo_frames` (640x480, scaled x1.28): (top, bottom, left, right).
FACE = (110, 180, 230, 300)
TOP_LEFT = (0, 50, 0, 60)
TOP_RIGHT = (0, 50, 560, 640)


@pytest.fixture(scope="session", autouse=True)
def weights() -> None:
    """The pinned weights, fetched (and sha256-checked) once into the cache if they are not there yet."""
    fetch_weights()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture
def frames(astronaut: np.ndarray) -> list[np.ndarray]:
    """The astronaut as a hand-held camera sees it: 640x480 frames for a session's peer."""
    return photo_frames(astronaut)


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        from PIL import Image

        return np.asarray(Image.open(f).convert("RGB"))


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline(device="cpu")


def region(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = box
    return image[top:bottom, left:right].reshape(-1, 3).astype(np.float64)


class ServerThread:
    """The application served over loopback by its own event loop (for synchronous tests: Hypothesis,
    Schemathesis)."""

    def __init__(self, app: web.Application) -> None:
        self.app, self.port = app, free_port()
        self.session = ""  # a live session's id
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def call(self, coroutine, timeout: float = 60.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes, str]:
        connection = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Content-Type", "")
        finally:
            connection.close()


@pytest.fixture(scope="module")
def live(pipeline: Pipeline) -> Iterator[ServerThread]:
    settings = ServerSettings(
        preload=[],
        max_sessions=4,
        connect_timeout=2,
        media_timeout=2,
        operator_token="op-token",
        max_upload_bytes=512 * 1024,
        max_upload_pixels=2000 * 2000,
    )
    with ServerThread(create_app(settings, pipeline)) as server:
        peer = server.call(_peer())
        server.session = server.call(_connect(peer, f"http://127.0.0.1:{server.port}/offer"))
        try:
            yield server
        finally:
            server.call(peer.close())


async def _peer() -> Peer:
    return Peer(photo_frames(np.full((64, 64, 3), 128, np.uint8), size=(120, 160), count=4))


async def _connect(peer: Peer, url: str) -> str:
    """A session that lives through the fuzzing, so that PATCH bodies reach the parser."""
    async with aiohttp.ClientSession() as http:
        body = {"sdp": await peer.offer(), "type": "offer", "config": {"mode": "color"}}
        async with http.post(url, json=body) as response:
            answer = await response.json()
    await peer.accept(answer["sdp"])
    return str(answer["session_id"])


async def open_session(
    http: aiohttp.ClientSession, url: str, frames: list[np.ndarray], config: dict
) -> tuple[Peer, dict]:
    """A session opened over HTTP (`POST /offer`, JSON) by a new client peer: the peer and the answer."""
    peer = Peer(frames)
    body = {"sdp": await peer.offer(), "type": "offer", "config": config}
    async with http.post(f"{url}/offer", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
    await peer.accept(answer["sdp"])
    return peer, answer
