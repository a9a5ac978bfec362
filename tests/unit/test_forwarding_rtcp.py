"""The forwarder's RTCP duties, with fake transports: receiver reports and a REMB
ceiling toward publishers, sender reports toward subscribers, PLI/NACK handling."""

from __future__ import annotations

import struct
import time

import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs.vpx import VpxPayloadDescriptor

from media import leg as leg_module
from media.aiortc_internals import Negotiated
from media.bitrate import MIN_BITRATE, RAMP_PER_S, START_BITRATE
from media.codecs import codecs_of
from media.inbound import NACK_TRIES, InStream
from media.leg import PUBLISHER_STALL_SECONDS, STALL_SECONDS, Leg
from media.loopwatch import STALL_GRACE_S, LoopWatch
from media.outbound import RESUME_AFTERMATH_S, RESUME_SEQ_GAP, OutStream
from media.rtp import (
    PSFB_AFB,
    PSFB_PLI,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_SR,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    ntp_middle,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
)

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


def leg(peer_id: str, cap: int = 2_500_000) -> Leg:
    result = Leg(peer_id, None, max_bitrate=cap)
    result.tap = FakeTap()
    return result


def negotiated(ssrc: int) -> Negotiated:
    return Negotiated("1", "video", [VP8, RTX], {}, send_ssrc=ssrc, send_rtx_ssrc=ssrc + 1)


def vp8_packet(seq: int, ts: int, key: bool, ssrc: int = 1000, size: int = 104) -> bytes:
    # descriptor: S=1, PID 0; then the VP8 header whose P bit (0 = key frame)
    payload = bytes([0x10, 0x00 if key else 0x01, 0, 0]) + b"x" * (size - 4)
    return struct.pack("!BBHII", 0x80, 96, seq, ts, ssrc) + payload


def setup():
    publisher, subscriber = leg("pub"), leg("sub", cap=600_000)
    source = InStream(publisher, "referrer", "video", 1000, codecs_of(negotiated(5)), 5, {})
    publisher.inbound[1000] = source
    out = OutStream(subscriber, "referrer", negotiated(7000))
    subscriber.outbound[7000] = out
    out.bind(source, now=0.0)
    return publisher, subscriber, source, out


def test_keyframe_gating_and_pli_on_join():
    publisher, subscriber, source, out = setup()
    assert [i.fmt for i in parse_rtcp(publisher.tap.rtcp[0])] == [PSFB_PLI]
    source.on_packet(vp8_packet(1, 0, key=False), now=0.1)
    assert subscriber.tap.rtp == []  # nothing before a keyframe
    source.on_packet(vp8_packet(2, 3000, key=True), now=0.2)
    source.on_packet(vp8_packet(3, 6000, key=False), now=0.3)
    sent = subscriber.tap.rtp
    assert len(sent) == 2
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in sent]
    assert seqs[1] == (seqs[0] + 1) & 0xFFFF
    assert {struct.unpack_from("!I", p, 8)[0] for p in sent} == {7000}


def out_seqs(tap: FakeTap) -> list[int]:
    return [struct.unpack_from("!H", p, 2)[0] for p in tap.rtp]


def test_a_subscriber_back_from_a_dead_path_resumes_past_a_gap_at_a_keyframe():
    publisher, subscriber, source, out = setup()
    subscriber.heard(0.0)  # it talks: its silence will mean its path is down
    for seq in range(1, 4):
        source.on_packet(vp8_packet(seq, seq * 3000, key=seq == 1), now=seq / 30)
    before = out_seqs(subscriber.tap)
    assert len(before) == 3
    source.on_packet(vp8_packet(4, 12000, key=False), now=20.0)  # it has been silent
    assert len(subscriber.tap.rtp) == 3  # not sent into its dead path
    subscriber.heard(21.0)  # back
    source.on_packet(vp8_packet(5, 15000, key=False), now=21.1)
    source.on_packet(vp8_packet(6, 18000, key=True), now=21.2)
    source.on_packet(vp8_packet(7, 21000, key=False), now=21.3)
    after = out_seqs(subscriber.tap)[3:]
    assert after == [(before[-1] + 1 + RESUME_SEQ_GAP + i) & 0xFFFF for i in range(2)]
    # Its first reports count the outage's loss (and the skipped numbers): not its link's.
    out.on_receiver_report(0.9, now=22.0)
    assert (out.loss, out.loss_estimate) == (0.0, None)
    out.on_receiver_report(0.3, now=21.0 + RESUME_AFTERMATH_S + 0.5)
    assert out.loss == 0.3


