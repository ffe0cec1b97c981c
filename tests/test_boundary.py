"""What strangers send: fuzzed HTTP requests and data-channel messages, churned sessions, other users'
sessions and uploads. Nothing may cost a 500, a session, a thread or someone else's privacy."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from server.tools.client import Peer, photo_frames
from server.web.keys import SESSIONS

from conftest import OPERATOR, TOP_LEFT, TOP_RIGHT, ServerThread, SilentTrack, open_session, region

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real_offer() -> str:
    async def make() -> str:
        peer = Peer(photo_frames(np.zeros((64, 64, 3), np.uint8), size=(48, 64), count=1), audio=True)
        try:
            return await peer.offer()
        finally:
            await peer.close()

    return asyncio.run(make())


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
config_like = st.dictionaries(
    st.sampled_from(["mode", "blur", "color", "image", "model", "smoothing", "refine", "light_wrap", "x"]),
    json_values,
    max_size=4,
)


@st.composite
def mutated_sdp(draw: st.DrawFn, offer: str) -> bytes:
    lines = offer.split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "replace", "truncate", "garble"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "replace":
            lines[i] = draw(st.text(max_size=40))
        elif action == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            lines[i] = lines[i].replace(draw(st.sampled_from(["=", ":", " ", "/"])), draw(st.text(max_size=3)))
        if not lines:
            lines = [""]
    data = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    return data if draw(st.booleans()) else data + draw(st.binary(max_size=8))


def requests(offer: str, session: str) -> st.SearchStrategy[tuple[str, str, bytes, dict]]:
    """Requests for every route, most of them aimed at what the route parses, some at random."""
    ids = st.sampled_from(["x", "..", "%2e%2e", "upload-x", "aurora", "A" * 300, "%00", "%ff", session[:-1]])
    query = st.dictionaries(
        st.sampled_from(["mode", "color", "blur", "model", "refine", "smoothing", "x"]),
        st.text(max_size=12),
        max_size=3,
    ).map(lambda q: "?" + urllib.parse.urlencode(q) if q else "")
    json_bodies = st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda t, s, c: json.dumps({"type": t, "sdp": s, "config": c}).encode(),
            st.sampled_from(["offer", "answer", 1]),
            st.sampled_from([offer, "v=0", "", 5]),
            config_like,
        ),
        st.builds(lambda c: json.dumps({"config": c}).encode(), config_like),
        config_like.map(lambda c: json.dumps(c).encode()),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    )
    images = st.sampled_from(
        [_png((4, 4)), _png((3000, 3000), "1"), b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"GIF89a", b"\xff\xd8\xff"]
    )
    anything = st.one_of(st.binary(max_size=512), json_bodies, mutated_sdp(offer), images)
    types = st.sampled_from(
        ["application/json", "application/sdp", "image/png", "text/plain", "multipart/form-data; boundary=x", ""]
    )
    auth = st.sampled_from([{}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer"}, OPERATOR])

    def build(method: str, path: str, body: bytes, content_type: str, headers: dict) -> tuple[str, str, bytes, dict]:
        return method, path, body, {**headers, **({"Content-Type": content_type} if content_type else {})}

    offers = st.builds(
        build,
        st.just("POST"),
        query.map(lambda q: "/offer" + q) | query.map(lambda q: "/whip" + q),
        st.one_of(json_bodies, mutated_sdp(offer), st.binary(max_size=256)),
        st.sampled_from(["application/json", "application/sdp", ""]),
        st.just({}),
    )
    fragments = st.sampled_from(
        [
            b"a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n",
            b"a=ice-ufrag:x\r\na=ice-pwd:y\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
            b"m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=end-of-candidates\r\n",
            b"a=candidate:junk\r\n",
            b"v=0\r\n",
        ]
    )
    patches = st.builds(
        build,
        st.just("PATCH"),
        st.just(f"/sessions/{session}"),
        st.one_of(json_bodies, st.binary(max_size=256), fragments),
        st.sampled_from(["application/json", "text/plain", "application/trickle-ice-sdpfrag", ""]),
        st.sampled_from([{}, {"If-Match": "*"}, {"If-Match": '"stale"'}, {"If-Match": ""}]),
    )
    players = st.builds(
        build,
        st.just("POST"),
        st.one_of(st.just(f"/sessions/{session}/whep"), ids.map(lambda i: f"/sessions/{i}/whep")),
        st.one_of(mutated_sdp(offer), st.binary(max_size=256)),
        st.sampled_from(["application/sdp", "application/json", ""]),
        st.just({}),
    )
    multipart = st.builds(
        lambda name, headers, data: (
            b'--x\r\nContent-Disposition: form-data; name="'
            + name
            + b'"'
            + headers
            + b"\r\n\r\n"
            + data
            + b"\r\n--x--\r\n"
        ),
        st.sampled_from([b"file", b"other"]) | st.binary(max_size=12),
        st.sampled_from([b"", b'; filename="a.png"\r\nContent-Type: image/png']) | st.binary(max_size=24),
        images | st.binary(max_size=64),
    )
    uploads = st.builds(
        build,
        st.just("POST"),
        st.just("/backgrounds"),
        st.one_of(images, st.binary(max_size=256), multipart),
        types,
        st.just({}),
    )
    reads = st.builds(
        build,
        st.sampled_from(["GET", "DELETE"]),
        st.one_of(
            ids.map(lambda i: f"/sessions/{i}"),
            ids.map(lambda i: f"/sessions/{session}/whep/{i}"),
            ids.map(lambda i: f"/view/{i}"),
            ids.map(lambda i: f"/backgrounds/{i}"),
            st.sampled_from(["/sessions", "/backgrounds", "/models", "/config/defaults", "/healthz", "/metrics", "/"]),
            st.sampled_from(["/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/app.js", "//x"]),
        ),
        st.just(b""),
        st.just(""),
        auth,
    )
    random_routes = st.builds(
        build,
        st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"]),
        st.sampled_from(["/offer", "/whip", "/sessions", "/backgrounds", "/models", "/healthz", "/nope"]),
        anything,
        types,
        auth,
    )
    return st.one_of(offers, patches, players, uploads, reads, random_routes)


def test_fuzzed_requests_never_cost_a_500(live: ServerThread, real_offer: str) -> None:
    seen: dict[int, int] = {}

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
    @given(requests(real_offer, live.session))
    def one(request: tuple[str, str, bytes, dict]) -> None:
        method, path, body, headers = request
        status, data, content_type = live.request(method, path, body, headers)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500 or status == 503, (request, status, data[:300])
        if status >= 400:
            assert content_type.startswith("application/json"), (request, status, data[:300])
            error = json.loads(data)
            assert isinstance(error["error"], str) and error["error"]

    one()
    print(f"fuzzed {sum(seen.values())} requests: status counts {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= 50 and any(status >= 400 for status in seen)
    # The server still serves: it answers, and what the fuzzer created times out on its own.
    assert live.request("GET", "/healthz")[0] == 200


# --- data channel -------------------------------------------------------------------------------------


def junk_messages(count: int, seed: int = 0) -> list[str | bytes]:
    rng = random.Random(seed)
    fixed: list[str | bytes] = [
        "[" * 100_000,
        "{" * 5000,
        '{"type": "config", "config": ' * 500,
        "x" * 100_000,
        b"\x00\xff" * 100,
        "",
        "null",
        "[]",
        '"config"',
        '{"type": "stats"}',
        '{"type": "config", "config": [1, 2]}',
        '{"type": "config", "config": {"blur": 1e999}}',
        '{"mode": "color", "color": "#zzzzzz"}',
        '{"type": "config", "config": {"image": "../../etc/passwd"}}',
        "\ud800",
        '{"type": {"a": 1}}',
    ]
    alphabet = '{}[]":,0123456789.-etrufalsn configmodeblur#'
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(count - len(fixed))]
    return fixed + randoms


async def test_fuzzed_data_channel_messages_never_break_a_session(make_client, astronaut) -> None:
    client = await make_client()
    frames = photo_frames(astronaut)
    peer = Peer(frames)
    body = await open_session(client, peer, {"mode": "color"})
    try:
        await peer.frames(3)
        await asyncio.wait_for(peer.channel_open.wait(), 10)
        replies: list[dict] = []
        for message in junk_messages(300):
            try:
                peer.channel.send(message)
            except (ValueError, UnicodeEncodeError):  # what aiortc itself will not send
                continue
            await asyncio.sleep(0.002)
        await asyncio.sleep(1.0)
        while not peer.messages.empty():
            replies.append(peer.messages.get_nowait())
        errors = [r for r in replies if r["type"] == "error"]
        assert errors and all(r["type"] in ("error", "config", "stats") for r in replies)
        assert sum("messages a second" in r["error"] for r in errors) >= 1  # the flood was cut, once per run
        await asyncio.sleep(2.5)  # the rate limit refills
        # The session still streams, and still obeys a valid change.
        reply = await peer.send_config({"mode": "color", "color": "#ff0000"})
        assert reply["type"] == "config" and reply["config"]["color"] == "#ff0000"
        # Frames sent meanwhile wait in the client's queue: the change shows after them (at most 10 s' worth).
        for _ in range(300):
            (got,) = await peer.frames(1)
            if all(np.abs(region(got, c) - (255, 0, 0)).mean() < 25 for c in (TOP_LEFT, TOP_RIGHT)):
                break
        else:
            pytest.fail("the session never showed the valid change")
        assert (await client.get(f"/sessions/{body['session_id']}")).status == 200
    finally:
        await peer.close()


# --- churn --------------------------------------------------------------------------------------------

KILLED_PEER = """
import asyncio, json, sys, urllib.request
import numpy as np
from server.tools.client import Peer, photo_frames

