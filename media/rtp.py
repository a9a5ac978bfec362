"""RTP/RTCP building blocks for header-rewriting forwarding: bytes in, bytes out.

Nothing here decodes media or does I/O. The hot path (`StreamRewriter.rewrite`) reads
the 12-byte fixed header with one struct call and writes a new one in front of the
untouched rest of the packet. Everything else (payload offsets, RTX, RTCP) runs per
NACK/feedback message, not per media packet, and stays small and plain.

References: RFC 3550 (RTP/RTCP), RFC 8285 (header extensions), RFC 4585 (feedback),
RFC 5104 (FIR), RFC 4588 (RTX), RFC 5761 (RTP/RTCP mux), draft-alvestrand-rmcat-remb.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

Buffer = bytes | bytearray | memoryview

RTP_HEADER_SIZE = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF
_HALF_SEQ = 0x8000

# RTCP packet types and feedback formats.
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTPFB_NACK = 1
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_AFB = 15  # application layer feedback: REMB

_FIXED = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, seq, ts, ssrc
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_RTCP_HEAD = struct.Struct("!BBH")
_FB_HEAD = struct.Struct("!BBHII")  # common header + sender ssrc + media ssrc
_SR = struct.Struct("!BBHIQIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|lost, ext seq, jitter, lsr, dlsr
_PID_BLP = struct.Struct("!HH")
_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


# --- RTP header -----------------------------------------------------------------


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
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(packet)
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


def payload(packet: Buffer) -> memoryview:
    """The payload without header or padding, as a zero-copy view."""
    head = parse_header(packet)
    return memoryview(packet)[head.payload_offset : head.payload_end]


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


def is_rtcp(packet: Buffer) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192-223 sit where RTP has M+PT.

    (aiortc's own `is_rtcp` only accepts 192-208.)"""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