def test_silence_counts_only_while_the_loop_was_running_to_hear_it():
    publisher, subscriber, source, out = setup()
    subscriber.watch = watch = LoopWatch()
    subscriber.stall_after = PUBLISHER_STALL_SECONDS  # it publishes: sends continuously
    for at in (0.0, 0.1, 0.2):
        watch.tick(at)
    subscriber.heard(0.2)
    # Held up from 0.2 s to 3.0 s: the first packets read after are from before.
    assert not subscriber.stalled(3.0)
    subscriber.heard(3.0)
    assert subscriber.last_heard == 3.0 and out.resumed_at == float("-inf")
    watch.tick(3.0)  # the late timer, after the sockets were read
    assert not subscriber.stalled(3.1)
    # Now the loop runs and hears nothing: that is the peer's silence.
    at = 3.0
    while at < 3.0 + PUBLISHER_STALL_SECONDS + 0.2:
        at += 0.1
        watch.tick(at)
    assert subscriber.stalled(at)
    # A hold-up during the silence is taken off it, one after it is not counted twice.
    watch.tick(at + 2.0)
    assert subscriber.stalled(at + 2.0)
    assert abs(watch.held(at + 2.0) - (2.0 - STALL_GRACE_S) - (2.8 - STALL_GRACE_S)) < 1e-9


def test_an_unwatched_leg_counts_all_silence():
    assert LoopWatch().held(1e6) == 0.0
    _, subscriber, _, _ = setup()
    subscriber.heard(0.0)
    assert subscriber.stalled(STALL_SECONDS + 0.1)


def test_a_path_that_dies_right_after_connecting_counts_as_down():
    publisher, subscriber, source, out = setup()
    subscriber.inbound[2000] = InStream(subscriber, "specialist", "video", 2000,
                                        codecs_of(negotiated(5)), 5, {})  # fmt: skip
    subscriber.on_connected(time.monotonic())
    subscriber.on_rtp(vp8_packet(1, 0, key=True, ssrc=2000))  # within 0.1 s of it
    assert subscriber.talking
    assert subscriber.stalled(time.monotonic() + PUBLISHER_STALL_SECONDS + 0.1)


def test_after_a_hole_upstream_subscribers_continue_without_one():
    publisher, subscriber, source, out = setup()
    for seq in range(1, 4):
        source.on_packet(vp8_packet(seq, seq * 3000, key=seq == 1), now=seq / 30)
    source.on_packet(vp8_packet(100, 300_000, key=False), now=0.2)  # a burst lost on the way in
    source.on_packet(vp8_packet(101, 303_000, key=True), now=0.3)
    seqs = out_seqs(subscriber.tap)
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]  # from the keyframe, no gap


