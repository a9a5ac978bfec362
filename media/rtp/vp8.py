"""VP8 over RTP (RFC 7741): the payload descriptor in front of every packet's VP8
data, and the few bits of the VP8 frame header (RFC 6386 9.1) a forwarder or a
recorder needs. Nothing is decoded.
"""

from __future__ import annotations

from typing import NamedTuple

from .header import Buffer


def vp8_descriptor_size(payload: Buffer) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 4.2) that starts ``payload``,
    or -1 if the payload is too short to hold it and at least one byte of VP8 data."""
    size = len(payload)
    if size < 2:
        return -1
    pos = 1
    if payload[0] & 0x80:  # X: extension byte with I, L, T, K flags
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: PictureID, 15 bits when its M bit is set
            if pos >= size:
                return -1
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K share one byte
            pos += 1
    return pos if pos < size else -1


def vp8_starts_frame(payload: Buffer) -> bool:
    """S set and partition index 0: the packet holds the first byte of a frame."""
    return payload[0] & 0x17 == 0x10


def vp8_key_data(payload: Buffer, descriptor_size: int) -> bool:
    """Whether the VP8 data after the descriptor starts a key frame: its payload
    header's P (inverse key frame) bit is clear. Meaningful on a frame's first packet."""
    return not payload[descriptor_size] & 0x01


class Vp8Layer(NamedTuple):
    """Where a VP8 packet sits in the stream's temporal layers (RFC 7741 4.2)."""

    starts_frame: bool  # S set, partition index 0
    temporal: int | None  # TID; None when the sender marks no layers
    tl0: int | None  # TL0PICIDX: counts the base-layer frames


def vp8_layer(payload: Buffer) -> Vp8Layer | None:
    """The temporal-layer fields of a VP8 packet's descriptor (None if too short)."""
    if vp8_descriptor_size(payload) < 0:
        return None
    starts_frame = vp8_starts_frame(payload)
    if not payload[0] & 0x80:
        return Vp8Layer(starts_frame, None, None)
    ext, pos = payload[1], 2
    if ext & 0x80:
        pos += 2 if payload[pos] & 0x80 else 1
    tl0 = None
    if ext & 0x40:
        tl0 = payload[pos]
        pos += 1
    temporal = payload[pos] >> 6 if ext & 0x20 else None
    return Vp8Layer(starts_frame, temporal, tl0)


def vp8_base_frames_between(before: Vp8Layer, after: Vp8Layer) -> int | None:
    """How many base-layer frames started from ``before``'s packet to ``after``'s, as
    TL0PICIDX counts them (modulo 256); None if either lacks the field."""
    if before.tl0 is None or after.tl0 is None:
        return None
    return (after.tl0 - before.tl0) & 0xFF


def is_vp8_keyframe(payload: Buffer) -> bool:
    """True for the first packet of a VP8 key frame (RFC 7741).

    The payload descriptor must have S=1 and partition index 0; the VP8 payload header
    after it has its P (inverse key frame) bit clear.
    """
    if len(payload) < 2 or not vp8_starts_frame(payload):
        return False
    pos = vp8_descriptor_size(payload)
    return pos > 0 and vp8_key_data(payload, pos)


def vp8_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a whole VP8 key frame's header (RFC 6386 9.1), None for
    an interframe or anything too short to be a key frame."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF
