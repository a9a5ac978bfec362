"""RTCP (RFC 3550 6, RFC 4585, RFC 5104, draft-alvestrand-rmcat-remb): splitting
compound packets, and building and parsing the reports and feedback the forwarder
exchanges. Runs per report or feedback message, not per media packet.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

from .header import SEQ_MASK, TS_MASK, Buffer

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

_U32 = struct.Struct("!I")
_RTCP_HEAD = struct.Struct("!BBH")
_FB_HEAD = struct.Struct("!BBHII")  # common header + sender ssrc + media ssrc
_SR = struct.Struct("!BBHIQIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|lost, ext seq, jitter, lsr, dlsr
_PID_BLP = struct.Struct("!HH")
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


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

    @property
    def loss(self) -> float:
        """The fraction lost as a ratio, 0 to 255/256."""
        return self.fraction_lost / 256


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
                lost.append((pid + bit) & SEQ_MASK)
            blp >>= 1
            bit += 1
    return lost


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """Generic NACK covering `lost` (seq numbers, taken in order, mod 2^16)."""
    fci: list[bytes] = []
    pid = -1
    blp = 0
    for seq in lost:
        seq &= SEQ_MASK
        d = (seq - pid - 1) & SEQ_MASK
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
        highest_sequence & TS_MASK, jitter & TS_MASK, lsr & TS_MASK, dlsr & TS_MASK,
    )  # fmt: skip


def fraction_lost(lost: int, expected: int) -> int:
    """A report block's fraction lost: ``lost`` of ``expected`` in 8-bit fixed point
    (RFC 3550 A.3); 0 when nothing was expected or more arrived than expected."""
    if expected > 0 and lost > 0:
        return (lost << 8) // expected
    return 0


def delay_since(seconds: float) -> int:
    """DLSR: a delay in units of 1/65536 s."""
    return int(seconds * 65536)


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
        rtp_timestamp & TS_MASK, packet_count & TS_MASK, octet_count & TS_MASK,
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
    return int((unix_seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & ((1 << 64) - 1)


def ntp_middle(ntp_timestamp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR a receiver report echoes."""
    return (ntp_timestamp >> 16) & TS_MASK


def ntp_to_unix(ntp_timestamp: int) -> float:
    """The Unix time of a 64-bit NTP timestamp (the inverse of `ntp_time`)."""
    return ntp_timestamp / (1 << 32) - NTP_EPOCH_OFFSET