def header_extensions(packet: Buffer) -> list[tuple[int, bytes]]:
    """RFC 8285 extension elements (id, value), one-byte or two-byte form; padding skipped."""
    payload_offset(packet)  # validates the lengths read below
    b0 = packet[0]
    if not b0 & 0x10:
        return []
    pos = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    profile = (packet[pos] << 8) | packet[pos + 1]
    end = min(pos + 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3]), len(packet))
    pos += 4
    found: list[tuple[int, bytes]] = []
    if profile == 0xBEDE:
        while pos < end:
            head = packet[pos]
            if head == 0:
                pos += 1
                continue
            if head >> 4 == 15:  # reserved id: stop parsing, per RFC 8285
                break
            size = (head & 0x0F) + 1
            found.append((head >> 4, bytes(packet[pos + 1 : pos + 1 + size])))
            pos += 1 + size
    elif profile & 0xFFF0 == 0x1000:
        while pos < end:
            ext_id = packet[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 1 >= end:
                break
            size = packet[pos + 1]
            found.append((ext_id, bytes(packet[pos + 2 : pos + 2 + size])))
            pos += 2 + size
    return found


def _extension_tables(ext_map: Mapping[int, int]) -> tuple[bytes, bytes]:
    """Lookup tables for `_remap_block`: one-byte form element header byte -> new header
    byte, and two-byte form id -> new id; 0 means "blank this element"."""
    one = bytearray(256)
    for head in range(16, 0xF0):
        new_id = ext_map.get(head >> 4)
        if new_id is not None and 0 < new_id < 15:
            one[head] = (new_id << 4) | (head & 0x0F)
    two = bytearray(256)
    for ext_id in range(1, 256):
        new_id = ext_map.get(ext_id)
        if new_id is not None and 0 < new_id < 256:
            two[ext_id] = new_id
    return bytes(one), bytes(two)


_ZEROS = bytes(257)


def _remap_block(block: bytearray, profile: int, one: bytes, two: bytes) -> None:
    """Rewrite extension ids in place; elements the subscriber did not negotiate become
    padding (zero bytes), which RFC 8285 lets receivers skip, so lengths never change."""
    pos = 0
    end = len(block)
    if profile == 0xBEDE:
        while pos < end:
            head = block[pos]
            if not head:
                pos += 1
                continue
            stop = pos + 2 + (head & 0x0F)
            new = one[head]
            if new:
                block[pos] = new
            elif head >= 0xF0:
                break  # id 15: the rest is not to be parsed
            else:
                block[pos:stop] = _ZEROS[: min(stop, end) - pos]
            pos = stop
    elif profile & 0xFFF0 == 0x1000:
        while pos < end:
            ext_id = block[pos]
            if not ext_id:
                pos += 1
                continue
            if pos + 1 >= end:
                block[pos] = 0
                break
            stop = pos + 2 + block[pos + 1]
            new = two[ext_id]
            if new:
                block[pos] = new
            else:
                block[pos:stop] = _ZEROS[: min(stop, end) - pos]
            pos = stop


# --- per-subscriber stream rewriting ----------------------------------------------


class StreamRewriter:
    """Maps one publisher stream onto one subscriber leg's output stream.

    Output sequence numbers and timestamps run on one timeline that never jumps back,
    whatever happens upstream:

    - Within a source, the seq and ts offsets are constant, so reordered and late
      packets land in their own slots.
    - The first forwarded packet anchors the timeline: it gets the next output seq.
      Packets never forwarded before it (waiting for a keyframe) cost no seq number.
    - `switch_source()` re-anchors on the next forwarded packet: the new source may
      have a new SSRC and random seq/ts bases. Late packets of the old source (other
      SSRC, or the same SSRC but older than the anchor) are dropped.
    - `skip(packet)` (and packets with an unmapped payload type) close the output
      sequence over an in-order packet that is deliberately not sent, so subscribers
      see no gap to NACK.
    """

    __slots__ = (
        "ssrc", "pt_map", "frame_ticks", "max_keep_ticks", "_ext_map", "_ext_tables",
        "_pending", "_started", "_gap_ticks", "_in_ssrc", "_max_in", "_ext",
        "_seq_off", "_ts_off", "_steps", "_last_seq", "_last_ts",
    )  # fmt: skip

    def __init__(
        self,
        ssrc: int,
        pt_map: Mapping[int, int],
        *,
        ext_map: Mapping[int, int] | None = None,
        clock_rate: int = 90000,
        frame_ticks: int | None = None,
        seq_start: int | None = None,
        ts_start: int | None = None,
    ) -> None:
        """`pt_map`: input PT -> output PT; packets with other PTs are dropped.
        `ext_map`: input -> output header extension ids (None: extensions untouched).
        `frame_ticks`: the least the output ts advances across a source switch
        (default one 30 fps frame at 90 kHz, 20 ms otherwise, i.e. one Opus frame).
        `seq_start`/`ts_start`: first output values; random by default (RFC 3550)."""
        self.ssrc = ssrc
        self.pt_map = pt_map
        self.set_ext_map(ext_map)
        if frame_ticks is None:
            frame_ticks = clock_rate // 30 if clock_rate >= 90000 else clock_rate // 50
        self.frame_ticks = max(1, frame_ticks)
        # Re-anchoring on the same SSRC keeps the ts offset when the source's own
        # clock moved forward plausibly (a keyframe wait, not a restart).
        self.max_keep_ticks = 300 * clock_rate
        self._pending = True
        self._started = False
        self._gap_ticks = self.frame_ticks
        self._in_ssrc = -1
        self._max_in = 0  # highest input seq of the current source (16 bits)
        self._ext = 0  # the same, extended (never wraps) for late-packet lookups
        self._seq_off = 0
        self._ts_off = 0
        # (first skipped ext seq, first ext seq using off, off), oldest first.
        # Packets below steps[0] are from before the anchor and are dropped.
        self._steps: list[tuple[int, int, int]] = []
        self._last_seq = random.getrandbits(16) if seq_start is None else seq_start & _SEQ_MASK
        self._last_seq = (self._last_seq - 1) & _SEQ_MASK
        self._last_ts = random.getrandbits(32) if ts_start is None else ts_start & _TS_MASK

    def set_ext_map(self, ext_map: Mapping[int, int] | None) -> None:
        """Input -> output header extension ids; None leaves extensions untouched."""
        self._ext_map = ext_map
        self._ext_tables = None if ext_map is None else _extension_tables(ext_map)

    @property
    def ext_map(self) -> Mapping[int, int] | None:
        return self._ext_map

    @ext_map.setter
    def ext_map(self, ext_map: Mapping[int, int] | None) -> None:
        self.set_ext_map(ext_map)

    @property
    def last_sequence_number(self) -> int | None:
        """Output seq of the newest packet sent, None before the first."""
        return self._last_seq if self._started else None

    @property
    def last_timestamp(self) -> int | None:
        return self._last_ts if self._started else None

    def switch_source(self, elapsed_ticks: int | None = None) -> None:
        """The input stream changes (publisher reconnected, new SSRC, new bases).

        The next forwarded packet continues the output timeline: seq + 1, and ts +
        `elapsed_ticks` (clock ticks since the old source's last packet, as the caller
        measured it), but never less than `frame_ticks`.
        """
        self._pending = True
        self._gap_ticks = max(self.frame_ticks, elapsed_ticks or 0)

    def _anchor(self, seq: int, ts: int, ssrc: int) -> None:
        if not self._started:
            self._ts_off = (self._last_ts - ts) & _TS_MASK
        elif not (
            ssrc == self._in_ssrc
            and (ts - (self._last_ts - self._ts_off)) & _TS_MASK <= self.max_keep_ticks
        ):
            self._ts_off = (self._last_ts + self._gap_ticks - ts) & _TS_MASK
        self._seq_off = (self._last_seq + 1 - seq) & _SEQ_MASK
        self._in_ssrc = ssrc
        # Pretend the previous seq was the max so that this packet takes the in-order
        # path; a fresh extended space starts here, so older packets fall below it.
        self._max_in = (seq - 1) & _SEQ_MASK
        self._ext = SEQ_MOD - 1
        self._steps = [(SEQ_MOD, SEQ_MOD, self._seq_off)]
        self._pending = False
        self._started = True

    def rewrite(self, packet: Buffer) -> bytes | None:
        """A new packet with SSRC, PT, seq and ts replaced, or None to drop it."""
        try:
            b0, b1, seq, ts, ssrc = _FIXED.unpack_from(packet)
        except struct.error:
            return None
        out_pt = self.pt_map.get(b1 & 0x7F)
        if out_pt is None:
            self.skip(packet)
            return None
        if self._pending or ssrc != self._in_ssrc:
            if not self._pending or b0 & 0xC0 != 0x80:
                return None
            self._anchor(seq, ts, ssrc)
        delta = (seq - self._max_in) & _SEQ_MASK
        if 0 < delta < _HALF_SEQ:
            # in order (or after a loss): the common case
            self._max_in = seq
            self._ext += delta
            seq = (seq + self._seq_off) & _SEQ_MASK
            ts = (ts + self._ts_off) & _TS_MASK
            self._last_seq = seq
            self._last_ts = ts
        else:
            off = self._late_offset(self._ext - ((SEQ_MOD - delta) & _SEQ_MASK))
            if off is None:
                return None
            seq = (seq + off) & _SEQ_MASK
            ts = (ts + self._ts_off) & _TS_MASK
        head = _FIXED.pack(b0, (b1 & 0x80) | out_pt, seq, ts, self.ssrc)
        if self._ext_tables is not None and b0 & 0x10:
            return self._with_extensions(head, packet, b0)
        return head + packet[RTP_HEADER_SIZE:]

    def _with_extensions(self, head: bytes, packet: Buffer, b0: int) -> bytes | None:
        pos = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
        if len(packet) < pos + 4:
            return None
        end = pos + 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3])
        if len(packet) < end:
            return None
        block = bytearray(packet[pos + 4 : end])
        one, two = self._ext_tables  # type: ignore[misc]
        _remap_block(block, (packet[pos] << 8) | packet[pos + 1], one, two)
        return b"".join((head, packet[RTP_HEADER_SIZE : pos + 4], block, packet[end:]))

    def _late_offset(self, ext: int) -> int | None:
        """Seq offset for a late or duplicate packet; None if it must be dropped."""
        for first_skipped, start, off in reversed(self._steps):
            if ext >= start:
                return off
            if ext >= first_skipped:
                return None  # a duplicate of a skipped packet: its slot was reused
        return None  # from before the anchor

    def skip(self, packet: Buffer) -> None:
        """Declare an input packet deliberately not forwarded. When it is the newest so
        far (the usual case), later packets shift down so the output has no gap; a late
        packet cannot be skipped that way (its neighbours already went out)."""
        if self._pending or len(packet) < RTP_HEADER_SIZE:
            return  # not anchored yet: skipped packets cost nothing anyway
        seq = (packet[2] << 8) | packet[3]
        if _U32.unpack_from(packet, 8)[0] != self._in_ssrc:
            return
        delta = (seq - self._max_in) & _SEQ_MASK
        if not 0 < delta < _HALF_SEQ:
            return
        self._max_in = seq
        self._ext += delta
        self._seq_off = (self._seq_off - 1) & _SEQ_MASK
        steps = self._steps
        first_skipped, start, _ = steps[-1]
        if start == self._ext and first_skipped != start:
            # continues a run of skips: widen that run instead of adding a step
            steps[-1] = (first_skipped, self._ext + 1, self._seq_off)
        else:
            steps.append((self._ext, self._ext + 1, self._seq_off))
            if len(steps) > 64:
                del steps[0]  # packets that late are dropped anyway

    def out_timestamp(self, in_ts: int) -> int | None:
        """Map a timestamp of the current source (e.g. from its sender report)."""
        return None if self._pending else (in_ts + self._ts_off) & _TS_MASK


