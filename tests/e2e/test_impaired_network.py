"""Hold the consult through a bad network: a Chromium participant behind a
500 kbit/s link with 5 % loss and 150 ms added each way publishes its fake camera
(640x480 at 30 fps in three temporal layers, as the pages send it) through Jisr to a Chromium
participant on a clean link. The call connects, audio flows both ways, and the
clean side's video stays at or above 15 frames per second (at whatever resolution
the link allows) with no freeze longer than 2 s. Over 30 s the test prints what
video did (resolution, fps, bitrate, loss, freezes, audio) as a table.

Topology (tests/support/netem.py builds and owns the impaired part)::

    clean Chromium ----------- 127.0.0.1 (direct host candidates) ----------+
                                                                            v
    impaired Chromium                                                   jisr serve
      | iceTransportPolicy "relay", TURN server 127.0.0.1:P                 ^
      v                                                                     |
    impairment helper, front 127.0.0.1:P                                    |
      | +150 ms                                                             |
      v                                                                     |
    ns A 10.99.0.2 --veth (tbf 500 kbit/s egress on each end)--> ns B 10.99.0.1
      ^  nft input: 5 % random UDP drop         nft input: 5 % random UDP drop
      |                                                 | back socket 127.0.0.1
      +---------------- +150 ms <----------------------+  <-> coturn 127.0.0.1:T
                                                            relays to jisr 127.0.0.1

Every media packet the impaired browser sends or receives (RTP, RTCP, STUN, all
wrapped in TURN) crosses that veth twice delayed, rate-limited and thinned; the
signaling WebSocket and the WebDriver connection stay on loopback, unimpaired.
The two namespaces exist only inside the helper process (nothing is added to the
namespace the test runs in) and vanish with it, veth, qdiscs and nftables
included, whatever way the test ends.

Needs Debian's iproute2 (ip, tc), nftables (nft), util-linux (nsenter) and coturn
(turnserver); the test fails, naming the packages, when one is missing.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException

from signaling.turn import ice_servers
from tests.e2e.test_consult_flow import wait_until
from tests.support.netem import ImpairedUdpPath
from tests.support.netns import missing_tools
from tests.support.turnserver import coturn

pytestmark = pytest.mark.e2e

RATE = "500kbit"
LOSS_PERCENT = 5
DELAY_MS = 150
MEASURE_S = 30  # from the first frame decoded on the clean side
JUDGED_S = 20  # the frame rate is judged over the last 20 s of those
MIN_FPS = 15
MAX_FREEZE_S = 2.0
# Opus sends 50 packets/s: "steady" is at least half of that in every 2 s window
# (sliding by 1 s), so a 1 s outage fails, while packets that a full queue delays
# and then delivers in a burst do not.
MIN_AUDIO_PPS = 25
AUDIO_WINDOW_S = 2
ROW_S = 3  # one table row per 3 s

# The pages' own client (web/js/session.js) gathers, sends the offer with every
# candidate, and applies the answer; this is the same protocol (docs/protocol.md)
# with the RTCPeerConnection configuration as a parameter, so the impaired side
# can be held to its TURN relay. Camera request and sender settings (temporal
# layers, priorities, degradation preference) as the pages make them.
JOIN_JS = r"""
const [base, token, sessionId, config] = arguments;
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
    audio: true, video: {width: {ideal: 640}, height: {ideal: 480}},
  });
  const pc = new RTCPeerConnection(config);
  const errors = [];
  pc.onicecandidateerror = (e) => errors.push({code: e.errorCode, text: e.errorText});
  const audio = pc.addTransceiver(stream.getAudioTracks()[0],
                                  {direction: 'sendrecv', streams: [stream]}).sender;
  const video = pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendrecv', streams: [stream], sendEncodings: [{scalabilityMode: 'L1T3'}],
  }).sender;
  // What web/js/quality.js applies on an uncapped link: speech first, and the
  // encoder gives up resolution before frame rate.
  const tweak = async (sender, change) => {
    const p = sender.getParameters(); change(p); await sender.setParameters(p);
  };
  await tweak(audio, (p) => p.encodings.forEach((e) => {
    e.priority = 'high'; e.networkPriority = 'high';
  }));
  await tweak(video, (p) => {
    p.degradationPreference = 'maintain-framerate';
    p.encodings.forEach((e) => { e.priority = 'low'; e.networkPriority = 'low'; });
  });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
    setTimeout(ok, 5000);
  });
  const answer = await ask({type: 'offer', sdp: pc.localDescription.sdp});
  if (answer.type !== 'answer') throw new Error(JSON.stringify(answer));
  await pc.setRemoteDescription({type: 'answer', sdp: answer.sdp});
  window.__jisrTest = {pc, ws, errors, samples: []};
  done('ok');
})().catch((e) => done('error: ' + e));
"""

# One compact sample of the peer connection's stats.
SAMPLE_JS = r"""
window.__jisrSample = async () => {
  const {pc} = window.__jisrTest;
  const report = await pc.getStats();
  const s = {t: performance.now() / 1000, state: pc.connectionState};
  report.forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      s.out = {w: r.frameWidth, h: r.frameHeight, fps: r.framesPerSecond,
               frames: r.framesEncoded, bytes: r.bytesSent, packets: r.packetsSent,
               retx: r.retransmittedPacketsSent, target: r.targetBitrate,
               limit: r.qualityLimitationReason, nacks: r.nackCount, plis: r.pliCount,
               layers: r.scalabilityMode};
    } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
      s.outAudio = {packets: r.packetsSent};
    } else if (r.type === 'remote-inbound-rtp' && r.kind === 'video') {
      s.remote = {fractionLost: r.fractionLost, lost: r.packetsLost, rtt: r.roundTripTime};
    } else if (r.type === 'inbound-rtp' && r.kind === 'video') {
      s.video = {w: r.frameWidth, h: r.frameHeight, fps: r.framesPerSecond,
                 frames: r.framesDecoded, dropped: r.framesDropped, bytes: r.bytesReceived,
                 packets: r.packetsReceived, lost: r.packetsLost, keyframes: r.keyFramesDecoded,
                 freezes: r.freezeCount, freezeS: r.totalFreezesDuration,
                 nacks: r.nackCount, plis: r.pliCount};
    } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      s.audio = {packets: r.packetsReceived, lost: r.packetsLost,
                 concealed: r.concealedSamples, samples: r.totalSamplesReceived};
    } else if (r.type === 'transport' && r.selectedCandidatePairId) {
      const pair = report.get(r.selectedCandidatePairId);
      const local = pair && report.get(pair.localCandidateId);
      s.pair = pair && {rtt: pair.currentRoundTripTime,
                        available: pair.availableOutgoingBitrate,
                        local: local && local.candidateType,
                        relayProtocol: local && local.relayProtocol};
    }
  });
  return s;
};
window.__jisrMonitor = setInterval(async () => {
  window.__jisrTest.samples.push(await window.__jisrSample());
}, 200);
"""

SAMPLE_NOW_JS = (
    "const done = arguments[arguments.length - 1];"
    "window.__jisrSample().then(done, (e) => done({error: String(e)}));"
)


def _post(base: str, path: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        base + path, data=json.dumps(body or {}).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _join(driver, server, token: str, session_id: str, config: dict) -> None:
    driver.get(f"{server.base}/index.html")
    result = driver.execute_async_script(JOIN_JS, server.base, token, session_id, config)
    assert result == "ok", result
    driver.execute_script(SAMPLE_JS)


def _at(samples: list[dict], t: float) -> dict:
    """The last sample taken at or before ``t`` (the first one if none)."""
    best = samples[0]
    for sample in samples:
        if sample["t"] > t:
            break
        best = sample
    return best


def _get(sample: dict, *keys, default=0):
    value = sample
    for key in keys:
        value = (value or {}).get(key)
    return default if value is None else value


def _longest_freeze(samples: list[dict], start: float, end: float) -> float:
    """Longest time in [start, end] during which framesDecoded did not advance."""
    longest, since, frames = 0.0, start, None
    for sample in samples:
        if sample["t"] < start:
            frames = _get(sample, "video", "frames")
            continue
        if sample["t"] > end:
            break
        now = _get(sample, "video", "frames")
        if frames is None or now > frames:
            since = sample["t"]
        frames = now
        longest = max(longest, sample["t"] - since)
    return longest


def _audio_rates(samples: list[dict], start: float, end: float) -> list[float]:
    """Audio packets received per second in each AUDIO_WINDOW_S window, sliding by 1 s."""
    rates = []
    t = start
    while t + AUDIO_WINDOW_S <= end + 1e-6:
        a, b = _at(samples, t), _at(samples, t + AUDIO_WINDOW_S)
        span = b["t"] - a["t"]
        rates.append((_get(b, "audio", "packets") - _get(a, "audio", "packets")) / (span or 1))
        t += 1
    return rates


def _table(pub: list[dict], sub: list[dict], start_pub: float, start_sub: float) -> str:
    head = (
        "| t (s) | sent res | sent fps | target kbit/s | limited by | recv res | recv fps "
        "| recv kbit/s | loss Jisr reports % | lost at clean side % | longest freeze (s) "
        "| audio pkt/s clean / impaired | RTT ms |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for t0 in range(0, MEASURE_S, ROW_S):
        t1 = t0 + ROW_S
        p0, p1 = _at(pub, start_pub + t0), _at(pub, start_pub + t1)
        s0, s1 = _at(sub, start_sub + t0), _at(sub, start_sub + t1)
        span = (s1["t"] - s0["t"]) or 1
        frames = _get(s1, "video", "frames") - _get(s0, "video", "frames")
        kbits = (_get(s1, "video", "bytes") - _get(s0, "video", "bytes")) * 8 / span / 1000
        expected = (_get(s1, "video", "packets") + _get(s1, "video", "lost")) - (
            _get(s0, "video", "packets") + _get(s0, "video", "lost")
        )
        lost = _get(s1, "video", "lost") - _get(s0, "video", "lost")
        # Late (retransmitted) packets lower packetsLost again: never below zero.
        loss = max(0.0, 100 * lost / expected) if expected > 0 else 0.0
        reported = 100 * _get(p1, "remote", "fractionLost")
        audio_clean = (_get(s1, "audio", "packets") - _get(s0, "audio", "packets")) / span
        pspan = (p1["t"] - p0["t"]) or 1
        audio_imp = (_get(p1, "audio", "packets") - _get(p0, "audio", "packets")) / pspan
        rtt = _get(p1, "pair", "rtt", default=None)
        lines.append(
            f"| {t0}–{t1} | {_get(p1, 'out', 'w')}x{_get(p1, 'out', 'h')} "
            f"| {_get(p1, 'out', 'fps'):.0f} | {_get(p1, 'out', 'target') / 1000:.0f} "
            f"| {_get(p1, 'out', 'limit', default='?')} "
            f"| {_get(s1, 'video', 'w')}x{_get(s1, 'video', 'h')} | {frames / span:.1f} "
            f"| {kbits:.0f} | {reported:.1f} | {loss:.1f} "
            f"| {_longest_freeze(sub, start_sub + t0, start_sub + t1):.2f} "
            f"| {audio_clean:.0f} / {audio_imp:.0f} "
            f"| {'?' if rtt is None else f'{rtt * 1000:.0f}'} |"
        )
    return "\n".join(lines)


def test_call_holds_through_an_impaired_link(jisr_server, browsers, tmp_path, record_property):
    missing = missing_tools()
    if missing:
        pytest.fail(
            "the impaired-network test needs these tools, which are missing: "
            + ", ".join(missing)
            + " (apt-get install -y --no-install-recommends iproute2 nftables util-linux coturn)"
        )
    server, tokens = jisr_server, jisr_server.tokens
    deadline = time.monotonic() + 85  # the whole test, whatever happens

    consult = _post(server.base, "/api/consults", tokens.referrer, {
        "specialty": "cardiology", "urgency": "critical", "summary": "ECG over a bad link",
        "patient_ref": "P-LOSSY",
    })  # fmt: skip
    session_id = _post(server.base, f"/api/consults/{consult['id']}/accept", tokens.specialist)[
        "session"
    ]["id"]

    with (
        coturn() as turn,
        ImpairedUdpPath(
            turn.port, rate=RATE, loss_percent=LOSS_PERCENT, delay_ms=DELAY_MS,
            log_path=tmp_path / "netem.log",
        ) as path,
    ):  # fmt: skip
        relay = ice_servers([turn.url], turn.secret, "dr-amal", 600, time.time())
        relay[0]["urls"] = [f"turn:127.0.0.1:{path.port}?transport=udp"]  # via the bad link
        impaired = browsers("--use-fake-device-for-media-stream=fps=30")
        clean = browsers("--use-fake-device-for-media-stream=fps=30")

        def diagnosis() -> str:
            try:
                errors = impaired.execute_script("return (window.__jisrTest || {}).errors")
            except WebDriverException as exc:
                errors = f"(unavailable: {exc.msg})"
            server_log = Path(server.log_path).read_text(errors="replace")[-1500:]
            return (
                f"ICE errors on the impaired side: {errors}\nlink: {path.stats()}\n"
                f"coturn log: {turn.log()[-1500:]}\nserver log: {server_log}"
            )

        for driver, token, config in (
            (impaired, tokens.referrer, {"iceServers": relay, "iceTransportPolicy": "relay"}),
            (clean, tokens.specialist, {"iceServers": []}),
        ):
            try:
                _join(driver, server, token, session_id, config)
            except (AssertionError, WebDriverException) as exc:
                side = "impaired" if driver is impaired else "clean"
                raise AssertionError(
                    f"the {side} side could not join: {exc}\n{diagnosis()}"
                ) from None

        def first_frames() -> tuple[dict, dict] | None:
            pub = impaired.execute_async_script(SAMPLE_NOW_JS)
            sub = clean.execute_async_script(SAMPLE_NOW_JS)
            if (
                pub.get("state") == "connected"
                and sub.get("state") == "connected"
                and _get(sub, "video", "frames") > 0
                and _get(pub, "video", "frames") > 0
            ):
                return pub, sub
            return None

        try:
            pub, sub = wait_until(first_frames, 20, "both connected and decoding video")
        except (AssertionError, WebDriverException) as exc:
            raise AssertionError(f"{exc}\n{diagnosis()}") from None
        start_pub, start_sub = pub["t"], sub["t"]
        print(f"\nconnected and decoding; impaired side's pair: {pub.get('pair')}")
        assert _get(pub, "pair", "local", default=None) == "relay", pub
        assert _get(pub, "pair", "relayProtocol", default=None) == "udp", pub

        end = time.monotonic() + MEASURE_S + 0.5
        while time.monotonic() < end:
            assert time.monotonic() < deadline, "test ran out of time"
            time.sleep(1)
            for driver in (impaired, clean):
                state = driver.execute_script("return window.__jisrTest.pc.connectionState")
                side = "impaired" if driver is impaired else "clean"
                assert state == "connected", f"the {side} side's connection went to {state}"
        pub_samples = impaired.execute_script("return window.__jisrTest.samples")
        sub_samples = clean.execute_script("return window.__jisrTest.samples")
        link = path.stats()

    table = _table(pub_samples, sub_samples, start_pub, start_sub)
    judged_from, until = start_sub + MEASURE_S - JUDGED_S, start_sub + MEASURE_S
    first, last = _at(sub_samples, judged_from), _at(sub_samples, until)
    fps = (_get(last, "video", "frames") - _get(first, "video", "frames")) / (
        (last["t"] - first["t"]) or 1
    )
    longest_freeze = _longest_freeze(sub_samples, start_sub, until)
    audio_clean = _audio_rates(sub_samples, start_sub, until)
    audio_impaired = _audio_rates(pub_samples, start_pub, start_pub + MEASURE_S)
    end_pub, end_sub = _at(pub_samples, start_pub + MEASURE_S), last

    def share(counts: dict) -> str:
        total = counts.get("random_drops", 0) + counts.get("passed", 0)
        return (
            f"{counts.get('random_drops', '?')} of {total} dropped at random "
            f"({100 * counts.get('random_drops', 0) / (total or 1):.1f} %), "
            f"{counts.get('tbf_drops', '?')} dropped by tbf"
        )

    summary = "\n".join([
        f"link: {path.description}",
        f"uplink (impaired -> Jisr): {share(link.get('up', {}))}",
        f"downlink (Jisr -> impaired): {share(link.get('down', {}))}",
        f"clean side, last {JUDGED_S} s: {fps:.1f} frames decoded per second; longest freeze "
        f"{longest_freeze:.2f} s over {MEASURE_S} s; Chromium freezeCount "
        f"{_get(end_sub, 'video', 'freezes')} ({_get(end_sub, 'video', 'freezeS'):.1f} s); "
        f"keyframes decoded {_get(end_sub, 'video', 'keyframes')}; "
        f"NACKs sent {_get(end_sub, 'video', 'nacks')}, "
        f"PLIs sent {_get(end_sub, 'video', 'plis')}; "
        f"packets lost {_get(end_sub, 'video', 'lost')} of "
        f"{_get(end_sub, 'video', 'packets') + _get(end_sub, 'video', 'lost')}",
        f"impaired publisher: encoding {_get(end_pub, 'out', 'layers', default='?')}, "
        f"NACKs received {_get(end_pub, 'out', 'nacks')}, PLIs received "
        f"{_get(end_pub, 'out', 'plis')}, retransmitted {_get(end_pub, 'out', 'retx')} packets; "
        f"loss Jisr reports {_get(end_pub, 'remote', 'fractionLost'):.3f}; "
        f"received video from the clean side {_get(end_pub, 'video', 'w')}x"
        f"{_get(end_pub, 'video', 'h')}",
        f"audio packets/s, lowest {AUDIO_WINDOW_S} s window: clean side {min(audio_clean):.0f}, "
        f"impaired side {min(audio_impaired):.0f}",
    ])  # fmt: skip
    print("\n" + table + "\n\n" + summary)
    record_property("clean_side_fps_last_20s", round(fps, 1))
    record_property("longest_freeze_s", round(longest_freeze, 2))

    problems = []
    if min(audio_clean) < MIN_AUDIO_PPS or min(audio_impaired) < MIN_AUDIO_PPS:
        problems.append(
            f"audio not steady: packets received per second over each {AUDIO_WINDOW_S} s "
            f"window, clean side "
            f"{[round(r) for r in audio_clean]}, impaired side {[round(r) for r in audio_impaired]}"
        )
    if fps < MIN_FPS:
        problems.append(
            f"video at the clean side averaged {fps:.1f} fps over the last {JUDGED_S} s "
            f"(needs >= {MIN_FPS})"
        )
    if longest_freeze > MAX_FREEZE_S:
        problems.append(
            f"video froze for {longest_freeze:.2f} s (framesDecoded did not advance; "
            f"allowed {MAX_FREEZE_S} s)"
        )
    assert not problems, "\n".join(problems) + "\n\n" + table + "\n\n" + summary