async def main(url):
    peer = Peer(photo_frames(np.full((64, 64, 3), 128, np.uint8), size=(120, 160), count=4))
    body = json.dumps({"sdp": await peer.offer(), "type": "offer", "config": {"mode": "color"}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(request).read())
    await peer.accept(answer["sdp"])
    await peer.frames(2)
    print(answer["session_id"], flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


def _resources() -> dict[str, int]:
    # No gc.collect() here: freeing what ended sessions held is the server's job (it shares this process).
    return {
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": len(asyncio.all_tasks()),
    }


async def _gone(client, session_id: str, wait_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while session_id in client.app[SESSIONS].sessions:
        assert loop.time() < deadline, "the session outlived its end"
        await asyncio.sleep(0.1)


async def test_churned_sessions_leave_no_thread_fd_or_task_behind(make_client, astronaut) -> None:
    client = await make_client(media_timeout=1.5, connect_timeout=3, max_sessions=4)
    frames = photo_frames(astronaut, size=(240, 320), count=8)

    async def start(peer: Peer, sdp: str | None = None) -> str:
        body = {"sdp": sdp or await peer.offer(), "type": "offer", "config": {"mode": "color"}}
        answer = await (await client.post("/offer", json=body)).json()
        if sdp is None:
            await peer.accept(answer["sdp"])
        return answer["session_id"]

    async def by_delete() -> None:
        peer = Peer(frames, audio=True)
        session_id = await start(peer)
        await peer.frames(3)
        assert (await client.delete(f"/sessions/{session_id}")).status == 204
        await peer.close()

    async def by_peer_closing() -> None:
        peer = Peer(frames)
        session_id = await start(peer)
        await peer.frames(3)
        await peer.close()
        await _gone(client, session_id)

    async def by_silence() -> None:
        peer = Peer(frames)
        peer.pc.getTransceivers()[0].sender.replaceTrack(SilentTrack())
        session_id = await start(peer)
        await _gone(client, session_id)
        await peer.close()

    async def by_ice_failure() -> None:
        peer = Peer(frames)
        lines = [line for line in (await peer.offer()).splitlines() if not line.startswith("a=candidate")]
        ufrag = next(i for i, line in enumerate(lines) if line.startswith("a=ice-ufrag"))
        lines.insert(ufrag, "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host")
        await peer.close()
        await _gone(client, await start(peer, "\r\n".join(lines) + "\r\n"))

    async def by_peer_lost() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KILLED_PEER, str(client.make_url("/offer")), stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        session_id = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        process.kill()  # no goodbye: the server must notice by itself
        await process.wait()
        await _gone(client, session_id)

    ways = [by_delete, by_peer_closing, by_silence, by_ice_failure, by_peer_lost]
    for way in ways:  # the first of each loads what stays loaded (codecs, ICE, DTLS)
        await way()
    await asyncio.sleep(1.0)
    before = _resources()
    for _ in range(2):
        for way in ways:
            await way()
    # The server collects 0.5 s after the last teardown and codec threads end on their own schedule (slower
    # on a loaded machine): wait until the counts settle, then compare. A leak never settles.
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        await asyncio.sleep(0.5)
        after = _resources()
        settled = after["threads"] <= before["threads"] + 1 and after["fds"] <= before["fds"] + 2
        if settled or asyncio.get_running_loop().time() > deadline:
            break
    assert not client.app[SESSIONS].sessions
    assert after["threads"] <= before["threads"] + 1, (before, after)
    assert after["fds"] <= before["fds"] + 2, (before, after)
    assert after["tasks"] <= before["tasks"], (before, after)


# --- capabilities and uploads -------------------------------------------------------------------------


async def test_a_stranger_sees_and_touches_nothing_of_anothers(make_client, astronaut) -> None:
    closed = await make_client(operator_token=None)
    assert (await closed.get("/sessions")).status == 403  # no operator token configured: listings are off
    client = await make_client()
    peer = Peer(photo_frames(astronaut, size=(240, 320), count=8))
    body = {"sdp": await peer.offer(), "type": "offer", "config": {"mode": "color"}}
    session_id = (await (await client.post("/offer", json=body)).json())["session_id"]
    upload = await client.post("/backgrounds", data=_png((64, 48)), headers={"Content-Type": "image/png"})
    image_id = (await upload.json())["id"]
    try:
        # Ids are capabilities: 128 random bits or more (url-safe base64, 6 bits a character).
        assert len(session_id) * 6 >= 128 and len(image_id.removeprefix("upload-")) * 6 >= 128
        for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "Basic op-token"}):
            response = await client.get("/sessions", headers=headers)
            assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
            listed = await (await client.get("/backgrounds", headers=headers)).json()
            assert image_id not in json.dumps(listed)
        for method in ("get", "patch", "delete"):
            guess = session_id[:-2] + ("AA" if not session_id.endswith("AA") else "BB")
            assert (await getattr(client, method)(f"/sessions/{guess}", json={})).status == 404
        assert (await client.get(f"/backgrounds/{image_id[:-1]}")).status == 404
        operator = (await (await client.get("/sessions", headers=OPERATOR)).json())["sessions"]
        assert [s["id"] for s in operator] == [session_id]
        assert (await client.get(f"/sessions/{session_id}")).status == 200  # its creator still may
    finally:
        await peer.close()


async def test_uploads_are_scaled_and_kept_within_their_budget(make_client, pipeline, astronaut) -> None:
    client = await make_client(upload_budget_mb=1, max_background_side=320)

    async def upload(color: tuple[int, int, int], size: tuple[int, int] = (1600, 1200)):  # type: ignore[no-untyped-def]
        data = io.BytesIO()
        Image.new("RGB", size, color).save(data, format="JPEG", quality=90)
        return await client.post("/backgrounds", data=data.getvalue(), headers={"Content-Type": "image/jpeg"})

    first = await (await upload((250, 200, 0))).json()
    assert (first["width"], first["height"]) == (320, 240)  # 1600x1200 kept at 320 px on the longer side
    peer = Peer(photo_frames(astronaut, size=(240, 320), count=8))
    await open_session(client, peer, {"mode": "image", "image": first["id"]})
    try:
        # 320x240 RGB is 225 KiB: a 1 MiB budget holds four; older ones that no session shows make room.
        ids = [(await (await upload((0, 0, 255 - i))).json())["id"] for i in range(8)]
        assert (await client.get(f"/backgrounds/{ids[0]}")).status == 404  # evicted
        assert (await client.get(f"/backgrounds/{ids[-1]}")).status == 200
        assert (await client.get(f"/backgrounds/{first['id']}")).status == 200  # in use: kept
        got = (await peer.frames(10))[-1]
        assert np.abs(region(got, TOP_LEFT) - (250, 200, 0)).mean() < 25  # and still streaming
        # A budget full of images that live sessions show: a clear refusal, not an eviction.
        pipeline.backgrounds.in_use = lambda: set(pipeline.backgrounds.uploads())
        refused = await upload((1, 2, 3))
        assert refused.status == 507 and "budget" in (await refused.json())["error"]
    finally:
        await peer.close()