# --- history and retransmission -----------------------------------------------------


class SentHistory:
    """The last `size` packets sent on one output stream, by output seq, for NACKs."""

    __slots__ = ("_mask", "_seqs", "_packets")

    def __init__(self, size: int = 512) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("history size must be a power of two")
        self._mask = size - 1
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def add(self, seq: int, packet: bytes) -> None:
        i = seq & self._mask
        self._seqs[i] = seq
        self._packets[i] = packet

    def get(self, seq: int) -> bytes | None:
        i = seq & self._mask
        return self._packets[i] if self._seqs[i] == seq else None

    def clear(self) -> None:
        self._seqs = [-1] * len(self._seqs)
        self._packets = [None] * len(self._packets)


def build_rtx(packet: Buffer, rtx_ssrc: int, rtx_pt: int, rtx_seq: int) -> bytes:
    """RFC 4588 retransmission: the original header (CSRCs, extensions, marker, ts) with
    the RTX SSRC/PT/seq, then the original seq, then the original payload, unpadded."""
    head = parse_header(packet)
    header = bytearray(packet[: head.payload_offset])
    header[0] &= 0xDF  # padding is not carried over
    header[1] = (header[1] & 0x80) | rtx_pt
    _U16.pack_into(header, 2, rtx_seq & _SEQ_MASK)
    _U32.pack_into(header, 8, rtx_ssrc)
    return b"".join(
        (header, _U16.pack(head.sequence_number), packet[head.payload_offset : head.payload_end])
    )


