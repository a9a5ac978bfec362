"""RTP/RTCP building blocks, checked against aiortc's own RTP/RTCP code for byte
compatibility, plus the rewriter's timeline guarantees and its speed."""

from __future__ import annotations

import random
import struct
import time
import timeit

import pytest
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_header_extensions,
    pack_remb_fci,
    unpack_header_extensions,
    unpack_remb_fci,
    unwrap_rtx,
    wrap_rtx,
)

from media.rtp import (
    PSFB_AFB,
    PSFB_FIR,
    PSFB_PLI,
    RTCP_BYE,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SDES,
    RTCP_SR,
    ReportBlock,
    SentHistory,
    StreamRewriter,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_rtx,
    build_sr,
    fraction_lost,
    is_rtcp,
    ntp_middle,
    ntp_time,
    packet_fields,
    parse_fir,
    parse_header,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
    payload_offset,
    restore_rtx,
    rtp_marker,
    rtp_payload_type,
    rtp_seq,
    rtp_seq_ts,
    rtp_ssrc,
    rtp_timestamp,
    rtx_payload,
    ts_delta,
    ts_distance,
    ts_newer,
)
from tests.support.rtp import build_fir, header_extensions, payload


def pkt(
    seq: int,
    ts: int,
    ssrc: int = 0x1111,
    pt: int = 96,
    marker: int = 0,
    body: bytes | None = None,
    extensions: list[tuple[int, bytes]] | None = None,
    csrc: list[int] | None = None,
    padding: int = 0,
) -> bytes:
    """A real RTP packet, serialized by aiortc."""
    packet = RtpPacket(
        payload_type=pt,
        marker=marker,
        sequence_number=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=body if body is not None else b"payload-%d" % seq,
    )
    packet.csrc = csrc or []
    packet.padding_size = padding
    data = packet.serialize()
    if extensions:
        profile, value = pack_header_extensions(extensions)
        head = bytearray(data[: 12 + 4 * len(packet.csrc)])
        head[0] |= 0x10
        extension = struct.pack("!HH", profile, len(value) // 4) + value
        data = bytes(head) + extension + data[len(head) :]
    return data


def seq_ts(packet: bytes) -> tuple[int, int]:
    parsed = RtpPacket.parse(packet)
    return parsed.sequence_number, parsed.timestamp


# --- header parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extensions", "csrc", "padding"),
    [
        (None, None, 0),
        (None, [1, 2, 3], 0),
        ([(1, b"a"), (3, b"\x01\x02\x03")], None, 0),  # one-byte form
        ([(1, b"audio"), (20, b"\x00\x01")], [7], 0),  # id > 14: two-byte form
        ([(2, b"")], None, 0),  # empty value: two-byte form
        ([(5, b"x" * 16)], [9, 10], 5),
        (None, None, 1),
    ],
)
def test_parse_header_matches_aiortc(extensions, csrc, padding):
    data = pkt(4242, 123456789, ssrc=0xDEADBEEF, pt=111, marker=1, body=b"\x01\x02\x03\x04\x05",
               extensions=extensions, csrc=csrc, padding=padding)  # fmt: skip
    head = parse_header(data)
    theirs = RtpPacket.parse(data)
    assert (head.version, head.marker, head.payload_type) == (2, True, 111)
    assert (head.sequence_number, head.timestamp, head.ssrc) == (4242, 123456789, 0xDEADBEEF)
    assert head.csrc_count == len(csrc or [])
    assert head.extension == bool(extensions)
    assert head.padding == bool(padding)
    assert data[head.payload_offset : head.payload_end] == theirs.payload == b"\x01\x02\x03\x04\x05"
    assert payload_offset(data) == head.payload_offset
    assert bytes(payload(data)) == theirs.payload
    assert header_extensions(data) == (extensions or [])
    assert parse_header(memoryview(data)) == head
    assert (rtp_seq(data), rtp_timestamp(data), rtp_ssrc(data)) == (4242, 123456789, 0xDEADBEEF)
    assert (rtp_payload_type(data), rtp_marker(data)) == (111, True)


