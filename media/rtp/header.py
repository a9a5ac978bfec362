"""The RTP header (RFC 3550 5.1): reading and writing its fields, finding the
payload, and RTX retransmission packets (RFC 4588) built from and back to it.

The single-field readers are what the per-packet paths call, so they stay as cheap
as the inline operations they replace: precompiled `struct.Struct` objects, and
where a caller needs two fields, one bound `unpack_from` returning both.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

Buffer = bytes | bytearray | memoryview

RTP_HEADER_SIZE = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF
HALF_SEQ = 0x8000
HALF_TS = 1 << 31
# RFC 7983: a first byte in this range is RTP or RTCP (DTLS, STUN and TURN lie outside).
RTP_FIRST_BYTES = range(128, 192)
# RFC 5761: RTCP packet types 192..223 sit where RTP has its marker and payload type.
RTCP_PACKET_TYPES = range(192, 224)

FIXED_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, seq, ts, ssrc
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_SEQ_TS = struct.Struct("!2xHI")

# Bound methods of the precompiled structs, for the per-packet paths: one C call
# each. (Methods looked up on an imported name compile to a slower generic
# attribute load, so callers in other modules get these instead of the structs.)
unpack_fixed_header = FIXED_HEADER.unpack_from  # (b0, b1, seq, ts, ssrc)
pack_fixed_header = FIXED_HEADER.pack
rtp_seq_ts = _SEQ_TS.unpack_from  # (seq, ts): the forwarder reads both for every packet


class RtpHeaderView(NamedTuple):
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload_offset: int  # first payload byte: after CSRCs and the header extension
    payload_end: int  # one past the last payload byte: before any padding


def parse_header(packet: Buffer) -> RtpHeaderView:
    """Parse and validate the fixed header; raises ValueError on a malformed packet."""
    if len(packet) < RTP_HEADER_SIZE:
        raise ValueError("RTP packet is shorter than its fixed header")
    b0, b1, seq, ts, ssrc = FIXED_HEADER.unpack_from(packet)
    if b0 >> 6 != 2:
        raise ValueError("RTP packet has a version other than 2")
    offset = payload_offset(packet)
    end = len(packet)
    if b0 & 0x20:
        pad = packet[-1]
        if pad == 0 or pad > end - offset:
            raise ValueError("RTP packet has an invalid padding length")
        end -= pad
    return RtpHeaderView(
        2, bool(b0 & 0x20), bool(b0 & 0x10), b0 & 0x0F,
        bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, offset, end,
    )  # fmt: skip


def payload_offset(packet: Buffer) -> int:
    """Offset of the payload: past the CSRC list and the header extension, if any."""
    if len(packet) < RTP_HEADER_SIZE:
        raise ValueError("RTP packet is shorter than its fixed header")
    b0 = packet[0]
    pos = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(packet) < pos + 4:
            raise ValueError("RTP packet has a truncated header extension")
        pos += 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3])
    if len(packet) < pos:
        raise ValueError("RTP packet is shorter than its header")
    return pos


# (seq, ts, payload type, marker, payload): a plain tuple, cheaper than a named one.
PacketFields = tuple[int, int, int, bool, bytes]


def packet_fields(packet: bytes) -> PacketFields | None:
    """What a depacketiser reads of a media packet, without validating the padding
    count; None for a malformed packet or one without payload (padding only)."""
    if len(packet) < RTP_HEADER_SIZE:
        return None
    b0, b1, seq, ts, _ = FIXED_HEADER.unpack_from(packet)
    if b0 >> 6 != 2:
        return None
    try:
        start = payload_offset(packet)
    except ValueError:
        return None
    end = len(packet) - (packet[-1] if b0 & 0x20 else 0)
    if end <= start:
        return None  # empty, or padding only
    return seq, ts, b1 & 0x7F, bool(b1 & 0x80), packet[start:end]


# Cheap single-field readers for code that needs one value and no validation.
def rtp_seq(packet: Buffer) -> int:
    return (packet[2] << 8) | packet[3]


def rtp_timestamp(packet: Buffer) -> int:
    return _U32.unpack_from(packet, 4)[0]


def rtp_ssrc(packet: Buffer) -> int:
    return _U32.unpack_from(packet, 8)[0]


def rtp_payload_type(packet: Buffer) -> int:
    return packet[1] & 0x7F


def rtp_marker(packet: Buffer) -> bool:
    return bool(packet[1] & 0x80)


def ts_newer(a: int, b: int) -> bool:
    """Whether RTP timestamp ``a`` is after ``b`` (modulo 2^32)."""
    return 0 < (a - b) & TS_MASK < HALF_TS


def ts_delta(a: int, b: int) -> int:
    """``a - b`` in clock ticks, the timestamps taken as within 2^31 of each other."""
    return (a - b + HALF_TS) % TS_MOD - HALF_TS


def ts_distance(newer: int, older: int) -> int:
    """Clock ticks from ``older`` forward to ``newer`` (modulo 2^32)."""
    return (newer - older) & TS_MASK


def is_rtcp(packet: Buffer) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192-223 sit where RTP has M+PT.

    (aiortc's own `is_rtcp` only accepts 192-208.)"""
    return len(packet) >= 2 and packet[1] in RTCP_PACKET_TYPES