# --- RTCP ---------------------------------------------------------------------------


class RtcpItem(NamedTuple):
    """One packet of a compound RTCP packet; data[offset:offset + length] is all of it."""

    packet_type: int
    fmt: int  # feedback format, or the report/source count for other types
    sender_ssrc: int
    media_ssrc: int  # feedback target; first report block's source for SR/RR; else 0
    offset: int
    length: int


class ReportBlock(NamedTuple):
    ssrc: int
    fraction_lost: int
    packets_lost: int  # cumulative, signed 24 bits
    highest_sequence: int  # extended
    jitter: int
    lsr: int
    dlsr: int


class SenderInfo(NamedTuple):
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int


def parse_rtcp(data: Buffer) -> list[RtcpItem]:
    """Split a compound RTCP packet; raises ValueError if malformed."""
    items: list[RtcpItem] = []
    pos = 0
    total = len(data)
    while pos < total:
        if total < pos + 4:
            raise ValueError("RTCP packet is truncated")
        b0, packet_type, words = _RTCP_HEAD.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise ValueError("RTCP packet has a version other than 2")
        length = 4 + 4 * words
        if total < pos + length:
            raise ValueError("RTCP packet is truncated")
        sender = media = 0
        if length >= 8:
            sender = _U32.unpack_from(data, pos + 4)[0]
        if packet_type in (RTCP_RTPFB, RTCP_PSFB) and length >= 12:
            media = _U32.unpack_from(data, pos + 8)[0]
        elif packet_type == RTCP_RR and b0 & 0x1F and length >= 12:
            media = _U32.unpack_from(data, pos + 8)[0]
        elif packet_type == RTCP_SR and b0 & 0x1F and length >= 32:
            media = _U32.unpack_from(data, pos + 28)[0]
        items.append(RtcpItem(packet_type, b0 & 0x1F, sender, media, pos, length))
        pos += length
    return items