def test_header_extension_padding_and_stop_id():
    # one-byte elements separated by padding bytes, then id 15 (stop parsing)
    value = bytes([0x10, 0xAA, 0x00, 0x00, 0x21, 0xBB, 0xCC, 0xF0])
    data = bytes([0x90, 96]) + bytes(10) + struct.pack("!HH", 0xBEDE, 2) + value + b"body"
    assert header_extensions(data) == [(1, b"\xaa"), (2, b"\xbb\xcc")]
    assert parse_header(data).payload_offset == 24


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(11),
        bytes([0x40, 96]) + bytes(10),  # version 1
        bytes([0x82, 96]) + bytes(10) + bytes(4),  # 2 CSRCs, only one present
        bytes([0x90, 96]) + bytes(10) + b"\xbe\xde",  # extension header cut
        bytes([0x90, 96]) + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4),  # extension cut
        bytes([0xA0, 96]) + bytes(10) + b"ab\x00",  # padding length 0
        bytes([0xA0, 96]) + bytes(10) + b"ab\x05",  # padding longer than the payload
    ],
)
def test_parse_header_rejects_malformed(data):
    with pytest.raises(ValueError):
        parse_header(data)


def test_is_rtcp_per_rfc5761():
    assert is_rtcp(build_pli(1, 2))
    assert is_rtcp(build_sr(1, 2, 3, 4, 5))
    assert is_rtcp(bytes([0x80, 223]))  # aiortc's own check stops at 208
    assert not is_rtcp(pkt(1, 1, pt=96))
    assert not is_rtcp(pkt(1, 1, pt=111, marker=1))  # 0xEF = 239
    assert not is_rtcp(pkt(1, 1, pt=0, marker=1))  # 0x80 = 128
    assert not is_rtcp(b"\x80")


def test_two_field_and_depacketiser_readers():
    data = pkt(65535, 0xFFFFFFFF, pt=96, marker=1, csrc=[4], body=b"vp8!", padding=2)
    assert rtp_seq_ts(data) == (65535, 0xFFFFFFFF)
    assert packet_fields(data) == (65535, 0xFFFFFFFF, 96, True, b"vp8!")
    assert packet_fields(data[:11]) is None
    assert packet_fields(pkt(1, 1, body=b"", padding=4)) is None  # padding only
    assert packet_fields(bytes([0x40]) + data[1:]) is None  # version 1


def test_timestamp_arithmetic_wraps():
    assert ts_newer(5, 0xFFFFFFF0) and not ts_newer(0xFFFFFFF0, 5) and not ts_newer(7, 7)
    assert ts_delta(5, 0xFFFFFFF0) == 21 and ts_delta(0xFFFFFFF0, 5) == -21
    assert ts_distance(5, 0xFFFFFFF0) == 21 and ts_distance(0xFFFFFFF0, 5) == (1 << 32) - 21


def test_rtx_unwrapped_back_to_the_original():
    original = pkt(4242, 9000, ssrc=77, pt=100, marker=1, csrc=[3], body=b"\x90frame",
                   extensions=[(1, b"x")])  # fmt: skip
    rtx = build_rtx(original, rtx_ssrc=88, rtx_pt=101, rtx_seq=9)
    carried = rtx_payload(rtx)
    assert carried is not None and carried.original_seq == 4242
    assert restore_rtx(rtx, carried, 100, 77) == original
    assert rtx_payload(pkt(1, 1, pt=101, body=b"", padding=8)) is None  # a bandwidth probe


def test_fraction_lost_in_fixed_point():
    assert [fraction_lost(*case) for case in ((1, 10), (0, 10), (-2, 10), (3, 0))] == [25, 0, 0, 0]


# --- the rewriter -------------------------------------------------------------------


def make_rewriter(**kwargs) -> StreamRewriter:
    kwargs.setdefault("seq_start", 1000)
    kwargs.setdefault("ts_start", 50_000)
    return StreamRewriter(0xABCD, {96: 100, 97: 101}, **kwargs)


def test_rewrite_replaces_header_fields_only():
    rw = make_rewriter()
    data = pkt(7, 9000, pt=96, marker=1, csrc=[5], body=b"\x90\x80frame", padding=3)
    out = rw.rewrite(data)
    theirs = RtpPacket.parse(out)
    assert (theirs.ssrc, theirs.payload_type, theirs.marker) == (0xABCD, 100, 1)
    assert (theirs.sequence_number, theirs.timestamp) == (1000, 50_000)
    assert theirs.csrc == [5] and theirs.payload == b"\x90\x80frame"
    assert out[12:] == data[12:]
    assert isinstance(out, bytes)  # pylibsrtp's protect() insists on bytes
    assert rw.last_sequence_number == 1000 and rw.last_timestamp == 50_000