def test_reports_and_remb_ceiling_from_the_weakest_subscriber():
    publisher, subscriber, source, out = setup()
    for seq in range(1, 11):
        if seq != 5:  # one packet lost on the way in
            source.on_packet(vp8_packet(seq, seq * 3000, key=seq == 1), now=seq / 30)
    subscriber.on_rtcp(build_remb(9, 800_000, [7000]))
    assert out.remb == 800_000
    publisher.tap.rtcp.clear()
    publisher.send_reports(now=10.0, wall=1_700_000_000.0)  # past the start-up ramp
    [compound] = publisher.tap.rtcp
    items = parse_rtcp(compound)
    rr = next(i for i in items if i.packet_type == RTCP_RR)
    [block] = parse_report_blocks(compound[rr.offset : rr.offset + rr.length])
    assert (block.ssrc, block.packets_lost, block.highest_sequence & 0xFFFF) == (1000, 1, 10)
    assert block.fraction_lost == (1 << 8) // 10
    remb = next(i for i in items if i.packet_type == RTCP_PSFB and i.fmt == PSFB_AFB)
    bitrate, ssrcs = parse_remb(compound[remb.offset : remb.offset + remb.length])
    assert ssrcs == [1000]
    assert abs(bitrate - 600_000) < 600_000 * 0.01  # the subscriber facility's cap wins

    subscriber.send_reports(now=1.0, wall=1_700_000_000.0)
    [sr_packet] = subscriber.tap.rtcp
    sr = parse_sr(sr_packet)
    assert (sr.ssrc, sr.packet_count) == (7000, 9)
    assert sr.octet_count == sum(len(p) - 12 for p in subscriber.tap.rtp)


def test_subscriber_pli_reaches_publisher_rate_limited_and_nack_answered_with_rtx():
    publisher, subscriber, source, out = setup()
    source.on_packet(vp8_packet(1, 0, key=True), now=0.0)
    source.on_packet(vp8_packet(2, 3000, key=False), now=0.03)
    publisher.tap.rtcp.clear()
    subscriber.on_rtcp(build_pli(9, 7000))
    subscriber.on_rtcp(build_pli(9, 7000))  # within 0.5 s: not forwarded again
    plis = [i for p in publisher.tap.rtcp for i in parse_rtcp(p) if i.packet_type == RTCP_PSFB]
    assert [(i.fmt, i.media_ssrc) for i in plis] == [(PSFB_PLI, 1000)]

    first_seq = struct.unpack_from("!H", subscriber.tap.rtp[0], 2)[0]
    subscriber.on_rtcp(build_nack(9, 7000, [first_seq]))
    retransmitted = subscriber.tap.rtp[-1]
    assert retransmitted[1] & 0x7F == 97  # RTX payload type
    assert struct.unpack_from("!I", retransmitted, 8)[0] == 7001  # RTX SSRC
    assert struct.unpack_from("!H", retransmitted, 12)[0] == first_seq  # original seq
    assert subscriber.nacks_received == 1


def test_a_nacked_packet_is_resent_once_a_round_trip_and_counted_as_sent():
    publisher, subscriber, source, out = setup()
    source.on_packet(vp8_packet(1, 0, key=True), now=0.0)
    [first] = subscriber.tap.rtp
    subscriber.send_reports(now=time.monotonic() - 0.3, wall=time.time())  # sent 0.3 s ago
    sr = parse_sr(subscriber.tap.rtcp[-1])
    held = int(0.05 * 65536)  # the subscriber held our report 50 ms before echoing it
    subscriber.on_rtcp(build_rr(9, 7000, 0, 0, 1, 0, ntp_middle(sr.ntp_timestamp), held))
    assert out.rtt == pytest.approx(0.25, abs=0.05)
    rtt = out.rtt
    subscriber.on_rtcp(build_rr(9, 7000, 0, 0, 1, 0, 12345, held))  # not a report of ours
    assert out.rtt == rtt
    late = 65536 * 5  # held longer than since we sent it: a clock gone wrong, not < 0
    subscriber.on_rtcp(build_rr(9, 7000, 0, 0, 1, 0, ntp_middle(sr.ntp_timestamp), late))
    assert out.rtt == 0.0
    out.rtt = rtt

    seq = struct.unpack_from("!H", first, 2)[0]
    out.measure_sent(1.0)
    subscriber.on_rtcp(build_nack(9, 7000, [seq]))
    subscriber.on_rtcp(build_nack(9, 7000, [seq]))  # asked again before the copy arrived
    assert len(subscriber.tap.rtp) == 2 and subscriber.nacks_received == 2
    assert out.rtx_octets == len(subscriber.tap.rtp[1])
    out.retransmit([seq], now=time.monotonic() + out.rtt)  # a round trip on, it may go again
    assert len(subscriber.tap.rtp) == 3
    assert out.measure_sent(2.0) == 8 * out.rtx_octets  # what was sent since 1.0: resent