def _body_end(packet: Buffer) -> int:
    """End of an RTCP packet's content, before padding."""
    end = 4 + 4 * ((packet[2] << 8) | packet[3])
    if end > len(packet):
        raise ValueError("RTCP packet is truncated")
    if packet[0] & 0x20:
        pad = packet[end - 1]
        if pad == 0 or pad > end - 4:
            raise ValueError("RTCP packet has an invalid padding length")
        end -= pad
    return end


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _FB_HEAD.pack(0x80 | PSFB_PLI, RTCP_PSFB, 2, sender_ssrc, media_ssrc)


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """RFC 5104 FIR: the target goes in the FCI; the header's media SSRC is 0."""
    return _FB_HEAD.pack(0x80 | PSFB_FIR, RTCP_PSFB, 4, sender_ssrc, 0) + struct.pack(
        "!IB3x", media_ssrc, seq_nr & 0xFF
    )


def parse_fir(packet: Buffer) -> list[tuple[int, int]]:
    """(media ssrc, seq nr) for each FCI entry of a FIR."""
    end = _body_end(packet)
    return [(_U32.unpack_from(packet, pos)[0], packet[pos + 4]) for pos in range(12, end - 7, 8)]


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes:
    """REMB: bitrate as an 18-bit mantissa and a 6-bit exponent, then the SSRCs."""
    ssrcs = list(ssrcs)
    exponent = 0
    mantissa = max(0, int(bitrate))
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exponent += 1
    return b"".join(
        (
            _FB_HEAD.pack(0x80 | PSFB_AFB, RTCP_PSFB, 4 + len(ssrcs), sender_ssrc, 0),
            b"REMB",
            struct.pack("!BBH", len(ssrcs), (exponent << 2) | (mantissa >> 16), mantissa & 0xFFFF),
            *(_U32.pack(s) for s in ssrcs),
        )
    )


def parse_remb(packet: Buffer) -> tuple[int, list[int]] | None:
    """(bitrate, ssrcs) of a REMB packet; None if it is another kind of AFB."""
    end = _body_end(packet)
    if end < 20 or bytes(packet[12:16]) != b"REMB":
        return None
    count = packet[16]
    bitrate = (((packet[17] & 0x03) << 16) | (packet[18] << 8) | packet[19]) << (packet[17] >> 2)
    if end < 20 + 4 * count:
        raise ValueError("REMB SSRC list is truncated")
    return bitrate, [_U32.unpack_from(packet, 20 + 4 * i)[0] for i in range(count)]


