"""Which packets a subscriber waiting to start a stream may start on.

The codecs' own bits are read in `media.rtp` (the VP8 descriptor, H.264 NAL
headers); this decides per codec.
"""

from __future__ import annotations

from .rtp import Buffer, is_h264_keyframe, is_vp8_keyframe


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
