"""The demo page in a real headless Chromium, against the real server, with a fake camera showing a real photo."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from server.tools.client import photo_frames
from server.tools.loadtest import free_port

from conftest import FACE, LEFT_FACE, RIGHT_FACE, TOP_LEFT, TOP_RIGHT, region, two_people

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
TOLERANCE = 30  # mean per-channel error after VP8 both ways and the browser's colour conversion
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("weights")]


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    """A YUV4MPEG2 (4:2:0, BT.601 full range) clip, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            rgb = frame.astype(np.float32)
            y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            u = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
            v = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
            sub = lambda c: c.reshape(height // 2, 2, width // 2, 2).mean((1, 3))  # noqa: E731
            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(plane.round(), 0, 255).astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def camera_frames(astronaut) -> list[np.ndarray]:
    return photo_frames(astronaut, count=60)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """The real server, started the way the README does, limited to one session."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port), "--max-sessions", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # the server compiles its model (CPU) before it listens
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            break
        except OSError:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
    yield url
    process.send_signal(signal.SIGINT)  # stop at once (SIGTERM would drain the live sessions first)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory, camera_frames):
    assert os.path.exists(CHROMIUM), "Chromium is missing: `make test` installs Debian's chromium"
    clip = tmp_path_factory.mktemp("camera") / "astronaut.y4m"
    write_y4m(clip, camera_frames)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*FLAGS, f"--use-file-for-fake-video-capture={clip}"]
        )
        yield browser
        browser.close()


def processed_frame(page: Page, video: str = "remote") -> np.ndarray:
    """The processed <video>'s current frame, read back through a canvas."""
    data = page.evaluate(
        """(id) => {
            const video = document.getElementById(id);
            if (!video.videoWidth) return {w: 0, h: 0, px: []};  // nothing decoded yet
            const canvas = document.createElement('canvas');
            canvas.width = video.videoWidth; canvas.height = video.videoHeight;
            const ctx = canvas.getContext('2d');
            ctx.drawImage(video, 0, 0);
            const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            return {w: canvas.width, h: canvas.height, px: Array.from(pixels)};
        }""",
        video,
    )
    return np.array(data["px"], np.uint8).reshape(data["h"], data["w"], 4)[..., :3]


def wait_for(page: Page, condition, timeout: float = 45.0, video: str = "remote") -> np.ndarray:
    """Poll the processed video until `condition(frame)` holds; returns that frame."""
    deadline = time.monotonic() + timeout
    while True:
        frame = processed_frame(page, video)
        if frame.size and condition(frame):
            return frame
        if time.monotonic() > deadline:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            if frame.size:
                Image.fromarray(frame).save(ARTIFACTS / "failed-frame.png")
            page.screenshot(path=str(ARTIFACTS / "failed-page.png"))
            raise AssertionError(
                f"the processed video never showed the expected pixels (frame {frame.shape}; see {ARTIFACTS})"
            )
        page.wait_for_timeout(250)


def is_color(rgb):
    return lambda f: (
        f.shape == (480, 640, 3) and all(np.abs(region(f, c) - rgb).mean() < TOLERANCE for c in (TOP_LEFT, TOP_RIGHT))
    )


def session_id(page: Page) -> str:
    return page.locator("#session").inner_text().removeprefix("session ").strip()


def test_demo_page_end_to_end(browser, server_url, camera_frames, tmp_path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(server_url)
    page.select_option("#mode", "color")
    page.fill("#color", "#ff00ff")
    page.click("#start")
    page.wait_for_function(
        "() => { const v = document.getElementById('remote'); "
        "return v.readyState >= 2 && v.videoWidth > 0 && !v.paused; }",
        timeout=30_000,
    )

    frame = wait_for(page, is_color((255, 0, 255)))
    face, original = region(frame, FACE).mean(0), region(camera_frames[0], FACE).mean(0)
    assert np.abs(face - [255, 0, 255]).mean() > 100, "the person was replaced too"
    assert np.abs(face - original).max() < TOLERANCE
    page.screenshot(path=str(ARTIFACTS / "color.png"))

    # The viewer link the page shows plays the same processed video through WHEP (an OBS Browser Source).
    viewer_url = page.locator("#viewer").get_attribute("href")
    assert viewer_url and "/view/" in viewer_url
    assert page.locator("#whip").inner_text().endswith("/whip")
    # The server has no --token: the page shows no token field. The long viewer link stays inside the page.
    assert not page.locator("#token-row").is_visible()
    link, controls = page.locator("#viewer").bounding_box(), page.locator(".controls").bounding_box()
    assert link and controls and link["x"] + link["width"] <= controls["x"] + controls["width"] + 1, (link, controls)
    narrow = browser.new_page(viewport={"width": 420, "height": 900})  # a phone: the link must wrap, not overflow
    narrow.goto(server_url)
    narrow.evaluate(
        "url => { const a = document.getElementById('viewer'); a.href = a.textContent = url; "
        "document.getElementById('links').hidden = false; }",
        viewer_url,
    )
    box = narrow.locator("#viewer").bounding_box()
    assert box and box["x"] + box["width"] <= 420 and not narrow.locator("#token-row").is_visible(), box
    narrow.close()
    viewer = browser.new_page()
    viewer.goto(viewer_url)
    watched = wait_for(viewer, is_color((255, 0, 255)), video="video")
    assert np.abs(region(watched, FACE).mean(0) - original).max() < TOLERANCE
    viewer.screenshot(path=str(ARTIFACTS / "viewer.png"))
    viewer.close()

    page.select_option("#mode", "blur")
    page.fill("#blur", "1")  # strongest blur: the flag's stripes vanish
    page.dispatch_event("#blur", "input")
    wait_for(page, lambda f: region(f, TOP_LEFT).std(0).mean() < 0.5 * region(camera_frames[0], TOP_LEFT).std(0).mean())
    page.screenshot(path=str(ARTIFACTS / "blur.png"))

    page.select_option("#mode", "none")
    wait_for(
        page,
        lambda f: all(
            np.abs(region(f, c).mean(0) - region(camera_frames[0], c).mean(0)).max() < TOLERANCE
            for c in (TOP_LEFT, TOP_RIGHT, FACE)
        ),
    )

    upload = tmp_path / "teal.png"
    Image.new("RGB", (320, 180), (0, 160, 160)).save(upload)
    page.set_input_files("#upload", str(upload))
    wait_for(page, is_color((0, 160, 160)))
    assert page.locator("#mode").input_value() == "image"

    sid = session_id(page)
    assert urllib.request.urlopen(f"{server_url}/sessions/{sid}").status == 200
    page.click("#stop")
    page.wait_for_function("() => document.getElementById('start').disabled === false")
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"{server_url}/sessions/{sid}")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            break
        assert time.monotonic() < deadline, "the session outlived Stop"
        time.sleep(0.2)
    page.close()


def test_page_says_when_the_server_is_full(browser, server_url) -> None:
    first, second = browser.new_page(), browser.new_page()
    try:
        first.goto(server_url)
        first.click("#start")
        first.wait_for_function(
            "() => document.getElementById('session').textContent.startsWith('session')", timeout=30_000
        )
        second.goto(server_url)
        second.click("#start")
        message = second.locator("#message")
        message.wait_for(state="visible", timeout=30_000)
        assert "busy" in message.inner_text() and "maximum of 1 sessions" in message.inner_text()
        assert second.locator("#start").is_enabled()
        first.click("#stop")
    finally:
        first.close()
        second.close()


def green(frame: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether the box shows the background colour #00ff00 (the person there was left out)."""
    return bool(np.abs(region(frame, box) - (0, 255, 0)).mean() < TOLERANCE)


def test_click_a_person_to_keep_only_them(browser, server_url, astronaut, grace_hopper, tmp_path) -> None:
    clip = tmp_path / "two.y4m"
    write_y4m(clip, photo_frames(two_people(astronaut, grace_hopper), count=60))
    chromium = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*FLAGS, f"--use-file-for-fake-video-capture={clip}"]
    )
    try:
        page = chromium.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server_url)
        page.select_option("#mode", "color")
        page.fill("#color", "#00ff00")
        page.click("#start")
        wait_for(page, lambda f: f.shape == (480, 640, 3) and not green(f, LEFT_FACE) and not green(f, RIGHT_FACE))
        assert page.locator("#subject").inner_text() == "everyone" and not page.locator("#everyone").is_visible()
        # A click on Grace Hopper, on the video as the page shows it (scaled, maybe letterboxed).
        box = page.locator("#remote").bounding_box()
        assert box
        page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.6 * box["height"])
        wait_for(page, lambda f: green(f, LEFT_FACE) and not green(f, RIGHT_FACE))
        assert page.locator("#subject").inner_text() == "the person you picked"
        page.screenshot(path=str(ARTIFACTS / "picked.png"))
        page.click("#everyone")  # the way back
        wait_for(page, lambda f: not green(f, LEFT_FACE) and not green(f, RIGHT_FACE))
        assert page.locator("#subject").inner_text() == "everyone"
        page.click("#stop")
        page.close()
    finally:
        chromium.close()
