"""The interface the recorder subscribes through: packets of one published stream,
its codecs, the publisher's clock on the subscriber's timestamps, keyframe requests."""

from __future__ import annotations

import struct

from aiortc import RTCRtpCodecParameters

from media import InternalSubscription, MediaNode, SenderClock
from media.aiortc_internals import Negotiated
from media.codecs import codecs_of
from media.inbound import InStream
from media.leg import Leg
from media.rtp import PSFB_PLI, build_sr, ntp_time, parse_rtcp, rtp_seq_ts

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


class FakeTap:
    ready = True

    def __init__(self) -> None:
        self.rtcp: list[bytes] = []

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        if rtcp:
            self.rtcp.append(packet)
        return True


def publisher() -> tuple[Leg, InStream]:
    leg = Leg("pub", "referrer")
    leg.tap = FakeTap()
    negotiated = Negotiated("1", "video", [VP8], {}, send_ssrc=5, send_rtx_ssrc=6)
    stream = InStream(leg, "referrer", "video", 1000, codecs_of(negotiated), 5, {}, "video")
    leg.inbound[1000] = stream
    return leg, stream


def keyframe(seq: int, ts: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x80 | 96, seq, ts, 1000) + b"\x10\x00" + b"k" * 20


def test_a_subscription_follows_its_publisher_and_maps_its_clock():
    node = MediaNode()
    got: list[bytes] = []
    sub: InternalSubscription = node.add_sink("s_1", "referrer", "video", got.append)
    assert not sub.publishing and sub.codec(96) is None and sub.sender_clock() is None
    sub.request_keyframe(urgent=True)  # nobody to ask yet: nothing happens

    leg, stream = publisher()
    node._rooms["s_1"].publish(stream, now=0.0)
    assert sub.publishing
    assert (sub.codec(96).name, sub.codec(96).clock_rate) == ("VP8", 90000)
    assert sub.codec(111) is None

    stream.on_packet(keyframe(1, 90_000), now=0.1)
    assert len(got) == 1
    _, delivered_ts = rtp_seq_ts(got[0])
    assert sub.sender_clock() is None  # no sender report yet
    leg.on_rtcp(build_sr(1000, ntp_time(1_700_000_000.5), 90_000 + 4500, 1, 30))
    clock = sub.sender_clock()
    assert clock == SenderClock(1_700_000_000.5, (delivered_ts + 4500) & 0xFFFFFFFF)

    leg.tap.rtcp.clear()
    sub.request_keyframe(urgent=True)
    assert [i.fmt for p in leg.tap.rtcp for i in parse_rtcp(p)] == [PSFB_PLI]

    sub.close()
    assert not sub.publishing and node.stats()["sessions"] == 0
    stream.on_packet(keyframe(2, 93_000), now=0.2)
    assert len(got) == 1  # detached: nothing more arrives
