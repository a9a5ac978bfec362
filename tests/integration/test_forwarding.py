"""RTP-level forwarding through the server with real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiohttp import ClientSession

from media.aiortc_internals import codecs_started
from media.leg import PUBLISHER_STALL_SECONDS
from signaling.app import create_app
from signaling.keys import MEDIA
from signaling.store import MemoryStore
from tests.integration.test_media_relay import start_consult
from tests.support.peers import JisrClient, PatternVideoTrack

WIDTH, HEIGHT, FPS = 320, 240, 30


@pytest.fixture
async def node(aiohttp_server, settings):
    app = create_app(settings, store=MemoryStore())
    server = await aiohttp_server(app)
    return app, str(server.make_url("")).rstrip("/")


class Call:
    """A consult with a publishing referrer and whoever else the test adds."""

    def __init__(self, http: ClientSession, base: str, tokens) -> None:
        self.http, self.base, self.tokens = http, base, tokens
        self.clients: list[JisrClient] = []
        self.session_id = ""

    async def start(self) -> None:
        self.session_id = await start_consult(self.http, self.base, self.tokens)

    async def join(self, token: str, **media) -> JisrClient:
        client = JisrClient(self.http, self.base, token)
        self.clients.append(client)
        await client.connect()
        assert (await client.join(self.session_id))["type"] == "joined"
        reply = await client.start_media(**media)
        assert reply["type"] == "answer", reply
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest.fixture
async def call(node, tokens):
    _, base = node
    async with ClientSession() as http:
        call = Call(http, base, tokens)
        await call.start()
        yield call
        await call.close()


def assert_no_codec_on_server(app) -> None:
    media = app[MEDIA]
    pcs = [media.peer_connection(peer_id) for peer_id in list(media._peers)]
    assert pcs and not any(codecs_started(pc) for pc in pcs)


async def measure(received, seconds: float) -> tuple[float, set]:
    await asyncio.wait_for(received.first.wait(), 15)
    start = time.monotonic() + 0.5
    await asyncio.sleep(seconds + 0.5)  # the measuring window itself
    sizes = {(w, h) for t, w, h in received.frames if t >= start}
    return received.rate(start, start + seconds), sizes


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
async def test_codec_arrives_intact_at_full_rate(node, call, codec):
    app, _ = node
    await call.join(
        call.tokens.referrer, publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS),
        video_codecs=(codec,),
    )  # fmt: skip
    specialist = await call.join(call.tokens.specialist, publish=True)
    [video] = specialist.by_kind("video")
    [audio] = specialist.by_kind("audio")
    rate, sizes = await measure(video, 3.0)
    assert sizes == {(WIDTH, HEIGHT)}
    assert rate >= 0.9 * FPS, rate
    opus_rate = audio.rate(time.monotonic() - 3.0, time.monotonic())
    assert opus_rate >= 0.9 * 50, opus_rate  # 20 ms Opus frames
    metrics = await (await call.http.get(f"{call.base}/metrics")).text()
    assert "jisr_time_to_first_media_seconds_count" in metrics
    answer_codecs = re.findall(r"a=rtpmap:\d+ (\w+)/", specialist.pc.remoteDescription.sdp)
    assert "opus" in answer_codecs
    assert_no_codec_on_server(app)


async def test_late_subscriber_gets_a_picture_within_half_a_second(node, call):
    app, _ = node
    await call.join(call.tokens.referrer, publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS))
    specialist = await call.join(call.tokens.specialist, publish=True)
    await asyncio.wait_for(specialist.by_kind("video")[0].first.wait(), 15)
    await asyncio.sleep(10)  # the observer arrives 10 s into the call, by design
    observer = JisrClient(call.http, call.base, call.tokens.supervisor)
    call.clients.append(observer)
    await observer.connect()
    await observer.join(call.session_id)
    connected = asyncio.Event()
    await observer.start_media(publish=False, receive_pairs=2)

    @observer.pc.on("connectionstatechange")
    def on_state() -> None:
        if observer.pc.connectionState == "connected":
            connected.set()

    if observer.pc.connectionState == "connected":
        connected.set()
    await asyncio.wait_for(connected.wait(), 10)
    at = time.monotonic()
    referrer_video = observer.by_kind("video")[0]
    await asyncio.wait_for(referrer_video.first.wait(), 5)
    delay = referrer_video.frames[0][0] - at
    print(f"late subscriber: first frame {delay * 1000:.0f} ms after connecting")
    assert delay <= 0.5, delay
    assert_no_codec_on_server(app)


async def test_picture_recovers_after_forced_loss(node, call):
    app, _ = node
    referrer = await call.join(
        call.tokens.referrer, publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS)
    )
    specialist = await call.join(call.tokens.specialist, publish=True)
    video = specialist.by_kind("video")[0]
    await asyncio.wait_for(video.first.wait(), 15)

    # Drop the next 25 video packets on the server → specialist leg.
    leg = next(p.leg for p in app[MEDIA]._peers.values() if p.leg.publish == "specialist")
    out = next(o for o in leg.outbound.values() if o.kind == "video")
    original_send = leg.tap._send_other
    dropped = 0

    def lossy_send(packet: bytes, rtcp: bool = False) -> bool:
        nonlocal dropped
        if not rtcp and dropped < 25 and int.from_bytes(packet[8:12], "big") == out.ssrc:
            dropped += 1
            return True  # pretend it left: the network lost it
        sent = original_send(packet, rtcp)
        leg.tap._route = None  # so every packet keeps coming here (see Tap)
        return sent

    # Without a route the tap hands every packet to _send_other, which still sends
    # through the shared socket's transport.
    leg.tap._route = None
    leg.tap._send_other = lossy_send
    before = len(video.frames)
    asked_before = leg.nacks_received + leg.keyframe_requests_received
    deadline = time.monotonic() + 10
    while dropped < 25 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling until the loss burst happened
    assert dropped == 25
    lost_at = time.monotonic()
    rate, sizes = await measure(video, 2.0)
    assert rate >= 0.8 * FPS, rate  # recovered: frames decode again at near full rate
    assert len(video.frames) > before
    assert leg.nacks_received + leg.keyframe_requests_received > asked_before
    assert any(t > lost_at + 0.5 for t, _, _ in video.frames)
    assert referrer.pc.connectionState == "connected"


def _renumber(sdp: str) -> str:
    """The same offer with other payload type numbers and header extension ids."""
    pts = sorted({int(p) for p in re.findall(r"a=rtpmap:(\d+) ", sdp)})
    mapping = {pt: 120 - i for i, pt in enumerate(pts)}

    def pt(match: re.Match) -> str:
        return str(mapping.get(int(match.group(0)), int(match.group(0))))

    lines = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            head, fmts = line.split(" ", 3)[:3], line.split(" ", 3)[3]
            line = " ".join(head + [" ".join(str(mapping.get(int(f), f)) for f in fmts.split())])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            key, rest = line.split(" ", 1) if " " in line else (line, "")
            name, number = key.split(":")
            key = f"{name}:{mapping.get(int(number), number)}"
            rest = re.sub(r"apt=(\d+)", lambda m: f"apt={mapping.get(int(m.group(1)))}", rest)
            line = f"{key} {rest}".rstrip()
        elif line.startswith("a=extmap:"):
            line = re.sub(r"a=extmap:(\d+)", lambda m: f"a=extmap:{int(m.group(1)) + 4}", line)
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


async def test_subscriber_with_other_payload_types_and_extension_ids(node, call):
    await call.join(call.tokens.referrer, publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS))
    specialist = await call.join(call.tokens.specialist, publish=True, munge=_renumber)
    answer = specialist.pc.remoteDescription.sdp
    assert "a=rtpmap:120 " in answer or "a=rtpmap:119 " in answer
    [video] = specialist.by_kind("video")
    rate, sizes = await measure(video, 2.0)
    assert sizes == {(WIDTH, HEIGHT)} and rate >= 0.9 * FPS
    assert len(specialist.by_kind("audio")[0].frames) > 50


async def test_screen_share_is_a_second_video_forwarded_like_the_camera(node, call):
    """Participants offer audio, camera, screen; observers a, v, a, v, then screens."""
    await call.join(
        call.tokens.referrer, publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS),
        screen=PatternVideoTrack(640, 360, 10, shade=255),
    )  # fmt: skip
    specialist = await call.join(call.tokens.specialist, publish=True, screen_slot=True)
    observer = await call.join(
        call.tokens.supervisor, publish=False, receive_pairs=2, screen_slot=True
    )
    camera, screen = specialist.by_kind("video")
    rate, sizes = await measure(screen, 2.0)
    assert sizes == {(640, 360)} and rate >= 0.8 * 10
    assert {(w, h) for _, w, h in camera.frames} == {(WIDTH, HEIGHT)}
    videos = observer.by_kind("video")  # referrer cam, specialist cam, referrer screen, ...
    assert len(videos) == 4
    await asyncio.wait_for(videos[2].first.wait(), 10)
    assert {(w, h) for _, w, h in videos[2].frames} == {(640, 360)}
    assert {(w, h) for _, w, h in videos[0].frames} <= {(WIDTH, HEIGHT)}
    assert_no_codec_on_server(node[0])


async def test_the_servers_own_hold_up_is_no_peers_silence(node, call):
    """The loop that runs the server is held up for longer than a publisher may be
    silent (here the peers share it, as a busy machine's would stall with it): when it
    comes back no path counts as having been down, and nothing is skipped or reset."""
    app, _ = node
    await call.join(call.tokens.referrer, publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS))
    specialist = await call.join(call.tokens.specialist, publish=True)
    video = specialist.by_kind("video")[0]
    await asyncio.wait_for(video.first.wait(), 15)
    legs = [peer.leg for peer in app[MEDIA]._peers.values()]
    assert all(leg.talking for leg in legs)
    asked = sum(leg.keyframe_requests_received for leg in legs)

    time.sleep(PUBLISHER_STALL_SECONDS + 1.0)  # the whole loop held up, deliberately
    resumed = time.monotonic()
    rate, _ = await measure(video, 2.0)

    assert rate >= 0.8 * FPS, rate
    outs = [out for leg in legs for out in leg.outbound.values()]
    assert outs and all(out.resumed_at == float("-inf") for out in outs)
    assert not any(out.waiting_keyframe for out in outs)
    assert any(t > resumed + 0.5 for t, _, _ in video.frames)
    assert sum(leg.keyframe_requests_received for leg in legs) == asked
