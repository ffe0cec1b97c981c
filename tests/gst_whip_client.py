"""A WHIP client built on GStreamer's webrtcbin (a WebRTC stack nobody here wrote), run by the tests with the
system Python 3 and Debian's PyGObject.

    python3 gst_whip_client.py URL IMAGE.png sendrecv|sendonly SECONDS OUT.rgb

Sends the image as a VP8 video (a still, 30 fps). Prints one JSON line when the WHIP POST is answered
({"post": status, "location": ...}) and one at the end ({"frames": n, "width": w, "height": h,
"delete": status}); with sendrecv, the last returned frame is written to OUT.rgb as raw RGB bytes.
(Debian's simple-whip-client crashes at start on bookworm, with libsoup 2 and 3 in one process.)
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

url, image, direction, seconds, out = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
Gst.init(None)
pipeline = Gst.parse_launch(
    "webrtcbin name=webrtc bundle-policy=max-bundle "
    f"filesrc location={image} ! pngdec ! imagefreeze ! videoconvert ! videorate ! "
    "video/x-raw,format=I420,framerate=30/1 ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96 ! webrtc."
)
webrtc = pipeline.get_by_name("webrtc")
loop = GLib.MainLoop()
state = {"frames": 0, "width": 0, "height": 0, "location": None, "last": None}


def say(**values: object) -> None:
    print(json.dumps(values), flush=True)


def http(method: str, target: str, body: bytes | None = None, content_type: str | None = None):
    request = urllib.request.Request(target, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def post_offer() -> bool:
    """Once ICE gathering is complete (no trickle): POST the offer, apply the answer."""
    offer = webrtc.get_property("local-description").sdp.as_text()
    status, headers, body = http("POST", url, offer.encode(), "application/sdp")
    location = headers.get("Location")
    state["location"] = urllib.parse.urljoin(url, location) if location else None
    say(post=status, location=location, etag=headers.get("ETag"), links=headers.get_all("Link") or [])
    if status != 201:
        loop.quit()
        return False
    _, sdp = GstSdp.SDPMessage.new_from_text(body.decode())
    answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
    webrtc.emit("set-remote-description", answer, Gst.Promise.new())
    return False


def on_gathering(element: Gst.Element, _pspec: object) -> None:
    if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
        GLib.idle_add(post_offer)


def on_offer(promise: Gst.Promise, *_: object) -> None:
    promise.wait()
    reply = promise.get_reply()
    offer = reply.get_value("offer") if reply is not None else None
    if offer is None:  # an early negotiation (before the caps were known) makes no offer; a later one does
        return
    webrtc.emit("set-local-description", offer, Gst.Promise.new())


def on_negotiation_needed(element: Gst.Element) -> None:
    element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))


def on_sample(sink: Gst.Element) -> Gst.FlowReturn:
    sample = sink.emit("pull-sample")
    structure = sample.get_caps().get_structure(0)
    state["width"], state["height"] = structure.get_value("width"), structure.get_value("height")
    buffer = sample.get_buffer()
    ok, info = buffer.map(Gst.MapFlags.READ)
    if ok:
        state["last"] = bytes(info.data)
        buffer.unmap(info)
    state["frames"] += 1
    return Gst.FlowReturn.OK


def on_pad(element: Gst.Element, pad: Gst.Pad) -> None:
    if pad.direction != Gst.PadDirection.SRC:
        return
    decode = Gst.parse_bin_from_description(
        "rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink emit-signals=true sync=false",
        True,
    )
    pipeline.add(decode)
    decode.sync_state_with_parent()
    decode.get_by_name("sink").connect("new-sample", on_sample)
    pad.link(decode.get_static_pad("sink"))


def finish() -> bool:
    delete = None
    if state["location"]:
        delete, _, _ = http("DELETE", state["location"])
    if state["last"] is not None:
        with open(out, "wb") as f:
            f.write(state["last"])
    say(frames=state["frames"], width=state["width"], height=state["height"], delete=delete)
    loop.quit()
    return False


webrtc.connect("on-negotiation-needed", on_negotiation_needed)
webrtc.connect("notify::ice-gathering-state", on_gathering)
webrtc.connect("pad-added", on_pad)
pipeline.set_state(Gst.State.READY)
transceiver = webrtc.emit("get-transceiver", 0)
transceiver.set_property(
    "direction",
    GstWebRTC.WebRTCRTPTransceiverDirection.SENDRECV
    if direction == "sendrecv"
    else GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY,
)
pipeline.set_state(Gst.State.PLAYING)
GLib.timeout_add(int(seconds * 1000), finish)
loop.run()
pipeline.set_state(Gst.State.NULL)