def test_retransmissions_take_at_most_their_share_of_the_estimate():
    publisher, subscriber, source, out = setup()
    for seq in range(1, 41):
        source.on_packet(vp8_packet(seq, seq * 3000, key=seq == 1), now=seq * 0.01)
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in subscriber.tap.rtp]
    out.remb = 20_000  # bits/s: retransmissions may take a quarter, 625 bytes/s
    out.retransmit(seqs, now=1.0)  # at once: a second's share
    resent = subscriber.tap.rtp[40:]
    assert 5 <= len(resent) <= 6 and out.rtx_octets <= 625 + len(resent[0])
    out.retransmit(seqs[len(resent) :], now=2.0)  # a second on: as much again
    again = subscriber.tap.rtp[40 + len(resent) :]
    assert 5 <= len(again) <= 6
    assert struct.unpack_from("!H", again[0], 12)[0] == seqs[len(resent)]


def test_malformed_rtcp_is_ignored():
    publisher, subscriber, source, out = setup()
    subscriber.on_rtcp(b"\x81\xcd\x00\x09garbage")
    subscriber.on_rtcp(b"")
    assert subscriber.nacks_received == 0 and RTCP_SR


def test_lost_packets_are_asked_again_and_retransmissions_restored():
    publisher, subscriber, source, out = setup()
    publisher.retransmissions[1001] = source
    source.on_packet(vp8_packet(1, 0, key=True), now=0.0)
    source.on_packet(vp8_packet(4, 9000, key=False), now=0.1)  # 2 and 3 lost on the way in
    nacks = [p for p in publisher.tap.rtcp if parse_rtcp(p)[0].packet_type == 205]
    assert nacks and sorted(parse_nack(nacks[-1])) == [2, 3]
    sent_before = len(subscriber.tap.rtp)

    lost = vp8_packet(2, 3000, key=False)
    rtx = lost[:1] + bytes([97]) + (500).to_bytes(2, "big") + lost[4:8] + (1001).to_bytes(4, "big")
    rtx += (2).to_bytes(2, "big") + lost[12:]  # RFC 4588: original seq, then the payload
    publisher.on_rtp(rtx)
    restored = subscriber.tap.rtp[-1]
    assert len(subscriber.tap.rtp) == sent_before + 1
    assert restored[12:] == lost[12:] and restored[1] & 0x7F == 96
    first_out = struct.unpack_from("!H", subscriber.tap.rtp[0], 2)[0]
    assert struct.unpack_from("!H", restored, 2)[0] == (first_out + 1) & 0xFFFF  # its own slot
    assert source.repaired == 1 and sorted(source.missing) == [3]

    padding = bytes([0xA0, 97]) + (501).to_bytes(2, "big") + lost[4:8] + (1001).to_bytes(4, "big")
    publisher.on_rtp(padding + b"\x00" * 9 + b"\x0a")  # bandwidth probe: padding only
    assert len(subscriber.tap.rtp) == sent_before + 1

    plis_before = source.keyframes_asked
    for step in range(1, NACK_TRIES + 2):  # asked a few times, then given up
        source.on_packet(vp8_packet(4 + step, 9000 + step * 3000, key=False), now=0.1 + step)
    assert source.missing == {}
    # Still missing after three asks: a keyframe is asked for too, once.
    assert source.keyframes_asked == plis_before + 1


L1T3 = (0, 2, 1, 2)  # temporal layer of each frame, repeating