def build_rtx(packet: Buffer, rtx_ssrc: int, rtx_pt: int, rtx_seq: int) -> bytes:
    """RFC 4588 retransmission: the original header (CSRCs, extensions, marker, ts) with
    the RTX SSRC/PT/seq, then the original seq, then the original payload, unpadded."""
    head = parse_header(packet)
    header = bytearray(packet[: head.payload_offset])
    header[0] &= 0xDF  # padding is not carried over
    header[1] = (header[1] & 0x80) | rtx_pt
    _U16.pack_into(header, 2, rtx_seq & SEQ_MASK)
    _U32.pack_into(header, 8, rtx_ssrc)
    return b"".join(
        (header, _U16.pack(head.sequence_number), packet[head.payload_offset : head.payload_end])
    )


class RtxPayload(NamedTuple):
    """Where an RTX packet carries the original: its seq at `start`, then its payload
    up to `end` (before padding)."""

    original_seq: int
    start: int
    end: int


def rtx_payload(packet: Buffer) -> RtxPayload | None:
    """The original seq an RTX packet carries, None when it carries no media (padding
    only: a bandwidth probe). Raises ValueError if its header is truncated."""
    start = payload_offset(packet)
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    if end - start <= 2:
        return None
    return RtxPayload((packet[start] << 8) | packet[start + 1], start, end)


def restore_rtx(packet: Buffer, rtx: RtxPayload, payload_type: int, ssrc: int) -> bytes:
    """The original packet back out of an RTX packet: the original seq, payload type
    and SSRC in the header, no padding."""
    start = rtx.start
    header = bytearray(packet[:start])
    header[0] &= 0xDF  # no padding any more
    header[1] = (header[1] & 0x80) | payload_type
    header[2:4] = packet[start : start + 2]
    header[8:12] = ssrc.to_bytes(4, "big")
    return bytes(header) + packet[start + 2 : rtx.end]


def build_padding(
    ssrc: int, payload_type: int, seq: int, ts: int, ext_id: int, ext_value: bytes | None,
    size: int = 255,
) -> bytes:
    """A padding-only packet (RFC 3550 5.1, P bit; ``size`` <= 255 bytes of padding, no
    payload), as a sender probes a link with on its RTX stream. With ``ext_value``, it
    carries that one-byte-form header extension element (1 to 16 bytes) as ``ext_id``:
    a bandwidth estimator reads the abs-send-time of every packet it counts."""
    b0 = 0xA0
    ext = b""
    if ext_value and 0 < ext_id < 15 and 0 < len(ext_value) <= 16:
        b0 |= 0x10
        body = bytes([(ext_id << 4) | (len(ext_value) - 1)]) + ext_value
        body += bytes(-len(body) % 4)
        ext = _U16.pack(0xBEDE) + _U16.pack(len(body) // 4) + body
    head = FIXED_HEADER.pack(b0, payload_type & 0x7F, seq & SEQ_MASK, ts & TS_MASK, ssrc)
    return head + ext + bytes(size - 1) + bytes([size])