def parse_nack(packet: Buffer) -> list[int]:
    """Lost seq numbers (mod 2^16) of a generic NACK, from each PID and its BLP bitmask."""
    end = _body_end(packet)
    lost: list[int] = []
    for pos in range(12, end - 3, 4):
        pid, blp = _PID_BLP.unpack_from(packet, pos)
        lost.append(pid)
        bit = 1
        while blp:
            if blp & 1:
                lost.append((pid + bit) & _SEQ_MASK)
            blp >>= 1
            bit += 1
    return lost


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """Generic NACK covering `lost` (seq numbers, taken in order, mod 2^16)."""
    fci: list[bytes] = []
    pid = -1
    blp = 0
    for seq in lost:
        seq &= _SEQ_MASK
        d = (seq - pid - 1) & _SEQ_MASK
        if pid >= 0 and d < 16:
            blp |= 1 << d
            continue
        if pid >= 0:
            fci.append(_PID_BLP.pack(pid, blp))
        pid, blp = seq, 0
    if pid >= 0:
        fci.append(_PID_BLP.pack(pid, blp))
    head = _FB_HEAD.pack(0x80 | RTPFB_NACK, RTCP_RTPFB, 2 + len(fci), sender_ssrc, media_ssrc)
    return head + b"".join(fci)


def _report_block(
    ssrc: int, fraction_lost: int, packets_lost: int, highest_sequence: int,
    jitter: int, lsr: int, dlsr: int,
) -> bytes:  # fmt: skip
    lost = max(-(1 << 23), min(packets_lost, (1 << 23) - 1)) & 0xFFFFFF
    return _REPORT_BLOCK.pack(
        ssrc, ((fraction_lost & 0xFF) << 24) | lost,
        highest_sequence & _TS_MASK, jitter & _TS_MASK, lsr & _TS_MASK, dlsr & _TS_MASK,
    )  # fmt: skip


def build_rr(
    sender_ssrc: int, ssrc: int, fraction_lost: int, packets_lost: int,
    highest_sequence: int, jitter: int, lsr: int, dlsr: int,
) -> bytes:  # fmt: skip
    """Receiver report from `sender_ssrc` with one report block about `ssrc`."""
    return (
        _RTCP_HEAD.pack(0x81, RTCP_RR, 7)
        + _U32.pack(sender_ssrc)
        + _report_block(ssrc, fraction_lost, packets_lost, highest_sequence, jitter, lsr, dlsr)
    )


def build_sr(
    ssrc: int, ntp_timestamp: int, rtp_timestamp: int, packet_count: int, octet_count: int
) -> bytes:
    """Sender report without report blocks; `ntp_timestamp` is 64-bit (see `ntp_time`)."""
    return _SR.pack(
        0x80, RTCP_SR, 6, ssrc, ntp_timestamp & ((1 << 64) - 1),
        rtp_timestamp & _TS_MASK, packet_count & _TS_MASK, octet_count & _TS_MASK,
    )  # fmt: skip


def parse_sr(packet: Buffer) -> SenderInfo:
    if _body_end(packet) < 28:
        raise ValueError("RTCP sender report is truncated")
    _, _, _, ssrc, ntp, rtp_ts, packets, octets = _SR.unpack_from(packet)
    return SenderInfo(ssrc, ntp, rtp_ts, packets, octets)


def parse_report_blocks(packet: Buffer) -> list[ReportBlock]:
    """Report blocks of an SR or RR."""
    first = 28 if packet[1] == RTCP_SR else 8
    count = packet[0] & 0x1F
    if _body_end(packet) < first + 24 * count:
        raise ValueError("RTCP report blocks are truncated")
    blocks = []
    for i in range(count):
        ssrc, lost, ext_seq, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(packet, first + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, ext_seq, jitter, lsr, dlsr))
    return blocks


def ntp_time(unix_seconds: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    return int((unix_seconds + _NTP_EPOCH_OFFSET) * (1 << 32)) & ((1 << 64) - 1)


def ntp_middle(ntp_timestamp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR a receiver report echoes."""
    return (ntp_timestamp >> 16) & _TS_MASK