def layered_frame(index: int) -> bytes:
    """Frame ``index`` of a VP8 stream in three temporal layers, one packet each."""
    descriptor = VpxPayloadDescriptor(
        partition_start=1, partition_id=0, picture_id=index, tl0picidx=(index // 4) & 0xFF,
        tid=(L1T3[index % 4], 1),
    )  # fmt: skip
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, 100 + index, 3000 * index, 1000)
    return header + bytes(descriptor) + b"\x01" + b"x" * 100  # interframe


@pytest.mark.parametrize(
    ("lost", "keyframe_asked"),
    [
        ({5}, False),  # a layer-2 frame: the next frames do without it
        ({6}, False),  # layer 1: only the layer-2 frame after it needs it
        ({5, 6, 7}, False),
        ({8}, True),  # a base-layer frame: everything after it needs it
        ({7, 8}, True),  # a layer-2 frame and the base one after it
    ],
)
def test_only_a_lost_base_layer_frame_brings_a_keyframe_request(lost, keyframe_asked):
    publisher, subscriber, source, out = setup()
    source.on_packet(vp8_packet(100, 0, key=True), now=0.0)
    asked = source.keyframes_asked
    now = 0.0
    for index in range(1, 9 + NACK_TRIES + 2):
        if index not in lost:
            now += 0.4  # each packet after the next NACK is due, before an outage
            source.on_packet(layered_frame(index), now=now)
    assert source.missing == {} and source.spare == set()  # asked for in vain, given up
    assert source.keyframes_asked == asked + keyframe_asked


def remb_sent(publisher, now: float) -> int:
    publisher.tap.rtcp.clear()
    publisher.send_reports(now=now, wall=1_700_000_000.0)
    [compound] = publisher.tap.rtcp
    remb = next(i for i in parse_rtcp(compound) if i.packet_type == RTCP_PSFB)
    return parse_remb(compound[remb.offset : remb.offset + remb.length])[0]


def test_a_new_publisher_starts_low_and_ramps_up():
    publisher, _, source, _ = setup()
    source.on_packet(vp8_packet(1, 3000, key=True), now=100.0)
    assert abs(remb_sent(publisher, 100.0) - START_BITRATE) < START_BITRATE * 0.01
    assert abs(remb_sent(publisher, 101.0) - START_BITRATE * RAMP_PER_S) < START_BITRATE * 0.01
    assert abs(remb_sent(publisher, 110.0) - 600_000) < 6_000  # then the caps rule


def test_loss_toward_a_subscriber_caps_what_its_publisher_may_send(monkeypatch):
    publisher, subscriber, source, out = setup()
    seq = 0
    clock = [0.0]
    monkeypatch.setattr(leg_module.time, "monotonic", lambda: clock[0])  # when reports arrive

    def one_second(start: float) -> None:
        nonlocal seq
        for i in range(30):  # 30 packets of 1000 payload bytes: 240 kbit/s
            seq += 1
            packet = vp8_packet(seq, seq * 3000, key=seq == 1, size=1000)
            source.on_packet(packet, start + i / 30)

    def report(fraction: float, now: float) -> None:
        clock[0] = now
        subscriber.on_rtcp(build_rr(9, 7000, int(fraction * 256), 0, seq, 0, 0, 0))

    one_second(20.0)
    report(0.0, 21.0)
    assert out.loss_estimate is None  # the first report only starts the clock
    one_second(21.0)
    report(0.25, 22.0)  # a quarter lost: back off to what got through, and some
    assert abs(out.loss_estimate - 240_000 * 0.875) < 240_000 * 0.05
    assert remb_sent(publisher, 40.0) == max(MIN_BITRATE, out.loss_estimate)
    capped = out.loss_estimate
    one_second(22.0)
    report(0.0, 23.0)
    assert out.loss_estimate == int(capped * 1.08)  # clean again: it grows back
