"""WHIP ingest and WHEP playback (RFC 9725 and its playback twin) over real loopback peers: the statuses,
headers and pixels a standard client sees."""

from __future__ import annotations

import asyncio

import pytest
from test_server import assert_background, assert_person_kept

from server.tools.client import Peer, Player

pytestmark = pytest.mark.e2e
SDP = {"Content-Type": "application/sdp"}
TRICKLE = "application/trickle-ice-sdpfrag"


async def whip(client, peer: Peer, query: str = "?mode=color&color=%2300ffff", headers: dict | None = None):
    response = await client.post(f"/whip{query}", data=await peer.offer(), headers={**SDP, **(headers or {})})
    return response


async def watch(client, session: str) -> tuple[Player, str]:
    player = Player()
    response = await client.post(f"{session}/whep", data=await player.offer(), headers=SDP)
    assert response.status == 201, await response.text()
    assert response.content_type == "application/sdp"
    await player.accept(await response.text())
    return player, response.headers["Location"]


async def test_whip_sendrecv_answers_with_the_rfc_headers_and_returns_processed_video(make_client, frames) -> None:
    client = await make_client(ice_servers=["stun:stun.example.net:3478"])
    peer = Peer(frames)
    response = await whip(client, peer)
    try:
        assert response.status == 201 and response.content_type == "application/sdp"
        location = response.headers["Location"]
        assert location.startswith("/sessions/") and response.headers["ETag"].startswith('"')
        links = response.headers.getall("Link")
        assert '<stun:stun.example.net:3478>; rel="ice-server"' in links
        assert f'<{location}/whep>; rel="whep"' in links
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        await peer.accept(await response.text())
        got = (await peer.frames(12))[-1]
        assert_background(got, (0, 255, 255))
        assert_person_kept(got, frames[0])
        assert (await client.delete(location)).status == 204
        assert (await client.delete(location)).status == 404
    finally:
        await peer.close()


async def test_sendonly_ingest_is_watched_by_whep_players_until_the_session_ends(make_client, frames) -> None:
    client = await make_client()
    peer = Peer(frames, direction="sendonly")
    response = await whip(client, peer)
    assert response.status == 201, await response.text()
    location = response.headers["Location"]
    await peer.accept(await response.text())
    players = []
    try:
        for _ in range(2):  # several players, one processed track
            player, resource = await watch(client, location)
            players.append((player, resource))
        for player, _ in players:
            got = (await player.frames(10))[-1]
            assert_background(got, (0, 255, 255))
            assert_person_kept(got, frames[0])
        described = await (await client.get(location)).json()
        assert described["returns_video"] is False and described["players"] == 2
        # One player leaves by DELETE; the other keeps watching.
        assert (await client.delete(players[0][1])).status == 204
        assert (await client.delete(players[0][1])).status == 404
        await players[1][0].frames(3)
        # The session ends: its players' connections close.
        assert (await client.delete(location)).status == 204
        track = await players[1][0].remote
        for _ in range(50):
            if players[1][0].pc.connectionState == "closed" or track.readyState == "ended":
                break
            await asyncio.sleep(0.1)
        assert players[1][0].pc.connectionState == "closed" or track.readyState == "ended"
        gone = await client.post(f"{location}/whep", data=await Player().offer(), headers=SDP)
        assert gone.status == 404 and (await gone.json())["error"] == "no such session"
    finally:
        await peer.close()
        for player, _ in players:
            await player.close()


async def test_whip_and_whep_refuse_what_the_rfc_refuses(make_client, frames) -> None:
    client = await make_client(tokens=["s3cret"])
    peer = Peer(frames)
    try:
        # Authentication: 401 with a Bearer challenge, JSON body.
        response = await whip(client, peer)
        assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in (await response.json())["error"]
        wrong = await whip(client, peer, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        # Wrong content type, wrong method.
        typed = await client.post("/whip", json={"sdp": "v=0"}, headers={"Authorization": "Bearer s3cret"})
        assert typed.status == 415 and (await typed.json())["field"] == "Content-Type"
        assert (await client.get("/whip")).status == 405
        # A player's offer on the ingest endpoint.
        player = Player()
        recvonly = await client.post(
            "/whip", data=await player.offer(), headers={**SDP, "Authorization": "Bearer s3cret"}
        )
        assert recvonly.status == 422 and "WHEP" in (await recvonly.json())["error"]
        await player.close()
        # The real thing.
        response = await whip(client, peer, headers={"Authorization": "Bearer s3cret"})
        assert response.status == 201
        location, etag = response.headers["Location"], response.headers["ETag"]
        await peer.accept(await response.text())
        auth = {"Authorization": "Bearer s3cret"}
        candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        local = peer.pc.localDescription.sdp
        ufrag, pwd = (local.split(f"a=ice-{key}:")[1].split()[0] for key in ("ufrag", "pwd"))
        fragment = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{candidate}"

        def patch(body: str, **headers: str):  # type: ignore[no-untyped-def]
            return client.patch(location, data=body, headers={"Content-Type": TRICKLE, **auth, **headers})

        assert (await patch(fragment)).status == 428  # no If-Match
        assert (await patch(fragment, **{"If-Match": '"stale"'})).status == 412
        assert (await patch(fragment, **{"If-Match": etag})).status == 204  # a trickled candidate
        restart = "a=ice-ufrag:newu\r\na=ice-pwd:newpasswordnewpasswordnew\r\n" + candidate
        refused = await patch(restart, **{"If-Match": "*"})
        assert refused.status == 422 and "ICE restart" in (await refused.json())["error"]
        assert (await client.patch(location, data=fragment, headers={"Content-Type": TRICKLE})).status == 401
        # Preflight.
        options = await client.options("/whip")
        assert options.status == 204 and "application/sdp" in options.headers["Accept-Post"]
        assert "POST" in options.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in options.headers["Access-Control-Allow-Headers"]
        resource_options = await client.options(location)
        assert "application/trickle-ice-sdpfrag" in resource_options.headers["Accept-Patch"]
        # A WHEP offer must receive; unknown sessions and players are 404 JSON.
        sending = await client.post(
            f"{location}/whep", data=await Peer(frames, direction="sendonly").offer(), headers=SDP
        )
        assert sending.status == 422
        assert (await client.post("/sessions/nope/whep", data=await Player().offer(), headers=SDP)).status == 404
        assert (await client.delete(f"{location}/whep/nope")).status == 404
        # The session still streams through all of it, and only a token ends it.
        assert (await client.delete(location)).status == 401
        assert_background((await peer.frames(8))[-1], (0, 255, 255))
        assert (await client.delete(location, headers=auth)).status == 204
    finally:
        await peer.close()
