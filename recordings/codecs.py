"""What the recorder needs to know per codec to store a stream as it came, never
decoded: how its RTP becomes frames, what a keyframe says about the stream (size,
codec private data), and a container track that declares exactly that.

- Opus: every track carries an ``OpusHead`` (RFC 7845 5.1) as its CodecPrivate,
  as Matroska's Opus mapping asks; WebM and Matroska alike.
- VP8: the size from each keyframe's header (RFC 6386 9.1); WebM.
- H.264: the size from the SPS and the ``avcC`` record (recordings.avc) built from
  the SPS and PPS every recorded keyframe carries; samples in AVCC form. WebM does
  not allow H.264, so a segment holding it is Matroska.

A track declares one size and one CodecPrivate. The recorder starts a new segment
when a keyframe brings others (a publisher changing resolution, or its encoder its
parameter sets), so every segment's header states what its frames hold.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable

import av

from media.rtp import vp8_keyframe_size

from .avc import stream_config
from .h264 import H264Frames
from .reassembly import OpusFrames, VideoFrames, Vp8Frames
from .remux import WEBM_CODECS

# RTP codec name -> the container codec it is stored as.
RECORDED_CODECS = {"VP8": "vp8", "H264": "h264", "OPUS": "opus"}

OPUS_RATE = 48000  # Opus always decodes at 48 kHz; RTP Opus is "opus/48000/2" (RFC 7587)
OPUS_CHANNELS = 2  # RFC 7587 signals two channels whatever the sender encodes; mono decodes too
# Pre-skip, in 48 kHz samples: what libopus (the encoder of browsers and aiortc) adds
# before its first sample: 2.5 ms of look-ahead and 4 ms of delay compensation, 312
# samples, the value every libopus-made file declares. A recording starts mid-stream,
# past the encoder's own priming, so here it trims 6.5 ms of decoder warm-up at the
# start of a file, which players apply the same way whatever the source.
OPUS_PRE_SKIP = 312

StreamConfig = tuple[tuple[int, int], bytes | None]  # (width, height), CodecPrivate


def opus_head(
    channels: int = OPUS_CHANNELS, pre_skip: int = OPUS_PRE_SKIP, input_rate: int = OPUS_RATE
) -> bytes:
    """The identification header (RFC 7845 5.1): magic, version 1, channel count,
    pre-skip, input sample rate, output gain 0 dB, channel mapping family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


def frames_for(codec: str, ask_keyframe: Callable[[], None]) -> OpusFrames | VideoFrames:
    """The reassembly for an RTP codec name (one of RECORDED_CODECS)."""
    if codec == "OPUS":
        return OpusFrames()
    return H264Frames(ask_keyframe) if codec == "H264" else Vp8Frames(ask_keyframe)


def keyframe_config(codec: str, data: bytes) -> StreamConfig | None:
    """What a video keyframe says of its stream; None if it is not a usable one."""
    if codec == "VP8":
        size = vp8_keyframe_size(data)
        return None if size is None else (size, None)
    if codec == "H264":
        return stream_config(data)
    return None


def container_format(codecs: Iterable[str]) -> str:
    """The segment format for these container codecs: WebM where it allows them all."""
    return "webm" if set(codecs) <= WEBM_CODECS else "matroska"


def add_track(
    container: av.container.OutputContainer,
    codec: str,
    config: StreamConfig | None = None,
) -> av.stream.Stream:
    """A track for ``codec`` ("vp8", "h264", "opus") that declares ``config`` (video)
    or the Opus parameters (audio), for packets muxed as they are.

    A muxing-only stream (``add_mux_stream``) has no codec context, so its
    CodecPrivate cannot be set; this one is made from a template with a codec
    context that is never opened (nothing is encoded): its size and extradata are
    written into the header when the first packet is muxed.
    """
    scratch = av.open(io.BytesIO(), mode="w", format="matroska")
    try:
        stream = container.add_stream_from_template(scratch.add_stream(codec), opaque=True)
    finally:
        scratch.close()
    context = stream.codec_context
    if codec == "opus":
        context.sample_rate = OPUS_RATE
        context.layout = "stereo" if OPUS_CHANNELS == 2 else "mono"
        context.extradata = opus_head()
    elif config is not None:
        (context.width, context.height), context.extradata = config
    return stream


def declares(stream: av.stream.Stream, codec: str, config: StreamConfig | None) -> bool:
    """Whether a track made by `add_track` declares this codec and config."""
    context = stream.codec_context
    if context is None or context.codec.canonical_name != codec:
        return False
    if config is None or context.type != "video":
        return True
    size, private = config
    return (context.width, context.height) == size and context.extradata == private
