"""Simulcast through the server with real peers over loopback: a publisher sending
three layers as a browser does (tests.support.simulcast), an aiortc subscriber that
decodes every frame, and its tile size moving it down a layer and back up."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from media.rtp import payload_offset, vp8_descriptor_size, vp8_keyframe_size
from signaling.keys import MEDIA
from tests.integration.test_forwarding import call, node  # noqa: F401 - fixtures
from tests.support.peers import JisrClient
from tests.support.simulcast import SimulcastPublisher, expected_mean

SIZES = [(80, 48), (160, 96), (320, 192)]


class Subscriber:
    """What one aiortc subscriber received: every decoded frame's size and mean colour,
    and the VP8 packets as they arrived (seq, timestamp, start of frame, PictureID,
    TL0PICIDX)."""

    def __init__(self, client: JisrClient) -> None:
        self.frames: list[tuple[float, int, int, np.ndarray]] = []
        self.packets: list[tuple[int, int, bool, int, int]] = []
        client.on_frame = self.on_frame
        receiver = next(t.receiver for t in client.pc.getTransceivers() if t.kind == "video")
        original = receiver._handle_rtp_packet  # the packets as they come off SRTP

        async def record(packet, arrival_time_ms):
            payload = packet.payload
            if packet.payload_type < 100 and len(payload) > 5 and payload[1] & 0x80:
                pid = ((payload[2] & 0x7F) << 8) | payload[3]
                self.packets.append(
                    (packet.sequence_number, packet.timestamp, bool(payload[0] & 0x10), pid,
                     payload[4])
                )  # fmt: skip
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = record

    def on_frame(self, kind: str, frame) -> None:
        if kind == "video":
            image = frame.to_ndarray(format="rgb24")
            mean = image.reshape(-1, 3).mean(axis=0)
            self.frames.append((time.monotonic(), frame.width, frame.height, mean))

    async def wait_size(self, size: tuple[int, int], timeout: float) -> float:
        """Seconds until frames of ``size`` arrive (and keep arriving)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            recent = [(w, h) for t, w, h, _ in self.frames if t > time.monotonic() - 0.5]
            if len(recent) >= 5 and set(recent) == {size}:
                return time.monotonic() - start
            await asyncio.sleep(0.1)  # polling a condition, bounded by the timeout
        sizes = {(w, h) for _, w, h, _ in self.frames[-30:]}
        raise AssertionError(f"no steady {size} within {timeout} s; lately {sizes}")


def keyframe_size(packet: bytes) -> tuple[int, int] | None:
    payload = packet[payload_offset(packet) :]
    if not payload or not payload[0] & 0x10:  # not the start of a frame
        return None
    return vp8_keyframe_size(payload[vp8_descriptor_size(payload) :])


class DecodeErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.count += 1


