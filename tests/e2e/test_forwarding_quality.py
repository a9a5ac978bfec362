"""A Chromium publisher at 1280x720 30 fps through Jisr to a Chromium subscriber:
the publisher's congestion control must ramp up to 720p and at least 1 Mbit/s,
from the feedback Jisr gives it (receiver reports, REMB), while audio flows."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.test_consult_flow import wait_until

pytestmark = pytest.mark.e2e

# A minimal client of the Jisr protocol (docs/protocol.md), so the test controls the
# camera resolution; the pages themselves ask for 640x480.
JOIN_JS = r"""
const [base, token, sessionId, width, height, fps] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const ws = new WebSocket(base.replace('http', 'ws') + '/ws');
  const pending = new Map();
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.ref && pending.has(m.ref)) { pending.get(m.ref)(m); pending.delete(m.ref); }
  };
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  let n = 0;
  const ask = (msg) => new Promise((ok) => {
    const ref = 'q' + (++n); pending.set(ref, ok); ws.send(JSON.stringify({...msg, ref}));
  });
  const welcome = await ask({type: 'auth', token});
  if (welcome.type !== 'welcome') throw new Error(JSON.stringify(welcome));
  const joined = await ask({type: 'join', session_id: sessionId});
  if (joined.type !== 'joined') throw new Error(JSON.stringify(joined));
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: {width: {exact: width}, height: {exact: height}, frameRate: {ideal: fps}},
  });
  const pc = new RTCPeerConnection();
  pc.addTransceiver(stream.getAudioTracks()[0], {direction: 'sendrecv'});
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: 'sendrecv'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
    setTimeout(ok, 3000);
  });
  const answer = await ask({type: 'offer', sdp: pc.localDescription.sdp});
  if (answer.type !== 'answer') throw new Error(JSON.stringify(answer));
  await pc.setRemoteDescription({type: 'answer', sdp: answer.sdp});
  window.__jisrTest = {pc, ws};
  done('ok');
})().catch((e) => done('error: ' + e));
"""

STATS_JS = r"""
const done = arguments[arguments.length - 1];
window.__jisrTest.pc.getStats().then((report) => {
  const out = {};
  report.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.sent = {width: s.frameWidth, height: s.frameHeight, target: s.targetBitrate,
                  fps: s.framesPerSecond, limitation: s.qualityLimitationReason};
    }
    if (s.type === 'inbound-rtp') {
      out[s.kind] = {width: s.frameWidth, height: s.frameHeight, frames: s.framesDecoded,
                     packets: s.packetsReceived, bytes: s.bytesReceived};
    }
  });
  done(out);
});
"""


def join(driver: WebDriver, server, token: str, session_id: str, size: tuple[int, int, int]):
    driver.get(f"{server.base}/index.html")
    result = driver.execute_async_script(JOIN_JS, server.base, token, session_id, *size)
    assert result == "ok", result


def test_chromium_publisher_ramps_to_720p_through_jisr(jisr_server, browsers, record_property):
    import json
    import urllib.request

    server, tokens = jisr_server, jisr_server.tokens

    def post(path: str, token: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            server.base + path, data=json.dumps(body or {}).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    consult = post("/api/consults", tokens.referrer, {
        "specialty": "cardiology", "urgency": "critical", "summary": "echo review",
        "patient_ref": "P-720",
    })  # fmt: skip
    session_id = post(f"/api/consults/{consult['id']}/accept", tokens.specialist)["session"]["id"]

    publisher = browsers("--use-fake-device-for-media-stream=fps=30")
    subscriber = browsers("--use-fake-device-for-media-stream=fps=15")
    join(publisher, server, tokens.referrer, session_id, (1280, 720, 30))
    started = time.monotonic()
    join(subscriber, server, tokens.specialist, session_id, (320, 240, 15))

    def reached() -> dict | None:
        sent = publisher.execute_async_script(STATS_JS).get("sent") or {}
        got = subscriber.execute_async_script(STATS_JS)
        video = got.get("video") or {}
        if (
            (sent.get("target") or 0) >= 1_000_000
            and sent.get("height") == 720
            and (video.get("height") == 720)
        ):
            return {"sent": sent, "received": got}
        return None

    final = wait_until(reached, 40, "720p and a 1 Mbit/s target at the publisher")
    seconds = time.monotonic() - started
    audio_before = final["received"]["audio"]["packets"]
    wait_until(
        lambda: subscriber.execute_async_script(STATS_JS)["audio"]["packets"] > audio_before + 20,
        5, "Opus still flowing",
    )  # fmt: skip
    record_property("seconds_to_720p_1mbps", round(seconds, 1))
    print(f"\n720p and >= 1 Mbit/s target after {seconds:.1f} s: {final}")
