"""GStreamer's webrtcbin as the WHIP client (Debian's GStreamer 1.22: a WebRTC stack nobody here wrote, whose
DTLS server holds an RSA certificate): sendrecv gets the processed video back, sendonly is watched by a WHEP
player. The returned pixels are checked as a user would see them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image
from test_server import assert_background, assert_person_kept

from server.pipeline.pipeline import Pipeline
from server.tools.client import Player
from server.web.app import create_app
from server.web.settings import ServerSettings

from conftest import ServerThread

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with PyGObject (python3-gi)
CLIENT = Path(__file__).with_name("gst_whip_client.py")
CYAN = "?mode=color&color=%2300ffff"
pytestmark = pytest.mark.gstreamer


@pytest.fixture(scope="module")
def server(pipeline: Pipeline) -> Iterator[ServerThread]:
    probe = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0');"
            "from gi.repository import Gst; Gst.init(None); assert Gst.ElementFactory.find('webrtcbin')",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, f"GStreamer's webrtcbin is missing (`make gstreamer` installs it): {probe.stderr}"
    with ServerThread(create_app(ServerSettings(preload=[]), pipeline)) as live:
        yield live


@pytest.fixture
def photo(tmp_path: Path, astronaut: np.ndarray) -> tuple[Path, np.ndarray]:
    image = np.asarray(Image.fromarray(astronaut).resize((640, 480)))
    path = tmp_path / "astronaut.png"
    Image.fromarray(image).save(path)
    return path, image


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_gstreamer_sendrecv_gets_the_processed_video_back(server: ServerThread, photo, tmp_path: Path) -> None:
    path, image = photo
    out = tmp_path / "last.rgb"
    run = subprocess.run(
        [SYSTEM_PYTHON, str(CLIENT), f"{server.url}/whip{CYAN}", str(path), "sendrecv", "8", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    posted, ended = _lines(run.stdout)
    assert posted["post"] == 201 and posted["location"].startswith("/sessions/"), (posted, run.stderr[-2000:])
    assert posted["etag"] and any('rel="whep"' in link for link in posted["links"])
    assert ended["frames"] >= 5 and (ended["width"], ended["height"]) == (640, 480), ended  # it streams back
    assert ended["delete"] == 204
    returned = np.frombuffer(out.read_bytes(), np.uint8).reshape(480, 640, 3)
    assert_background(returned, (0, 255, 255))
    assert_person_kept(returned, image)


def test_gstreamer_sendonly_ingest_is_watched_through_whep(server: ServerThread, photo, tmp_path: Path) -> None:
    path, image = photo
    client = subprocess.Popen(
        [SYSTEM_PYTHON, str(CLIENT), f"{server.url}/whip{CYAN}", str(path), "sendonly", "12", str(tmp_path / "x")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        posted = json.loads(client.stdout.readline())
        assert posted["post"] == 201, posted
        watched = asyncio.run(_watch(f"{server.url}{posted['location']}/whep"))
        assert_background(watched, (0, 255, 255))
        assert_person_kept(watched, image)
        ended = json.loads(client.stdout.readline())
        assert ended["frames"] == 0 and ended["delete"] == 204, ended  # it sent, it received nothing
    finally:
        client.kill()
        client.wait()


async def _watch(whep: str) -> np.ndarray:
    player = Player()
    try:
        offer = await player.offer()
        async with (
            aiohttp.ClientSession() as http,
            http.post(whep, data=offer, headers={"Content-Type": "application/sdp"}) as response,
        ):
            assert response.status == 201, await response.text()
            answer = await response.text()
        await player.accept(answer)
        return (await player.frames(10))[-1]
    finally:
        await player.close()
