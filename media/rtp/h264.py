"""H.264 over RTP (RFC 6184): enough of the NAL unit headers to tell a packet that
a decoder can start from."""

from __future__ import annotations

from .header import Buffer

_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


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