def test_rewrite_accepts_memoryview_and_bytearray():
    rw = make_rewriter()
    assert seq_ts(rw.rewrite(memoryview(pkt(1, 0)))) == (1000, 50_000)
    assert seq_ts(rw.rewrite(bytearray(pkt(2, 3000)))) == (1001, 53_000)


def test_rewrite_random_start_by_default():
    rw = StreamRewriter(1, {96: 96})
    assert rw.last_sequence_number is None
    out = rw.rewrite(pkt(10, 10))
    assert rw.last_sequence_number == rtp_seq(out)


def test_steady_stream_keeps_offsets_and_pt_mapping():
    rw = make_rewriter()
    outs = [rw.rewrite(pkt(500 + i, 7000 + 3000 * (i // 2), pt=96 + i % 2)) for i in range(10)]
    assert [seq_ts(o) for o in outs] == [(1000 + i, 50_000 + 3000 * (i // 2)) for i in range(10)]
    assert [rtp_payload_type(o) for o in outs] == [100 + i % 2 for i in range(10)]


def test_seq_and_ts_wraparound():
    rw = make_rewriter(seq_start=65534, ts_start=(1 << 32) - 3000)
    outs = [rw.rewrite(pkt(10 + i, 3000 * i)) for i in range(4)]
    assert [seq_ts(o) for o in outs] == [(65534, 4294964296), (65535, 0), (0, 3000), (1, 6000)]


def test_input_wraparound_with_reordering():
    rw = make_rewriter()
    order = [65533, 65535, 65534, 1, 0, 2]
    outs = {s: rw.rewrite(pkt(s, (s - 65533) % 65536 * 10)) for s in order}
    assert [seq_ts(outs[s])[0] for s in (65533, 65534, 65535, 0, 1, 2)] == list(range(1000, 1006))
    assert seq_ts(outs[0])[1] == 50_000 + 30


def test_late_packets_keep_their_slot():
    rw = make_rewriter()
    rw.rewrite(pkt(100, 0))
    rw.rewrite(pkt(103, 9000))
    assert seq_ts(rw.rewrite(pkt(101, 3000))) == (1001, 53_000)
    assert seq_ts(rw.rewrite(pkt(102, 6000))) == (1002, 56_000)
    assert rw.last_sequence_number == 1003  # late packets do not move the head
    assert seq_ts(rw.rewrite(pkt(104, 12000))) == (1004, 62_000)
    assert seq_ts(rw.rewrite(pkt(102, 6000))) == (1002, 56_000)  # duplicate: same slot


def test_unmapped_payload_type_dropped_without_gap():
    rw = make_rewriter()
    assert rw.rewrite(pkt(1, 0)) is not None
    assert rw.rewrite(pkt(2, 0, pt=127)) is None
    assert seq_ts(rw.rewrite(pkt(3, 3000))) == (1001, 53_000)


def test_other_ssrc_without_switch_is_dropped():
    rw = make_rewriter()
    rw.rewrite(pkt(1, 0, ssrc=1))
    assert rw.rewrite(pkt(2, 0, ssrc=2)) is None
    assert seq_ts(rw.rewrite(pkt(2, 3000, ssrc=1))) == (1001, 53_000)


def test_waiting_for_keyframe_costs_no_sequence_numbers():
    rw = make_rewriter()
    # packets 1..9 arrive while the subscriber waits: the router does not forward them
    assert seq_ts(rw.rewrite(pkt(10, 27000))) == (1000, 50_000)
    assert rw.rewrite(pkt(9, 24000)) is None  # late, from before the start
    assert seq_ts(rw.rewrite(pkt(11, 30000))) == (1001, 53_000)


def test_switch_source_continues_timeline():
    rw = make_rewriter()
    for i in range(5):
        rw.rewrite(pkt(40_000 + i, 1_000_000 + 3000 * i, ssrc=1))
    assert rw.last_sequence_number == 1004 and rw.last_timestamp == 62_000
    rw.switch_source(elapsed_ticks=45_000)  # half a second later
    # the new source starts from random bases and is forwarded from its first keyframe
    first = rw.rewrite(pkt(123, 4_000_000_000, ssrc=2))
    assert seq_ts(first) == (1005, 62_000 + 45_000)
    assert seq_ts(rw.rewrite(pkt(124, 4_000_003_000, ssrc=2))) == (1006, 110_000)
    assert rw.rewrite(pkt(40_002, 1_006_000, ssrc=1)) is None  # late, old source
    assert rw.rewrite(pkt(122, 3_999_997_000, ssrc=2)) is None  # new source, before its start
    assert seq_ts(rw.rewrite(pkt(125, 4_000_006_000, ssrc=2))) == (1007, 113_000)
    assert rw.out_timestamp(4_000_009_000) == 116_000


def test_switch_source_without_hint_advances_one_frame():
    rw = make_rewriter()
    rw.rewrite(pkt(1, 0, ssrc=1))
    rw.switch_source()
    assert seq_ts(rw.rewrite(pkt(9, 777, ssrc=2))) == (1001, 53_000)
    rw.switch_source(elapsed_ticks=10)  # less than a frame: still one frame
    assert seq_ts(rw.rewrite(pkt(3, 5, ssrc=3))) == (1002, 56_000)

    audio = StreamRewriter(7, {111: 111}, clock_rate=48000, seq_start=0, ts_start=0)
    audio.rewrite(pkt(1, 0, pt=111))
    audio.switch_source()
    assert seq_ts(audio.rewrite(pkt(1, 0, pt=111, ssrc=9))) == (1, 960)


def test_switch_before_anything_sent_keeps_start():
    rw = make_rewriter()
    rw.switch_source(elapsed_ticks=90_000)
    assert seq_ts(rw.rewrite(pkt(5, 5))) == (1000, 50_000)


def test_switch_on_same_ssrc_keeps_its_clock():
    """Re-anchoring mid-source (e.g. paused until a keyframe) keeps real time gaps."""
    rw = make_rewriter()
    rw.rewrite(pkt(10, 3000))
    rw.switch_source()
    # 20 packets (2 s of frames) not forwarded, then the keyframe
    assert seq_ts(rw.rewrite(pkt(31, 3000 + 180_000))) == (1001, 50_000 + 180_000)
    assert rw.rewrite(pkt(30, 3000 + 177_000)) is None  # from before the re-anchor
    assert rw.rewrite(pkt(10, 3000)) is None


def test_switch_on_same_ssrc_after_restart_uses_hint():
    rw = make_rewriter()
    rw.rewrite(pkt(10, 3000))
    rw.switch_source(elapsed_ticks=9000)
    # same SSRC, but its clock jumped back: treat like a new source
    assert seq_ts(rw.rewrite(pkt(10, 1000))) == (1001, 59_000)


def test_skip_closes_the_gap():
    rw = make_rewriter()
    rw.rewrite(pkt(1, 0))
    rw.skip(pkt(2, 3000))
    rw.skip(pkt(3, 3000))
    assert seq_ts(rw.rewrite(pkt(4, 6000))) == (1001, 56_000)  # ts keeps real time
    rw.skip(pkt(6, 9000))  # 5 is missing, 6 skipped
    assert seq_ts(rw.rewrite(pkt(7, 12000))) == (1003, 62_000)
    assert seq_ts(rw.rewrite(pkt(5, 9000))) == (1002, 59_000)  # late: its own slot
    assert rw.rewrite(pkt(6, 9000)) is None  # the skipped one arrives again: its slot is gone
    assert rw.rewrite(pkt(3, 3000)) is None
    assert seq_ts(rw.rewrite(pkt(4, 6000))) == (1001, 56_000)
    assert seq_ts(rw.rewrite(pkt(1, 0))) == (1000, 50_000)


def test_skip_of_late_or_foreign_packet_changes_nothing():
    rw = make_rewriter()
    rw.skip(pkt(1, 0))  # before anything was sent
    rw.rewrite(pkt(5, 0))
    rw.rewrite(pkt(7, 0))
    rw.skip(pkt(6, 0))  # late: its neighbours are out already
    rw.skip(pkt(8, 0, ssrc=99))
    rw.skip(b"\x80\x60\x00")  # too short to be anything
    assert seq_ts(rw.rewrite(pkt(8, 0)))[0] == 1003


def test_long_skip_runs_stay_small_and_correct():
    rw = make_rewriter()
    seq = 0
    expected_out = 1000
    for _ in range(200):  # 200 runs of skips with losses in between
        rw.rewrite(pkt(seq, 0))
        assert rtp_seq(rw.rewrite(pkt(seq, 0))) == expected_out  # duplicate of the head
        for k in range(1, 4):
            rw.skip(pkt(seq + k, 0))
        seq += 6  # seq + 4 and + 5 lost
        expected_out += 3
    assert len(rw._steps) <= 65


def test_random_stream_output_is_gapless_and_consistent():
    """Switches, keyframe waits and reordering: whatever the router forwards comes out
    with unique seqs that fill a contiguous range, in each source's own order."""
    rng = random.Random(5)
    rw = StreamRewriter(1, {96: 96}, seq_start=65000, ts_start=(1 << 32) - 100_000)
    sent: list[tuple[int, int, int, int]] = []  # (out seq extended, out ts, src, in index)
    head = 65000  # extended output seq of the newest packet: unwraps the 16-bit seqs
    for src in range(6):
        if src:
            rw.switch_source(rng.choice([None, 1000, 90_000]))
        seq0, ts0 = rng.getrandbits(16), rng.getrandbits(32)
        count = rng.randint(50, 2000)
        order = list(range(count))
        for i in range(0, count - 3, 3):  # swap neighbours now and then
            if rng.random() < 0.3:
                order[i], order[i + 1] = order[i + 1], order[i]
        wait = rng.randint(0, 40)  # the first packets are skipped: waiting for a keyframe
        for n, i in enumerate(order):
            if n < wait:
                continue
            out = rw.rewrite(pkt(seq0 + i, ts0 + 3000 * i, ssrc=1000 + src))
            if out is None:
                continue
            seq, ts = seq_ts(out)
            ext = head + ((seq - head + 0x8000) & 0xFFFF) - 0x8000
            head = max(head, ext)
            sent.append((ext, ts, src, i))
    exts = sorted(e for e, *_ in sent)
    assert exts == list(range(exts[0], exts[0] + len(exts)))  # unique and gapless
    by_seq = sorted(sent)
    for (_, t1, s1, i1), (_, t2, s2, i2) in zip(by_seq, by_seq[1:], strict=False):
        assert (s1, i1) < (s2, i2)  # output order follows source then input order
        ticks = (t2 - t1) & 0xFFFFFFFF
        if s1 == s2:
            assert ticks == 3000 * (i2 - i1)
        else:
            assert 3000 <= ticks <= 90_000


def test_ext_map_rewrites_ids_and_blanks_the_rest():
    rw = make_rewriter(ext_map={1: 4, 3: 3, 20: 30})
    one_byte = pkt(1, 0, extensions=[(1, b"m"), (2, b"\x05"), (3, b"\x01\x02\x03")])
    out = rw.rewrite(one_byte)
    theirs = RtpPacket.parse(out)
    assert theirs.payload == b"payload-1"
    assert header_extensions(out) == [(4, b"m"), (3, b"\x01\x02\x03")]
    assert len(out) == len(one_byte)
    two_byte = pkt(2, 0, extensions=[(1, b"mid"), (20, b""), (21, b"\x09")])
    out = rw.rewrite(two_byte)
    assert header_extensions(out) == [(4, b"mid"), (30, b"")]
    assert RtpPacket.parse(out).payload == b"payload-2"
    # a one-byte id cannot take an id above 14: blanked rather than corrupted
    rw = make_rewriter(ext_map={1: 20})
    assert header_extensions(rw.rewrite(pkt(1, 0, extensions=[(1, b"m")]))) == []


def test_ext_map_with_csrcs_and_later_change():
    rw = make_rewriter()
    data = pkt(1, 0, csrc=[1, 2], extensions=[(1, b"m"), (2, b"\x05")], body=b"\x90body")
    assert rw.rewrite(data)[12:] == data[12:]  # no ext_map: extensions untouched
    rw.set_ext_map({2: 7})
    out = rw.rewrite(pkt(2, 0, csrc=[1, 2], extensions=[(1, b"m"), (2, b"\x05")], body=b"x"))
    assert header_extensions(out) == [(7, b"\x05")]
    assert RtpPacket.parse(out).csrc == [1, 2] and RtpPacket.parse(out).payload == b"x"
    assert rw.ext_map == {2: 7}
    rw.ext_map = {1: 3}  # assignment rebuilds the lookup tables too
    out = rw.rewrite(pkt(3, 0, extensions=[(1, b"m"), (2, b"\x05")]))
    assert header_extensions(out) == [(3, b"m")]
    rw.ext_map = None
    assert header_extensions(rw.rewrite(pkt(4, 0, extensions=[(2, b"\x05")]))) == [(2, b"\x05")]


def test_ext_map_parsed_by_aiortc_map():
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    ids = HeaderExtensionsMap()
    ids.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(
                    id=5, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                )
            ]
        )
    )
    rw = make_rewriter(ext_map={3: 5})
    out = rw.rewrite(pkt(1, 0, extensions=[(1, b"0"), (3, b"\x12\x34\x56")]))
    assert RtpPacket.parse(out, ids).extensions.abs_send_time == 0x123456
    assert unpack_header_extensions(0xBEDE, out[16:24]) == [(5, b"\x12\x34\x56")]


def test_malformed_input_is_dropped():
    rw = make_rewriter()
    assert rw.rewrite(b"\x80\x60") is None
    assert rw.rewrite(bytes([0x40, 96]) + bytes(10)) is None  # version 1 cannot anchor
    rw = make_rewriter(ext_map={})
    assert rw.rewrite(bytes([0x90, 96]) + bytes(10) + b"\xbe\xde\x00\x09") is None


# --- history and RTX ----------------------------------------------------------------


def test_sent_history_ring():
    history = SentHistory(8)
    for seq in range(65530, 65536 + 6):
        history.add(seq & 0xFFFF, b"p%d" % (seq & 0xFFFF))
    assert history.get(5) == b"p5"
    assert history.get(65534) == b"p65534"
    assert history.get(65533) is None  # overwritten by 5
    assert history.get(100) is None
    history.clear()
    assert history.get(5) is None
    with pytest.raises(ValueError):
        SentHistory(500)


def test_sent_history_resends_a_packet_once_an_interval():
    history = SentHistory(8)
    for seq in range(8):
        history.add(seq, b"p%d" % seq)
    assert history.take_for_resend(3, now=10.0, interval=0.2) == b"p3"
    assert history.take_for_resend(3, now=10.1, interval=0.2) is None  # on its way
    assert history.take_for_resend(3, now=10.25, interval=0.2) == b"p3"
    assert history.take_for_resend(9, now=10.25, interval=0.2) is None  # never sent
    for seq in range(8):  # as many resent as it holds: the oldest records go
        history.take_for_resend(seq, now=11.0, interval=0.2)
    assert history.take_for_resend(7, now=11.1, interval=0.2) is None
    assert len(history._resent_at) <= 8


@pytest.mark.parametrize("padding", [0, 4])
def test_build_rtx_matches_aiortc(padding):
    original = pkt(
        65535, 123, ssrc=77, pt=100, marker=1, csrc=[3], padding=padding,
        extensions=[(1, b"x"), (3, b"\x01\x02\x03")], body=b"\x90\x80data",
    )  # fmt: skip
    rtx = build_rtx(original, rtx_ssrc=88, rtx_pt=101, rtx_seq=9)
    ours = RtpPacket.parse(rtx)
    theirs = wrap_rtx(RtpPacket.parse(original), payload_type=101, sequence_number=9, ssrc=88)
    for field in ("payload_type", "marker", "sequence_number", "timestamp", "ssrc", "csrc",
                  "payload", "padding_size"):  # fmt: skip
        assert getattr(ours, field) == getattr(theirs, field), field
    assert header_extensions(rtx) == [(1, b"x"), (3, b"\x01\x02\x03")]
    back = unwrap_rtx(ours, payload_type=100, ssrc=77)
    assert (back.sequence_number, back.payload, back.marker) == (65535, b"\x90\x80data", 1)


# --- RTCP ---------------------------------------------------------------------------


def test_pli_matches_aiortc():
    ours = build_pli(0x1234, 0x5678)
    assert ours == bytes(RtcpPsfbPacket(fmt=PSFB_PLI, ssrc=0x1234, media_ssrc=0x5678))
    [parsed] = RtcpPacket.parse(ours)
    assert isinstance(parsed, RtcpPsfbPacket) and parsed.fmt == 1 and parsed.fci == b""


def test_fir_matches_aiortc():
    ours = build_fir(1, 0xCAFE, 300)
    [parsed] = RtcpPacket.parse(ours)
    assert (parsed.fmt, parsed.ssrc, parsed.media_ssrc) == (PSFB_FIR, 1, 0)
    assert parsed.fci == struct.pack("!IB3x", 0xCAFE, 300 & 0xFF)
    assert parse_fir(ours) == [(0xCAFE, 44)]
    [item] = parse_rtcp(ours)
    assert (item.packet_type, item.fmt, item.length) == (RTCP_PSFB, PSFB_FIR, 20)


@pytest.mark.parametrize("bitrate", [0, 1, 0x3FFFF, 0x40000, 123_456, 2_500_000, 10**9])
@pytest.mark.parametrize("ssrcs", [[], [7], [1, 2, 0xFFFFFFFF]])
def test_remb_matches_aiortc(bitrate, ssrcs):
    ours = build_remb(9, bitrate, ssrcs)
    reference = bytes(
        RtcpPsfbPacket(fmt=PSFB_AFB, ssrc=9, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs))
    )
    assert ours == reference
    [parsed] = RtcpPacket.parse(ours)
    assert unpack_remb_fci(parsed.fci) == parse_remb(ours)
    bitrate_back, ssrcs_back = parse_remb(reference)
    assert ssrcs_back == ssrcs and bitrate_back <= bitrate < bitrate_back * 1.0001 + 1


def test_parse_remb_rejects_other_afb():
    other = bytes(RtcpPsfbPacket(fmt=PSFB_AFB, ssrc=1, media_ssrc=0, fci=b"ABCD\x00\x00\x00\x00"))
    assert parse_remb(other) is None


@pytest.mark.parametrize(
    "lost",
    [[5], [5, 6, 21], [100, 102, 116, 117, 200], list(range(1000, 1040)), [65530, 65534]],
)
def test_nack_both_ways_with_aiortc(lost):
    theirs = bytes(RtcpRtpfbPacket(fmt=1, ssrc=3, media_ssrc=4, lost=lost))
    assert parse_nack(theirs) == lost
    ours = build_nack(3, 4, lost)
    assert ours == theirs
    [parsed] = RtcpPacket.parse(ours)
    assert (parsed.ssrc, parsed.media_ssrc, parsed.lost) == (3, 4, lost)


def test_nack_across_seq_wrap():
    # aiortc reports 65535 + 2 as 65537; we keep seqs in 16 bits both ways
    nack = build_nack(1, 2, [65535, 0, 1])
    assert parse_nack(nack) == [65535, 0, 1]
    assert nack == build_nack(1, 2, [65535, 65536, 65537])
    assert len(nack) == 16  # one PID+BLP pair


def test_receiver_report_matches_aiortc():
    block = dict(ssrc=0xAAAA, fraction_lost=25, packets_lost=-3, highest_sequence=70_000,
                 jitter=123, lsr=0x12345678, dlsr=6553)  # fmt: skip
    ours = build_rr(0xBBBB, *block.values())
    theirs = bytes(RtcpRrPacket(ssrc=0xBBBB, reports=[RtcpReceiverInfo(**block)]))
    assert ours == theirs
    [parsed] = RtcpPacket.parse(ours)
    assert parsed.reports[0] == RtcpReceiverInfo(**block)
    assert parse_report_blocks(theirs) == [ReportBlock(**block)]
    [item] = parse_rtcp(ours)
    assert (item.packet_type, item.fmt, item.sender_ssrc, item.media_ssrc) == (
        RTCP_RR, 1, 0xBBBB, 0xAAAA
    )  # fmt: skip


def test_receiver_report_clamps_lost():
    rr = build_rr(1, 2, 0, 1 << 30, 0, 0, 0, 0)
    assert RtcpPacket.parse(rr)[0].reports[0].packets_lost == (1 << 23) - 1


def test_sender_report_matches_aiortc():
    ntp = ntp_time(1_700_000_000.25)
    ours = build_sr(0xCCCC, ntp, 0xFFFFFFF0, 1000, 1_200_000)
    info = RtcpSenderInfo(ntp_timestamp=ntp, rtp_timestamp=0xFFFFFFF0, packet_count=1000,
                          octet_count=1_200_000)  # fmt: skip
    assert ours == bytes(RtcpSrPacket(ssrc=0xCCCC, sender_info=info))
    [parsed] = RtcpPacket.parse(ours)
    assert parsed.sender_info == info
    assert parse_sr(ours) == (0xCCCC, ntp, 0xFFFFFFF0, 1000, 1_200_000)
    assert ntp >> 32 == 1_700_000_000 + 2208988800 and ntp & 0xFFFFFFFF == 1 << 30
    assert ntp_middle(ntp) == ((ntp >> 32) & 0xFFFF) << 16 | 0x4000


def test_parse_compound_from_aiortc():
    report = RtcpReceiverInfo(ssrc=11, fraction_lost=0, packets_lost=0, highest_sequence=1,
                              jitter=0, lsr=0, dlsr=0)  # fmt: skip
    sender = RtcpSenderInfo(ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4)
    parts = [
        bytes(RtcpSrPacket(ssrc=10, sender_info=sender, reports=[report])),
        bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=10, items=[(1, b"cname")])])),
        bytes(RtcpPsfbPacket(fmt=PSFB_PLI, ssrc=10, media_ssrc=20)),
        bytes(RtcpRtpfbPacket(fmt=1, ssrc=10, media_ssrc=21, lost=[7, 9])),
        bytes(RtcpByePacket(sources=[10])),
    ]
    data = b"".join(parts)
    items = parse_rtcp(data)
    assert [(i.packet_type, i.fmt, i.sender_ssrc, i.media_ssrc) for i in items] == [
        (RTCP_SR, 1, 10, 11),
        (RTCP_SDES, 1, 10, 0),
        (RTCP_PSFB, PSFB_PLI, 10, 20),
        (RTCP_RTPFB, 1, 10, 21),
        (RTCP_BYE, 1, 10, 0),
    ]
    assert [data[i.offset : i.offset + i.length] for i in items] == parts
    nack = items[3]
    assert parse_nack(data[nack.offset : nack.offset + nack.length]) == [7, 9]
    sr = items[0]
    assert parse_report_blocks(data[sr.offset : sr.offset + sr.length])[0].ssrc == 11
    assert parse_sr(data[sr.offset : sr.offset + sr.length]).rtp_timestamp == 2


