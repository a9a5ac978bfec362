"""Malformed packets the fuzz tests found raising out of the datagram callback: each
is now dropped where it is parsed (regressions, one per crash)."""

from __future__ import annotations

import asyncio
import socket
import struct

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters
from aiortc.rtcdtlstransport import State

from media.aiortc_internals import Negotiated, Tap, keep_codecs_off, restrict_host_addresses
from media.codecs import codecs_of
from media.inbound import InStream
from media.leg import Leg
from media.outbound import OutStream
from media.rtp import PSFB_PLI, RTPFB_NACK, build_nack, parse_nack, parse_rtcp

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
RTX = RTCRtpCodecParameters(
    mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96}
)


class FakeTap:
    ready = True

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        (self.rtcp if rtcp else self.rtp).append(packet)
        return True


def leg(peer_id: str) -> Leg:
    result = Leg(peer_id, None)
    result.tap = FakeTap()
    return result


def setup():
    publisher, subscriber = leg("pub"), leg("sub")
    agreed = Negotiated("1", "video", [VP8, RTX], {}, send_ssrc=5, send_rtx_ssrc=6)
    source = InStream(publisher, "referrer", "video", 1000, codecs_of(agreed), 5, {})
    publisher.inbound[1000] = source
    publisher.retransmissions[1001] = source
    out = OutStream(subscriber, "referrer", Negotiated("1", "video", [VP8, RTX], {}, 7000, 7001))
    subscriber.outbound[7000] = out
    out.bind(source, now=0.0)
    return publisher, subscriber, source, out


def vp8(seq: int, ts: int, *, key: bool = False, ssrc: int = 1000, pt: int = 96,
        tid: int = 0, tl0: int = 0, marker: bool = True) -> bytes:  # fmt: skip
    """A whole VP8 frame in one packet, its descriptor marking temporal layers."""
    descriptor = bytes([0x90, 0x60, tl0, tid << 6])  # X, S; L, T: TL0PICIDX, TID
    payload = descriptor + (b"\x10\x02\x00\x9d\x01\x2a" if key else b"\x31\x02\x00") + b"x" * 20
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


def truncated_extension(packet: bytes) -> bytes:
    """The X bit set, and the extension header cut off after two bytes."""
    return bytes([packet[0] | 0x10]) + packet[1:12] + b"\xbe\xde"


def test_packets_shorter_than_an_rtp_header_are_dropped():
    publisher, subscriber, source, _ = setup()
    for size in range(12):
        publisher.on_rtp(bytes([0x80, 96]) + bytes(max(0, size - 2)))
    assert source.received == 0 and subscriber.tap.rtp == []


def test_a_retransmission_with_a_truncated_extension_is_dropped():
    publisher, subscriber, source, _ = setup()
    publisher.on_rtp(vp8(1, 0, key=True))
    publisher.on_rtp(vp8(3, 6000))  # 2 is missing: asked for
    assert 2 in source.missing
    publisher.on_rtp(truncated_extension(vp8(50, 3000, ssrc=1001, pt=97)))
    assert 2 in source.missing and source.repaired == 0


def test_the_keyframe_gate_drops_a_packet_with_a_truncated_extension():
    publisher, subscriber, source, out = setup()
    publisher.tap.rtcp.clear()
    source.keyframe_asked_at = float("-inf")
    publisher.on_rtp(truncated_extension(vp8(1, 0, key=True)))
    assert out.waiting_keyframe and subscriber.tap.rtp == []
    [pli] = parse_rtcp(publisher.tap.rtcp[-1])
    assert pli.fmt == PSFB_PLI  # still waiting: a keyframe is asked for
    publisher.on_rtp(vp8(2, 3000, key=True))
    assert not out.waiting_keyframe and len(subscriber.tap.rtp) == 1


def test_a_gap_before_a_packet_with_a_truncated_extension_is_nacked():
    """Whether the lost packets only held upper temporal layers cannot be read from
    a header cut short: they are asked for, as any loss."""
    publisher, _, source, _ = setup()
    publisher.on_rtp(vp8(1, 0, key=True, tid=0, tl0=1))
    publisher.tap.rtcp.clear()
    publisher.on_rtp(truncated_extension(vp8(4, 9000, tid=2, tl0=1)))
    assert set(source.missing) == {2, 3} and not source.spare
    nacks = [p for p in publisher.tap.rtcp if parse_rtcp(p)[0].fmt == RTPFB_NACK]
    assert parse_nack(nacks[-1]) == [2, 3]


def test_a_nack_is_answered_past_a_packet_that_cannot_be_wrapped():
    """A publisher's packet with a wrong padding count is forwarded as it came; asked
    for again, it cannot be wrapped in RTX, but the others in the NACK still are."""
    publisher, subscriber, _, out = setup()
    good = vp8(1, 0, key=True)
    bad = bytes([good[0] | 0x20]) + vp8(2, 3000)[1:-1] + b"\xff"  # padding: 255 bytes
    for packet in (good, bad, vp8(3, 6000)):
        publisher.on_rtp(packet)
    sent = [struct.unpack_from("!H", p, 2)[0] for p in subscriber.tap.rtp]
    assert len(sent) == 3
    subscriber.on_rtcp(build_nack(9, 7000, sent))
    rtx = subscriber.tap.rtp[3:]
    assert [struct.unpack_from("!I", p, 8)[0] for p in rtx] == [7001, 7001]
    assert [struct.unpack_from("!H", p, 12)[0] for p in rtx] == [sent[0], sent[2]]


async def test_an_empty_datagram_leaves_the_transport_working():
    """aioice hands an empty UDP datagram (which anyone can send to the port) to the
    tap: it must neither raise out of the datagram callback nor go on to aiortc, whose
    DTLS loop would die reading its first byte, closing the transport."""
    loop = asyncio.get_running_loop()
    escaped: list[dict] = []
    loop.set_exception_handler(lambda _, context: escaped.append(context))
    restrict_host_addresses(["127.0.0.1"])
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        a.addTransceiver("video", direction="sendrecv")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        for transceiver in a.getTransceivers() + b.getTransceivers():
            keep_codecs_off(transceiver)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        got: asyncio.Queue = asyncio.Queue()
        tap_a = Tap(a, lambda p: None, lambda p: None)
        tap_b = Tap(b, got.put_nowait, lambda p: None)

        async def until_ready() -> None:
            while not (tap_a.ready and tap_b.ready):
                await asyncio.sleep(0.01)  # polling the transport's state, bounded below

        await asyncio.wait_for(until_ready(), 10)
        [local] = b.getTransceivers()[
            0
        ].receiver.transport.transport.iceGatherer.getLocalCandidates()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"", (local.ip, local.port))
            packet = bytes([0x80, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 42]) + b"after"
            for _ in range(50):  # the empty datagram first, then media, both on loopback
                assert tap_a.send(packet)
                if not got.empty():
                    break
                await asyncio.sleep(0.02)  # pacing the sends, bounded above
        assert await asyncio.wait_for(got.get(), 5) == packet
        assert b.getTransceivers()[0].receiver.transport._state == State.CONNECTED
        assert escaped == []
    finally:
        loop.set_exception_handler(None)
        await a.close()
        await b.close()
        restrict_host_addresses([])