@pytest.fixture
def decode_errors():
    handler = DecodeErrors()
    logger = logging.getLogger("aiortc.rtcrtpreceiver")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def assert_continuous(packets: list[tuple[int, int, bool, int, int]]) -> None:
    """One stream with no jump: every seq from first to last, timestamps never going
    back, and each frame's PictureID and TL0PICIDX one past the previous frame's
    (every frame of this publisher is a base-layer frame)."""
    seqs = [p[0] for p in packets]
    base = seqs[0]
    unwrapped = sorted({(s - base) & 0xFFFF for s in seqs})
    assert unwrapped == list(range(unwrapped[-1] + 1)), "a hole in the sequence numbers"
    ordered = sorted(set(packets), key=lambda p: (p[0] - base) & 0xFFFF)
    stamps = [p[1] for p in ordered]
    steps = [(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(step < 1 << 31 for step in steps), "a timestamp went back"
    frames = [p for p in ordered if p[2]]
    for before, after in zip(frames, frames[1:], strict=False):
        assert (after[3] - before[3]) & 0x7FFF == 1, f"PictureID {before[3]} -> {after[3]}"
        assert (after[4] - before[4]) & 0xFF == 1, f"TL0PICIDX {before[4]} -> {after[4]}"


async def test_layers_switch_down_and_up_with_every_frame_decodable(node, call, decode_errors):  # noqa: F811
    app, _ = node
    referrer = JisrClient(call.http, call.base, call.tokens.referrer)
    call.clients.append(referrer)
    await referrer.connect()
    await referrer.join(call.session_id)
    publisher = SimulcastPublisher(referrer, SIZES)
    sink = None
    try:
        reply = await publisher.start()
        assert reply["type"] == "answer", reply
        assert "a=simulcast:recv q;h;f" in publisher.answer
        specialist = await call.join(call.tokens.specialist, publish=True)
        subscriber = Subscriber(specialist)
        # Generous bounds: the publisher encodes live in this process, which a busy
        # machine stalls now and then; what is checked is the stream, not the speed.
        await subscriber.wait_size(SIZES[2], 30)  # nothing limits it: the largest
        recorded: list[bytes] = []  # the recorder subscribes as an internal sink
        sink = app[MEDIA].add_sink(call.session_id, "referrer", "video", recorded.append)

        # The tile shrinks: the smallest layer that fills it, at its next keyframe.
        view = {"type": "view", "slot": "referrer", "role": "video", "height": 48}
        await specialist.send(view)
        took_down = await subscriber.wait_size(SIZES[0], 20)
        # The tile grows again: back up, a step at a time.
        await specialist.send({**view, "height": 0})
        took_up = await subscriber.wait_size(SIZES[2], 45)
        switched_at = len(subscriber.packets)
        await asyncio.sleep(1.0)  # a second more of the largest layer, to check the tail
        assert len(subscriber.packets) > switched_at
    finally:
        if sink is not None:
            sink.close()
        await publisher.close()

    assert decode_errors.count == 0
    # The recorder took the largest layer: every keyframe it got is of that size.
    sizes = [size for packet in recorded if (size := keyframe_size(packet))]
    assert sizes and set(sizes) == {SIZES[2]}, sizes
    sizes_seen = {(w, h) for _, w, h, _ in subscriber.frames}
    assert {SIZES[0], SIZES[2]} <= sizes_seen, sizes_seen
    for _, width, height, mean in subscriber.frames:
        layer = SIZES.index((width, height))
        assert np.abs(mean - expected_mean(layer)).max() < 12, (width, height, mean)
    assert_continuous(subscriber.packets)
    # The server reports on every layer, asked the smallest and the largest for a
    # keyframe when the subscriber moved to them, and learned each layer's RTX stream.
    assert {layer.ssrc for layer in publisher.layers} <= publisher.reported
    assert publisher.layers[0].plis >= 1 and publisher.layers[2].plis >= 1
    legs = [peer.leg for peer in app[MEDIA]._peers.values() if peer.leg.rids]
    assert len(legs) == 1 and len(legs[0].retransmissions) == 3
    print(f"down {took_down:.1f} s, up {took_up:.1f} s, {len(subscriber.frames)} frames decoded")


async def test_view_reports_are_checked(node, call):  # noqa: F811
    observer = JisrClient(call.http, call.base, call.tokens.supervisor)
    call.clients.append(observer)
    await observer.connect()
    view = {"type": "view", "slot": "referrer", "role": "video", "height": 360}
    assert (await observer.request(view))["code"] == "not_joined"
    await observer.join(call.session_id)
    assert (await observer.request(view))["code"] == "no_such_stream"  # no offer yet
    await observer.start_media(publish=False, receive_pairs=2)
    ref = await observer.send(view)
    await observer.send({"type": "ping", "ref": "after"})
    reply = await observer.expect(lambda m: m.get("ref") in (ref, "after"))
    assert reply["type"] == "pong"  # the view was taken without a reply
    for bad in ({"height": -1}, {"height": 5000}, {"slot": "observer"}, {"role": "audio"}):
        reply = await observer.request({**view, **bad})
        assert (reply["type"], reply["code"]) == ("error", "bad_request"), bad
    assert (await observer.request({**view, "role": "screen"}))["code"] == "no_such_stream"