def test_rtcp_padding_is_ignored():
    nack = bytearray(build_nack(1, 2, [40]) + b"\x00\x00\x00\x04")
    nack[0] |= 0x20
    nack[3] += 1
    assert parse_nack(nack) == [40]
    assert [i.packet_type for i in parse_rtcp(bytes(nack))] == [RTCP_RTPFB]
    assert RtcpPacket.parse(bytes(nack))[0].lost == [40]


@pytest.mark.parametrize(
    "data", [b"\x80\xc9\x00", bytes([0x40, 201, 0, 0]), bytes([0x80, 201, 0, 7]) + bytes(8)]
)
def test_parse_rtcp_rejects_malformed(data):
    with pytest.raises(ValueError):
        parse_rtcp(data)


# --- speed --------------------------------------------------------------------------


def _per_packet_us(func, packets, rounds: int = 5) -> float:
    """Best of `rounds` passes: the machine is shared, and noise only ever adds time."""

    def run() -> None:
        for packet in packets:
            func(packet)

    return min(timeit.repeat(run, number=1, repeat=rounds)) / len(packets) * 1e6


def _stream(count: int, body: bytes, extension: bytes = b"") -> list[bytes]:
    """`count` packets, seq 0.., five per frame; built directly, aiortc is too slow here."""
    b0 = 0x90 if extension else 0x80
    return [
        struct.pack("!BBHII", b0, 96, i & 0xFFFF, 3000 * (i // 5), 0x1111) + extension + body
        for i in range(count)
    ]


def test_rewrite_speed(capsys):
    body = random.Random(1).randbytes(1100)
    packets = _stream(100_000, body)
    # abs-send-time and audio-level style elements, one-byte form
    ext_packets = _stream(100_000, body, b"\xbe\xde\x00\x02\x22\x01\x02\x03\x10\x7f\x00\x00")
    assert header_extensions(ext_packets[0]) == [(2, b"\x01\x02\x03"), (1, b"\x7f")]
    plain = StreamRewriter(1, {96: 100})
    remapping = StreamRewriter(1, {96: 100}, ext_map={1: 1, 2: 3})
    history = SentHistory()
    rewrite = plain.rewrite

    def forward(packet: bytes) -> None:
        out = rewrite(packet)
        history.add((out[2] << 8) | out[3], out)

    def aiortc_baseline(packet: bytes) -> None:
        parsed = RtpPacket.parse(packet)
        parsed.ssrc, parsed.payload_type = 1, 100
        parsed.sequence_number = (parsed.sequence_number + 7) & 0xFFFF
        parsed.serialize()

    start = time.perf_counter()
    plain_us = _per_packet_us(rewrite, packets)
    remap_us = _per_packet_us(remapping.rewrite, ext_packets)
    forward_us = _per_packet_us(forward, packets)
    header_us = _per_packet_us(parse_header, packets)
    baseline_us = _per_packet_us(aiortc_baseline, packets[:20_000], rounds=3)
    with capsys.disabled():
        print(
            f"\nrewrite {plain_us:.2f} us/packet, with ext_map {remap_us:.2f}, "
            f"rewrite+history {forward_us:.2f}, parse_header {header_us:.2f}; "
            f"aiortc RtpPacket parse+serialize {baseline_us:.2f} "
            f"(1100-byte payload, best of 5 x 100k, {time.perf_counter() - start:.1f} s)"
        )
    assert plain_us < 20 and remap_us < 20
