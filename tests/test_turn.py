"""A session relayed through a real TURN server (Debian's coturn, `make turn`), with the long-term credential
the Kubernetes manifests use (deploy/kubernetes/coturn.yaml: --lt-cred-mech, realm backdrop, user backdrop):
a client that may only use relayed candidates gets the processed video back through the relay."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from server.tools.client import Peer
from server.tools.loadtest import free_port

from conftest import TOP_LEFT, TOP_RIGHT, open_session, region

pytestmark = pytest.mark.turn

PASSWORD = "relay-secret"


def _answers_stun(port: int) -> bool:
    """Whether a STUN binding request (RFC 8489) to 127.0.0.1:`port` gets its success response."""
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.3)
        udp.sendto(request, ("127.0.0.1", port))
        try:
            reply = udp.recv(2048)
        except OSError:
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == request[8:20]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """coturn on loopback, as the manifests run it (plus loopback peers, which a test on one machine needs):
    its `turn:` URL and its log file."""
    binary = shutil.which("turnserver")
    assert binary, "coturn is not installed: `make turn` installs Debian's"
    port, log = free_port(), tmp_path_factory.mktemp("coturn") / "turn.log"
    low = 50000 + port % 10000
    process = subprocess.Popen(
        [
            binary,
            "-n",  # no configuration file
            f"--listening-port={port}",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--min-port={low}",
            f"--max-port={low + 200}",
            "--fingerprint",
            "--lt-cred-mech",
            "--realm=backdrop",
            f"--user=backdrop:{PASSWORD}",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--allow-loopback-peers",
            f"--log-file={log}",
            "--simple-log",
            "--verbose",  # each allocation and permission in the log
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers_stun(port):
            assert process.poll() is None, f"turnserver exited: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "turnserver did not answer on its port"
        yield f"turn:127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(10)


async def test_a_relay_only_client_gets_the_background_through_turn(make_client, frames, coturn) -> None:
    url, log = coturn
    client = await make_client(ice_servers=[url], ice_username="backdrop", ice_credential=PASSWORD)
    relay_only = RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username="backdrop", credential=PASSWORD)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    peer = Peer(frames, ice=relay_only)
    try:
        answer = await open_session(client, peer, {"mode": "color", "color": "#00ff00"})
        offer = peer.pc.localDescription.sdp
        candidates = re.findall(r"a=candidate:.* typ (\w+)", offer)
        assert candidates and set(candidates) == {"relay"}, candidates  # the client can only be reached there
        returned = await peer.frames(10)
        response = await client.get(answer["resource"])
        assert (await response.json())["connection_state"] == "connected"
    finally:
        await peer.close()
    for corner in (TOP_LEFT, TOP_RIGHT):  # the processed video came back, through the relay
        assert np.abs(region(returned[-1], corner) - (0, 255, 0)).mean() < 40
    text = log.read_text(errors="replace")
    assert re.search(r"session \d+: realm <backdrop> user <backdrop>", text), text[-2000:]
    # a permission for the server's address on the relay (aioice binds a channel, which grants one)
    assert re.search(r"(CREATE_PERMISSION|CHANNEL_BIND) processed, success", text), text[-2000:]


async def test_the_whip_answer_names_the_turn_server_with_its_credential(make_client, coturn) -> None:
    url, _ = coturn
    client = await make_client(ice_servers=[url], ice_username="backdrop", ice_credential=PASSWORD)
    response = await client.options("/whip")
    assert response.status == 204
    peer = Peer([np.zeros((120, 160, 3), np.uint8)])
    try:
        offer = await peer.offer()
        response = await client.post("/whip", data=offer, headers={"Content-Type": "application/sdp"})
        assert response.status == 201
        links = response.headers.getall("Link")
    finally:
        await peer.close()
    assert f'<{url}>; rel="ice-server"; username="backdrop"; credential="{PASSWORD}"; credential-type="password"' in (
        links
    )
