"""Keyframe detection on RTP payloads, for subscribers waiting to start a stream.

Reads only the payload descriptor and the first bytes of the codec data: enough to
tell that a packet starts a frame the decoder can start from.
"""

from __future__ import annotations

from typing import NamedTuple

Buffer = bytes | bytearray | memoryview

_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


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


class Vp8Layer(NamedTuple):
    """Where a VP8 packet sits in the stream's temporal layers (RFC 7741 4.2)."""

    starts_frame: bool  # S set, partition index 0
    temporal: int | None  # TID; None when the sender marks no layers
    tl0: int | None  # TL0PICIDX: counts the base-layer frames


def vp8_layer(payload: Buffer) -> Vp8Layer | None:
    """The temporal-layer fields of a VP8 packet's descriptor (None if too short)."""
    if vp8_descriptor_size(payload) < 0:
        return None
    starts_frame = payload[0] & 0x17 == 0x10
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


def is_vp8_keyframe(payload: Buffer) -> bool:
    """True for the first packet of a VP8 key frame (RFC 7741).

    The payload descriptor must have S=1 and partition index 0; the VP8 payload header
    after it has its P (inverse key frame) bit clear.
    """
    if len(payload) < 2 or payload[0] & 0x17 != 0x10:  # S set, PID (3 bits) zero
        return False
    pos = vp8_descriptor_size(payload)
    return pos > 0 and not payload[pos] & 0x01


def _h264_key_nal(nal_type: int) -> bool:
    return nal_type == _H264_IDR or nal_type == _H264_SPS


def is_h264_keyframe(payload: Buffer) -> bool:
    """True if the packet carries an SPS or the start of an IDR slice (RFC 6184):
    a single NAL unit, any NAL of a STAP-A, or the first fragment of a FU-A."""
    size = len(payload)
    if size < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < size:
            nal_size = (payload[pos] << 8) | payload[pos + 1]
            if nal_size == 0:
                return False  # malformed: the next length would be read as a NAL header
            if _h264_key_nal(payload[pos + 2] & 0x1F):
                return True
            pos += 2 + nal_size
        return False
    if nal_type == _H264_FU_A:
        return size >= 2 and bool(payload[1] & 0x80) and _h264_key_nal(payload[1] & 0x1F)
    return _h264_key_nal(nal_type)


def is_keyframe(codec_name: str, payload: Buffer) -> bool:
    """Dispatch on the codec name ("VP8", "h264", or a MIME type like "video/VP8").

    Audio and codecs we cannot inspect count as always decodable, so waiting for a
    keyframe never blocks them.
    """
    name = codec_name.rpartition("/")[2].upper()
    if name == "VP8":
        return is_vp8_keyframe(payload)
    if name == "H264":
        return is_h264_keyframe(payload)
    return True
