"""RTP/RTCP readers and builders only the tests need: the forwarder never parses
header extension elements (it renumbers them in place), never cuts a payload out,
and asks for keyframes with PLI only."""

from __future__ import annotations

import struct

from media.rtp import PSFB_FIR, RTCP_PSFB, RTP_HEADER_SIZE, Buffer, parse_header, payload_offset


def payload(packet: Buffer) -> memoryview:
    """The payload without header or padding, as a zero-copy view."""
    head = parse_header(packet)
    return memoryview(packet)[head.payload_offset : head.payload_end]


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


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """RFC 5104 FIR: the target goes in the FCI; the header's media SSRC is 0."""
    return struct.pack(
        "!BBHIIIB3x", 0x80 | PSFB_FIR, RTCP_PSFB, 4, sender_ssrc, 0, media_ssrc, seq_nr & 0xFF
    )
