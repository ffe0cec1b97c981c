// Backdrop viewer: plays one session's processed video through WHEP (a Browser Source for OBS).
"use strict";

const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const statusBox = document.getElementById("status");
let resource = null;

function status(text) {
  statusBox.textContent = text;
  statusBox.hidden = !text;
}

function gathered(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    peer.addEventListener("icegatheringstatechange", () => { if (peer.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, 3000); // host candidates are enough on a LAN
  });
}

async function play() {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addEventListener("track", (event) => { document.getElementById("video").srcObject = new MediaStream([event.track]); });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected") status("");
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      status("The stream ended; retrying…");
      pc.close();
      setTimeout(play, 2000);
    }
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  // Relative: behind a proxy this page is /w/N/view/ID and the session lives at /w/N/sessions/ID.
  const response = await fetch(new URL(`../sessions/${encodeURIComponent(sessionId)}/whep`, location.href), {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    let reason = response.statusText;
    try { reason = (await response.json()).error; } catch { /* not JSON */ }
    status(`No stream: ${reason}. Retrying…`);
    pc.close();
    setTimeout(play, 3000);
    return;
  }
  resource = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}

window.addEventListener("beforeunload", () => { if (resource) fetch(resource, { method: "DELETE", keepalive: true }); });
play().catch((err) => status(String(err)));
