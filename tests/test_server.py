"""The server end to end: real aiortc peers over loopback, checked on the pixels they get back."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from server.pipeline.workers import cpu_cores
from server.rtc import aiortc_hooks
from server.tools.client import Peer, photo_frames
from server.web.keys import SESSIONS

from conftest import FACE, OPERATOR, TOP_LEFT, TOP_RIGHT, SilentTrack, open_session, region

pytestmark = pytest.mark.e2e
CODEC_TOLERANCE = 25  # mean absolute error per channel after two VP8 passes


async def connect(client, peer: Peer, config: dict | None = None) -> str:
    """The id of a session `peer` opened."""
    return (await open_session(client, peer, config))["session_id"]


def assert_background(frame: np.ndarray, rgb: tuple[int, int, int]) -> None:
    for corner in (TOP_LEFT, TOP_RIGHT):
        assert np.abs(region(frame, corner) - rgb).mean() < CODEC_TOLERANCE, f"corner is not {rgb}"


def assert_person_kept(frame: np.ndarray, original: np.ndarray) -> None:
    assert np.abs(region(frame, FACE).mean(0) - region(original, FACE).mean(0)).max() < CODEC_TOLERANCE


def closest_input_error(frame: np.ndarray, inputs: list[np.ndarray]) -> float:
    return min(np.abs(frame.astype(int) - f.astype(int)).mean() for f in inputs)


async def test_color_session_changes_live_over_data_channel(make_client, frames) -> None:
    client = await make_client()
    peer = Peer(frames, audio=True)
    session_id = await connect(client, peer, {"mode": "color", "color": "#0000ff"})
    try:
        got = await peer.frames(15)
        assert got[-1].shape == (480, 640, 3)
        assert_background(got[-1], (0, 0, 255))
        assert_person_kept(got[-1], frames[0])

        reply = await peer.send_config({"color": "#ff0000"})
        assert (
            reply["type"] == "config" and reply["config"]["color"] == "#ff0000" and reply["config"]["mode"] == "color"
        )
        got = await peer.frames(12)
        assert_background(got[-1], (255, 0, 0))

        reply = await peer.send_config({"mode": "none"})
        got = await peer.frames(12)
        assert closest_input_error(got[-1], frames) < 6  # the camera's own pixels, codec noise aside

        reply = await peer.send_config({"blur": 7})
        assert reply["type"] == "error" and reply["field"] == "config.blur"
        stats = await peer.stats()
        assert stats["frames_out"] > 0 and stats["processing_ms_p50"] is not None

        described = await (await client.get(f"/sessions/{session_id}")).json()
        assert (
            described["config"]["mode"] == "none"
            and described["stats"]["frames_in"] >= described["stats"]["frames_out"]
        )
    finally:
        await peer.close()


async def test_patch_changes_the_returned_pixels(make_client, frames) -> None:
    client = await make_client()
    peer = Peer(frames)
    session_id = await connect(client, peer, {"mode": "color", "color": "#00ff00"})
    try:
        assert_background((await peer.frames(10))[-1], (0, 255, 0))
        response = await client.patch(f"/sessions/{session_id}", json={"config": {"color": "#ffffff", "region": False}})
        assert response.status == 200 and (await response.json())["config"]["color"] == "#ffffff"
        assert (await response.json())["config"]["region"] is False  # the whole frame, as before tracking
        assert_background((await peer.frames(10))[-1], (255, 255, 255))
    finally:
        await peer.close()


@pytest.mark.parametrize("model", ["fullbody", "auto"])
async def test_fullbody_and_auto_sessions_replace_the_background(make_client, frames, model: str) -> None:
    client = await make_client()
    peer = Peer(frames)
    session_id = await connect(client, peer, {"mode": "color", "color": "#00ffff", "model": model})
    try:
        got = (await peer.frames(12))[-1]
        assert_background(got, (0, 255, 255))
        assert_person_kept(got, frames[0])
        response = await client.patch(f"/sessions/{session_id}", json={"config": {"model": "general"}})
        assert response.status == 200 and (await response.json())["config"]["model"] == "general"
        assert_background((await peer.frames(8))[-1], (0, 255, 255))
    finally:
        await peer.close()


async def test_whip_raw_sdp(make_client, frames) -> None:
    client = await make_client()
    peer = Peer(frames)
    response = await client.post(
        "/offer?mode=color&color=%23ff00ff", data=await peer.offer(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status == 201
    assert response.content_type == "application/sdp"
    location = response.headers["Location"]
    assert location.startswith("/sessions/")
    await peer.accept(await response.text())
    try:
        assert_background((await peer.frames(12))[-1], (255, 0, 255))
        assert (await client.delete(location)).status == 204
        assert (await client.get(location)).status == 404
    finally:
        await peer.close()


async def test_two_sessions_get_their_own_results(make_client, astronaut, grace_hopper) -> None:
    client = await make_client()
    first, second = Peer(photo_frames(astronaut)), Peer(photo_frames(grace_hopper))
    await connect(client, first, {"mode": "color", "color": "#0000ff"})
    await connect(client, second, {"mode": "none"})
    try:
        a, b = await asyncio.gather(first.frames(15), second.frames(15))
        assert_background(a[-1], (0, 0, 255))
        assert closest_input_error(b[-1], second.source.frames) < 6
        sessions = (await (await client.get("/sessions", headers=OPERATOR)).json())["sessions"]
        assert sorted(s["config"]["mode"] for s in sessions) == ["color", "none"]
    finally:
        await first.close()
        await second.close()


async def test_uploaded_background_is_applied(make_client, frames) -> None:
    client = await make_client()
    data = io.BytesIO()
    Image.new("RGB", (300, 200), (250, 200, 0)).save(data, format="PNG")
    response = await client.post("/backgrounds", data=data.getvalue(), headers={"Content-Type": "image/png"})
    assert response.status == 201
    image_id = (await response.json())["id"]
    # The id is the uploader's alone: not listed to anyone else, served to whoever knows it.
    assert image_id not in (await (await client.get("/backgrounds")).json())["backgrounds"]
    assert image_id in (await (await client.get("/backgrounds", headers=OPERATOR)).json())["backgrounds"]
    assert (await client.get(f"/backgrounds/{image_id}")).status == 200
    peer = Peer(frames)
    await connect(client, peer, {"mode": "image", "image": image_id})
    try:
        assert_background((await peer.frames(12))[-1], (250, 200, 0))
    finally:
        await peer.close()


async def _error(response, status: int, field: str | None = None) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(make_client, frames) -> None:
    client = await make_client(
        max_sessions=2, max_offer_bytes=8192, max_upload_bytes=64 * 1024, max_upload_pixels=500 * 500
    )
    offer_sdp = await Peer(frames).offer()
    post = lambda body, **kw: client.post("/offer", **kw, **({"json": body} if "data" not in kw else {}))  # noqa: E731

    await _error(await client.post("/offer", data=b"{nope", headers={"Content-Type": "application/json"}), 400)
    await _error(await post([1, 2]), 400)
    await _error(await post({"type": "offer"}), 422, "sdp")
    await _error(await post({"type": "answer", "sdp": offer_sdp}), 422, "type")
    await _error(await post({"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"}), 400, "sdp")
    await _error(await post({"type": "offer", "sdp": "hello"}), 400, "sdp")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": {"colour": "#ffffff"}}), 422, "config.colour")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": {"blur": "lots"}}), 422, "config.blur")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": {"color": "red"}}), 422, "config.color")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": {"mode": "sepia"}}), 422, "config.mode")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": {"model": "nope"}}), 422, "config.model")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": {"image": "nope"}}), 422, "config.image")
    await _error(await post({"type": "offer", "sdp": "v=0", "config": [1]}), 422, "config")
    await _error(await post(None, data="v=0\r\n" + "a=x\r\n" * 2000, headers={"Content-Type": "application/sdp"}), 413)
    for method in ("get", "patch", "delete"):
        await _error(await getattr(client, method)("/sessions/nope", json={}), 404)
    await _error(await client.get("/no/such/page"), 404)

    await _error(
        await client.post("/backgrounds", data=b"plain text", headers={"Content-Type": "image/png"}), 415, "file"
    )
    await _error(await client.post("/backgrounds", data=b"x" * (70 * 1024), headers={"Content-Type": "image/png"}), 413)
    await _error(await client.post("/backgrounds", data=b"", headers={"Content-Type": "image/png"}), 400, "file")
    big = io.BytesIO()
    Image.new("L", (1000, 1000)).save(big, format="PNG")
    await _error(
        await client.post("/backgrounds", data=big.getvalue(), headers={"Content-Type": "image/png"}), 413, "file"
    )

    peers = [Peer(frames), Peer(frames)]
    ids = [await connect(client, p, {"mode": "color", "color": "#0000ff"}) for p in peers]
    third = Peer(frames)
    await _error(await post({"type": "offer", "sdp": await third.offer()}), 503)
    await third.close()
    try:
        for p in peers:
            assert_background((await p.frames(8))[-1], (0, 0, 255))
        await _error(
            await client.patch(f"/sessions/{ids[0]}", json={"config": {"smoothing": 2}}), 422, "config.smoothing"
        )
        channel_reply = await peers[0].send_config({"mode": "nope"})
        assert channel_reply == {"type": "error", "error": channel_reply["error"], "field": "config.mode"}
        peers[0].channel.send("not json")
        assert (await peers[0].reply())["type"] == "error"
    finally:
        for p in peers:
            await p.close()
    await _wait_until(lambda: not client.app[SESSIONS].sessions)
    # After all that, a new session is served normally.
    fresh = Peer(frames)
    await connect(client, fresh, {"mode": "color", "color": "#ff0000"})
    try:
        assert_background((await fresh.frames(10))[-1], (255, 0, 0))
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "ok" and health["sessions"] == 1
        if health["device"] == "cpu":  # one single-threaded pipeline worker per core
            assert health["workers"] == cpu_cores() and health["torch_threads"] == 1
    finally:
        await fresh.close()


async def _wait_until(condition, wait_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_hang_up_closes_the_peer_connection(make_client, frames) -> None:
    client = await make_client()
    peer = Peer(frames)
    session_id = await connect(client, peer)
    await peer.frames(3)
    pc = client.app[SESSIONS].sessions[session_id].pc
    assert (await client.delete(f"/sessions/{session_id}")).status == 204
    assert pc.connectionState == "closed"
    assert (await (await client.get("/sessions", headers=OPERATOR)).json())["sessions"] == []
    await peer.close()

    # The peer hanging up on its side ends the session too.
    peer = Peer(frames)
    session_id = await connect(client, peer)
    await peer.frames(3)
    pc = client.app[SESSIONS].sessions[session_id].pc
    await peer.close()
    await _wait_until(lambda: session_id not in client.app[SESSIONS].sessions)
    assert pc.connectionState == "closed"


async def test_media_timeout_ends_a_silent_session(make_client, frames) -> None:
    client = await make_client(media_timeout=1.5)
    peer = Peer(frames)
    peer.pc.getTransceivers()[0].sender.replaceTrack(SilentTrack())
    session_id = await connect(client, peer)
    pc = client.app[SESSIONS].sessions[session_id].pc
    await _wait_until(lambda: session_id not in client.app[SESSIONS].sessions, wait_s=10)
    assert pc.connectionState == "closed"
    await peer.close()


async def test_ice_failure_ends_the_session(make_client, frames) -> None:
    client = await make_client(media_timeout=120, connect_timeout=3)
    peer = Peer(frames)
    offer = await peer.offer()
    # Candidates that lead nowhere: ICE checks fail and the server must give up on its own.
    lines = [line for line in offer.splitlines() if not line.startswith("a=candidate")]
    lines.insert(
        lines.index(next(line for line in lines if line.startswith("a=ice-ufrag"))),
        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
    )
    await peer.close()
    response = await client.post("/offer", json={"sdp": "\r\n".join(lines) + "\r\n", "type": "offer"})
    assert response.status == 200
    session_id = (await response.json())["session_id"]
    pc = client.app[SESSIONS].sessions[session_id].pc
    await _wait_until(lambda: session_id not in client.app[SESSIONS].sessions, wait_s=10)
    assert pc.connectionState == "closed"


def _metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_metrics_count_every_session_and_time_each_stage(make_client, frames) -> None:
    client = await make_client()
    peer = Peer(frames)
    session_id = await connect(client, peer, {"mode": "color", "color": "#00ff00"})
    await peer.frames(8)
    during = await (await client.get("/metrics")).text()
    assert _metric(during, "backdrop_sessions") == 1 and _metric(during, "backdrop_frames_out_total") >= 8
    assert _metric(during, 'backdrop_stage_seconds_count{stage="model"}') >= 8
    assert (await client.delete(f"/sessions/{session_id}")).status == 204
    await peer.close()
    after = await (await client.get("/metrics")).text()
    # Counters of ended sessions stay counted: they never go down.
    assert _metric(after, "backdrop_sessions") == 0
    assert _metric(after, "backdrop_frames_out_total") >= _metric(during, "backdrop_frames_out_total")
    assert _metric(after, "backdrop_frames_in_total") >= _metric(after, "backdrop_frames_out_total")


async def test_defaults_and_whip_query_strings_take_the_servers_types(make_client, frames) -> None:
    client = await make_client(default_model="landscape")
    defaults = (await (await client.get("/config/defaults")).json())["config"]
    assert defaults["model"] == "landscape" and defaults["mode"] == "blur"
    sdp = {"Content-Type": "application/sdp"}
    # A model named like a number stays a name (and is unknown here), not the float 2024.0.
    stranger = Peer(frames)
    response = await client.post("/offer?model=2024", data=await stranger.offer(), headers=sdp)
    await stranger.close()
    body = await _error(response, 422, "config.model")
    assert "'2024'" in body["error"]
    peer = Peer(frames)
    query = "mode=color&color=%23ff0000&smoothing=0.5&refine=false"
    response = await client.post(f"/offer?{query}", data=await peer.offer(), headers=sdp)
    assert response.status == 201, await response.text()
    await peer.accept(await response.text())
    try:
        described = await (await client.get(response.headers["Location"])).json()
        config = described["config"]
        assert (config["smoothing"], config["refine"], config["model"]) == (0.5, False, "landscape")
        assert_background((await peer.frames(10))[-1], (255, 0, 0))
    finally:
        await peer.close()


def _video_codecs(sdp: str) -> list[str]:
    """The video codecs of an SDP, in its order of preference."""
    lines = sdp.splitlines()
    video = next(line for line in lines if line.startswith("m=video"))
    names = dict(line[len("a=rtpmap:") :].split(" ", 1) for line in lines if line.startswith("a=rtpmap:"))
    return [names[pt].split("/")[0] for pt in video.split()[3:]]


async def _received_kbps(client, frames: list[np.ndarray], config: dict) -> tuple[float, list[str], np.ndarray]:
    """(kb/s of processed video received over 2 s after a second to settle, the answer's codecs, a frame)."""
    peer = Peer(frames)
    answer = (await open_session(client, peer, config))["sdp"]
    try:
        await peer.frames(30)

        async def received_bytes() -> int:  # what the client's transport received: the processed video, mostly
            stats = await peer.pc.getStats()
            return sum(s.bytesReceived for s in stats.values() if s.type == "transport")

        before, start = await received_bytes(), asyncio.get_running_loop().time()
        last = (await peer.frames(60))[-1]
        elapsed = asyncio.get_running_loop().time() - start
        return (await received_bytes() - before) * 8 / 1000 / elapsed, _video_codecs(answer), last
    finally:
        await peer.close()


@pytest.mark.parametrize("speed", [4, 16])
async def test_vp8_at_either_end_of_its_speeds(make_client, frames, speed: int) -> None:
    """--vp8-speed: the slowest and the fastest real-time speeds both send the processed video."""
    config = {"mode": "color", "color": "#0000ff"}
    client = await make_client(codec="vp8", vp8_speed=speed)
    _, codecs, frame = await _received_kbps(client, frames, config)
    assert codecs[0] == "VP8"
    assert_background(frame, (0, 0, 255))
    assert_person_kept(frame, frames[0])


async def test_vp8_goes_faster_when_the_cores_fall_short_and_the_picture_stays(make_client, frames) -> None:
    """When the server's cores cannot keep up (overuse.py), every session's VP8 encoder restarts at the faster
    speed: the video goes on with its background and its person, and /healthz says the speed."""
    client = await make_client(codec="vp8", vp8_speed=6, vp8_speed_max=10)
    peer = Peer(frames)
    session_id = (await open_session(client, peer, {"mode": "color", "color": "#0000ff"}))["session_id"]
    try:
        await peer.frames(15)
        assert (await (await client.get("/healthz")).json())["vp8_speed"] == 6
        manager = client.app[SESSIONS]
        manager.speed.speed = 10  # what two overloaded seconds do (test_overuse.py)
        received = await peer.frames(30)
        assert (await (await client.get("/healthz")).json())["vp8_speed"] == 10
        (sender,) = manager.sessions[session_id].pc.getSenders()
        assert aiortc_hooks.encoder(sender).opened_speed == 10  # type: ignore[union-attr]
        assert_background(received[-1], (0, 0, 255))
        assert_person_kept(received[-1], frames[0])
    finally:
        await peer.close()


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_the_servers_codec_and_bitrate_ceiling(make_client, frames, codec: str) -> None:
    """Answers put the server's codec first and the processed video comes in it; the bitrate ceiling bounds
    what is sent (aiortc alone keeps VP8 at 500 kb/s)."""
    config = {"mode": "color", "color": "#ff00ff"}
    low, codecs, frame = await _received_kbps(await make_client(codec=codec, max_bitrate=300), frames, config)
    assert codecs[0] == codec.upper()
    assert_background(frame, (255, 0, 255))
    high, _, frame = await _received_kbps(await make_client(codec=codec, max_bitrate=4000), frames, config)
    assert_background(frame, (255, 0, 255))
    assert low < 450 and high > 2 * low, (low, high)
