"""Which packets a subscriber waiting to start a stream may start on.

The codecs' own bits are read in `media.rtp` (the VP8 descriptor, H.264 NAL
headers); this decides per codec.
"""

from __future__ import annotations

from .rtp import (
    Buffer,
    is_h264_keyframe,
    is_vp8_keyframe,
    vp8_descriptor_size,
    vp8_keyframe_size,
)


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


def keyframe_height(codec_name: str, payload: Buffer) -> int | None:
    """The picture height a packet's keyframe declares (VP8: read from its first
    packet); None for any other packet, or a codec whose size we do not read."""
    if codec_name.rpartition("/")[2].upper() != "VP8" or not is_vp8_keyframe(payload):
        return None
    size = vp8_keyframe_size(bytes(payload[vp8_descriptor_size(payload) :]))
    return size[1] if size else None
