"""The hooks into aiortc's private API: written for one aiortc version, refused on any other, and still
landing where that version keeps what they replace."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest
from aiortc.codecs import h264, vpx

from server.rtc import aiortc_hooks
from server.rtc.aiortc_hooks import AIORTC_VERSION, AiortcVersionError, check_version
from server.rtc.dtls import InteropCertificate, peer_connection
from server.rtc.encoders import EncoderSettings, fit_senders, prefer_codec  # noqa: F401  # importable as before
from server.rtc.jitter import MarkerJitterBuffer
from server.rtc.recovery import recover_losses

pytestmark = pytest.mark.unit


def test_the_installed_aiortc_is_the_one_the_hooks_were_written_for() -> None:
    check_version()
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert f"aiortc=={AIORTC_VERSION}" in pyproject["project"]["dependencies"]


@pytest.mark.parametrize("other", ["1.15.0", "1.16.1", "2.0.0"])
def test_another_aiortc_is_refused_with_what_to_do(other: str) -> None:
    with pytest.raises(AiortcVersionError) as refused:
        check_version(other)
    message = str(refused.value)
    assert f"aiortc {other} is installed" in message and f"aiortc=={AIORTC_VERSION}" in message
    assert "aiortc_hooks.py" in message


async def test_the_hooks_land_where_aiortc_keeps_what_they_replace() -> None:
    for encoder, name in ((vpx.Vp8Encoder(), "vp8"), (h264.H264Encoder(), "h264")):
        assert isinstance(getattr(encoder, aiortc_hooks.TARGET_BITRATE[name]), int)
    pc = peer_connection()
    try:
        certificates = pc._RTCPeerConnection__certificates  # type: ignore[attr-defined]
        assert [type(c) for c in certificates] == [InteropCertificate]
        transceiver = pc.addTransceiver("video")
        assert hasattr(transceiver.sender, "_RTCRtpSender__encoder")
        stats = [s for s in (await transceiver.sender.getStats()).values() if s.type == "transport"]
        assert [(s.packetsSent, s.bytesSent) for s in stats] == [aiortc_hooks.transport_sent(transceiver.sender)]
        assert hasattr(transceiver.sender.transport, "_RTCDtlsTransport__tx_bytes")
        assert aiortc_hooks.codecs(transceiver) == []  # nothing negotiated yet
        (recovering,) = recover_losses(pc)
        timer = recovering.timer
        assert timer is not None and not timer.done()  # NACKs between packets, while pc lives
        assert hasattr(transceiver.receiver, "_send_rtcp_nack")
        buffer = transceiver.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert buffer is recovering and isinstance(buffer, MarkerJitterBuffer)
        assert list(aiortc_hooks.buffered(buffer)) == []
    finally:
        await pc.close()
    await asyncio.sleep(0.05)
    assert timer.done()  # it ends with the connection
