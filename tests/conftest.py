"""Shared fixtures and helpers: real weights (fetched for the tests that load a model), real photos from
dependencies, one pipeline per test run, the server in-process or on a thread, a session opened over HTTP, the
`backdrop` command. Every test carries one layer's marker (pyproject.toml); an unmarked one is `e2e`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.client import HTTPConnection

import aiohttp
import cv2
import numpy as np
import pytest
import skimage.data
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import VideoStreamTrack
from hypothesis import settings
from matplotlib import cbook

from models import fetch_weights
from server.pipeline.pipeline import Pipeline
from server.tools.client import Peer, photo_frames
from server.tools.loadtest import free_port

OPERATOR_TOKEN = "op-token"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
LAYERS = ("unit", "e2e", "browser", "gstreamer", "proxy", "turn", "training")

# Fuzzing: a few hundred cases in the suite; `pytest --hypothesis-profile long tests/test_boundary.py` for 10,000+.
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=False)
settings.register_profile("long", max_examples=12_000, deadline=None)
settings.load_profile("ci")

# Regions of the astronaut frames from `peer.photo_frames` (640x480, scaled x1.28): (top, bottom, left, right).
FACE = (110, 180, 230, 300)
TOP_LEFT = (0, 50, 0, 60)
TOP_RIGHT = (0, 50, 560, 640)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test is in one layer: without a layer's marker it is `e2e` (so that nothing slow slips into `-m unit`),
    with two it is refused. A `cuda` one is skipped where there is no CUDA device."""
    cuda = torch.cuda.is_available()
    for item in items:
        layers = sorted({marker.name for marker in item.iter_markers() if marker.name in LAYERS})
        if len(layers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked {' and '.join(layers)}: one layer a test")
        if not layers:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("cuda") and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(scope="session")
def weights() -> None:
    """The pinned weights, fetched (and sha256-checked) once into the cache if they are not there yet: asked
    for by what loads a model (`pipeline`, or `pytestmark = pytest.mark.usefixtures("weights")`)."""
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
def pipeline(weights: None) -> Pipeline:
    return Pipeline(device="cpu")


def two_people(astronaut: np.ndarray, grace_hopper: np.ndarray) -> np.ndarray:
    """A 480x640 frame of two people: the astronaut on the left, Grace Hopper on the right, on grey."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[160:, :320] = cv2.resize(astronaut, (320, 320))
    frame[160:, 320:] = cv2.resize(grace_hopper, (320, 380))[30:350]
    return frame


LEFT_FACE, RIGHT_FACE = (190, 260, 110, 180), (240, 330, 430, 540)  # their faces in `two_people`


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
    """The server on its own thread with one session that lives through the fuzzing, so that PATCH bodies
    reach the parser."""
    from server.web.app import create_app  # the web layer, imported by the tests that serve it
    from server.web.settings import ServerSettings

    settings = ServerSettings(
        preload=[],
        max_sessions=4,
        connect_timeout=2,
        media_timeout=2,
        operator_token=OPERATOR_TOKEN,
        max_upload_bytes=512 * 1024,
        max_upload_pixels=2000 * 2000,
    )
    with ServerThread(create_app(settings, pipeline)) as server:
        peer = server.call(_peer())
        server.session = server.call(_connect(peer, f"{server.url}/offer"))["session_id"]
        try:
            yield server
        finally:
            server.call(peer.close())


async def _peer() -> Peer:
    return Peer(photo_frames(np.full((64, 64, 3), 128, np.uint8), size=(120, 160), count=4))


async def _connect(peer: Peer, url: str) -> dict:
    async with aiohttp.ClientSession() as http:
        return await open_session(http, peer, {"mode": "color"}, url)


@pytest.fixture
def make_client(
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], pipeline: Pipeline
) -> Callable[..., Awaitable[TestClient]]:
    """`await make_client(**settings)`: the app in-process with the shared pipeline, behind aiohttp's test
    client; listings open to `OPERATOR`."""

    from server.web.app import create_app
    from server.web.settings import ServerSettings

    async def make(**settings: object) -> TestClient:
        settings.setdefault("operator_token", OPERATOR_TOKEN)
        return await aiohttp_client(create_app(ServerSettings(preload=[], **settings), pipeline))  # type: ignore[arg-type]

    return make


async def open_session(
    http: aiohttp.ClientSession | TestClient, peer: Peer, config: dict | None = None, url: str = "/offer"
) -> dict:
    """A session opened by `peer` over HTTP (`POST /offer`, JSON: a test client's path, or a whole URL with
    a client session); the server's answer, already accepted by the peer."""
    body = {"sdp": await peer.offer(), "type": "offer", "config": config or {}}
    async with http.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["type"] == "answer" and answer["session_id"], answer
    await peer.accept(answer["sdp"])
    return answer


class SilentTrack(VideoStreamTrack):
    """A camera that never delivers a frame."""

    async def recv(self):  # type: ignore[no-untyped-def]
        await asyncio.sleep(3600)


def backdrop(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `backdrop` command as a user runs it (`python -m server`), its output captured; `env` replaces
    the environment."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ.copy() if env is None else env,
    )
