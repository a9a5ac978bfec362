"""What a Matroska/WebM file declares, read from its bytes (EBML, RFC 8794/9559)
rather than through FFmpeg, whose probing may overwrite a header's values with
what it finds in the stream; and a check that PyAV decodes every track as declared."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av

_SEGMENT, _TRACKS, _TRACK_ENTRY, _CLUSTER = 0x18538067, 0x1654AE6B, 0xAE, 0x1F43B675
_VIDEO, _AUDIO = 0xE0, 0xE1
_DOCTYPE = 0x4282
CODECS = {"V_VP8": "vp8", "V_MPEG4/ISO/AVC": "h264", "A_OPUS": "opus"}


@dataclass
class Track:
    name: str = ""
    codec_id: str = ""
    private: bytes | None = None
    width: int | None = None
    height: int | None = None
    rate: float | None = None
    channels: int | None = None
    codec_delay: int | None = None
    seek_preroll: int | None = None


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int, bool]:
    first = data[pos]
    length = 9 - first.bit_length()
    value = first if keep_marker else first & (0xFF >> length)
    for i in range(1, length):
        value = (value << 8) | data[pos + i]
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, pos + length, unknown


def _elements(data: bytes, start: int, end: int):
    pos = start
    while pos < end:
        element, pos, _ = _vint(data, pos, True)
        size, pos, unknown = _vint(data, pos, False)
        stop = end if unknown else pos + size
        yield element, pos, stop
        if element == _CLUSTER:
            return  # the header is behind us
        pos = stop


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _track(data: bytes, start: int, end: int) -> Track:
    track = Track()
    simple = {0x536E: "name", 0x86: "codec_id"}
    for element, a, b in _elements(data, start, end):
        body = data[a:b]
        if element in simple:
            setattr(track, simple[element], body.decode())
        elif element == 0x63A2:
            track.private = body
        elif element == 0x56AA:
            track.codec_delay = _uint(body)
        elif element == 0x56BB:
            track.seek_preroll = _uint(body)
        elif element in (_VIDEO, _AUDIO):
            for inner, c, d in _elements(data, a, b):
                if inner == 0xB0:
                    track.width = _uint(data[c:d])
                elif inner == 0xBA:
                    track.height = _uint(data[c:d])
                elif inner == 0xB5:
                    track.rate = struct.unpack(">f" if d - c == 4 else ">d", data[c:d])[0]
                elif inner == 0x9F:
                    track.channels = _uint(data[c:d])
    return track


def header(data: bytes) -> tuple[str, dict[str, Track]]:
    """The file's DocType ("webm" or "matroska") and its tracks by name."""
    doctype, tracks = "", {}
    for element, a, b in _elements(data, 0, len(data)):
        if element == 0x1A45DFA3:
            for inner, c, d in _elements(data, a, b):
                if inner == _DOCTYPE:
                    doctype = data[c:d].decode()
        elif element == _SEGMENT:
            for inner, c, d in _elements(data, a, b):
                if inner == _TRACKS:
                    for entry, e, f in _elements(data, c, d):
                        if entry == _TRACK_ENTRY:
                            track = _track(data, e, f)
                            tracks[track.name] = track
                    return doctype, tracks
    return doctype, tracks


def parse_opus_head(data: bytes) -> dict:
    """RFC 7845 5.1, mapping family 0 (19 bytes)."""
    assert data[:8] == b"OpusHead" and len(data) == 19, data
    version, channels, pre_skip, rate, gain, family = struct.unpack("<BBHIhB", data[8:])
    return dict(version=version, channels=channels, pre_skip=pre_skip, rate=rate, gain=gain,
                family=family)  # fmt: skip


def check_opus_head(data: bytes | None) -> None:
    assert data is not None
    assert parse_opus_head(data) == dict(
        version=1, channels=2, pre_skip=312, rate=48000, gain=0, family=0
    )


def check_declared(
    data: bytes, changing: frozenset[str] = frozenset(), *, allow_empty: bool = False
) -> dict[str, list]:
    """Decode every track of a Matroska/WebM file with PyAV and check that what each
    declares, in its header and as PyAV reports it, is what it holds: its codec; for
    video the size of every frame; for Opus a valid OpusHead, 48 kHz and 2 channels
    in every frame. A track in ``changing`` changes size mid-stream: it declares the
    size of its first frames. A track may hold nothing only with ``allow_empty`` (a
    segment closed before its keyframe came). Returns, per track name, (width, height) per video
    frame or (sample rate, channels) per audio frame."""
    _, tracks = header(data)
    result: dict[str, list] = {}
    with av.open(io.BytesIO(data)) as container:
        for stream in container.streams:
            track = tracks[stream.metadata["title"]]
            context = stream.codec_context
            assert CODECS[track.codec_id] == context.name, (track, context.name)
            if stream.type == "video":
                declared = (track.width, track.height)
                if track.name not in changing:  # FFmpeg's probe reports the latest size
                    assert (context.width, context.height) == declared, (stream, track)
            else:
                check_opus_head(track.private)
                check_opus_head(context.extradata)
                assert (track.rate, track.channels) == (48000, 2), track
                assert (context.sample_rate, context.channels) == (48000, 2)
                declared = (48000, 2)
            if track.codec_id == "V_MPEG4/ISO/AVC":
                assert track.private and track.private[0] == 1  # an avcC record, version 1
            result[track.name] = held = decode(data, stream.index)
            assert held or allow_empty, track.name
            if not held:
                continue
            if track.name in changing:
                assert held[0] == declared, (track.name, declared, held[0])
            else:
                assert set(held) == {declared}, (track.name, declared, set(held))
    return result


def decode(data: bytes, index: int) -> list[tuple[int, int]]:
    with av.open(io.BytesIO(data)) as reader:
        return [_held(frame) for frame in reader.decode(reader.streams[index])]


def _held(frame) -> tuple[int, int]:
    if isinstance(frame, av.VideoFrame):
        return frame.width, frame.height
    return frame.sample_rate, frame.layout.nb_channels
