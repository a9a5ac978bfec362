"""Every reader in media.rtp on real, damaged and random packets: it returns, or (where
its contract says so) raises ValueError, the one error its callers catch."""

from __future__ import annotations

from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings

from media.keyframes import is_keyframe
from media.rtp import (
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SR,
    StreamRewriter,
    Vp8Munger,
    extension_value,
    is_h264_keyframe,
    is_rtcp,
    is_vp8_keyframe,
    packet_fields,
    parse_fir,
    parse_header,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
    payload_offset,
    rtx_payload,
    vp8_descriptor_size,
    vp8_keyframe_size,
    vp8_layer,
)
from tests.fuzz.packets import datagrams, media_packet, rtcp_packet
from tests.fuzz.seed import SEED, count


def value_error_or(reader, *args):
    try:
        return reader(*args)
    except ValueError:
        return None


def read_payload(payload: bytes) -> None:
    """The payload readers take any bytes, even none."""
    size = vp8_descriptor_size(payload)
    assert size == -1 or 0 < size < len(payload)
    layer = vp8_layer(payload)
    assert layer is None or layer.temporal is None or 0 <= layer.temporal <= 3
    assert isinstance(is_vp8_keyframe(payload), bool)
    assert isinstance(is_h264_keyframe(payload), bool)
    for name in ("VP8", "video/H264", "opus"):
        assert isinstance(is_keyframe(name, payload), bool)
    found = vp8_keyframe_size(payload)
    assert found is None or all(0 <= side < 1 << 14 for side in found)


@seed(SEED)
@hypothesis_settings(max_examples=2000)
@given(packet=datagrams(media_packet()))
def test_rtp_readers(packet):
    count("rtp readers")
    head = value_error_or(parse_header, packet)
    offset = value_error_or(payload_offset, packet)
    if head is not None:
        assert head.payload_offset == offset and offset <= head.payload_end <= len(packet)
    fields = packet_fields(packet)
    if fields is not None:
        assert fields[4] and len(fields[4]) <= len(packet) - 12
    rtx = value_error_or(rtx_payload, packet)
    assert rtx is None or rtx.start + 2 < rtx.end <= len(packet)
    read_payload(packet[offset or 12 :])
    read_payload(packet)
    rewriter = StreamRewriter(9, {96: 100, 102: 102, 111: 111}, ext_map={2: 3, 4: 1, 13: 14})
    munger = Vp8Munger([96, 100])
    for target in (2, 0):  # the anchoring packet, then the same one again (a duplicate)
        out = rewriter.rewrite(packet)
        assert out is None or (len(out) == len(packet) and out[8:12] == b"\0\0\0\x09")
        munger.target = target
        if out is not None and munger.admit(packet):
            assert len(munger.rewrite(out)) == len(out)
    if len(packet) >= 12:
        for ext_id in (1, 3, 13, 200):
            value = extension_value(packet, ext_id)
            assert value is None or len(value) <= len(packet) - 12


@seed(SEED)
@hypothesis_settings(max_examples=1000)
@given(data=datagrams(rtcp_packet()))
def test_rtcp_readers(data):
    count("rtcp readers")
    assert isinstance(is_rtcp(data), bool)
    items = value_error_or(parse_rtcp, data) or []
    for item in items:
        packet = data[item.offset : item.offset + item.length]
        assert len(packet) == item.length >= 4
        readers = {
            RTCP_SR: [parse_sr, parse_report_blocks],
            RTCP_RR: [parse_report_blocks],
            RTCP_RTPFB: [parse_nack],
            RTCP_PSFB: [parse_fir, parse_remb],
        }.get(item.packet_type, [])
        for reader in readers:
            value_error_or(reader, packet)
