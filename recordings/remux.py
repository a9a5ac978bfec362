"""Joining a recording's segments into one playable file, in memory or on disk,
without decoding anything: packets are copied from each segment's container into
one output container."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from .errors import NoMedia

WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "libdav1d", "opus", "vorbis"})

# The plaintext segments in order, afresh on each call: they are read twice.
Segments = Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Playback:
    """One continuous playable file, remuxed in memory; iterate it for its bytes."""

    data: bytes = field(repr=False)
    content_type: str
    chunk_size: int = 64 * 1024

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.chunk_size):
            yield self.data[start : start + self.chunk_size]


def track_name(stream: av.stream.Stream) -> str:
    """A segment track's title as the recorder set it (see recordings.tracks)."""
    return stream.metadata.get("title") or f"{stream.type}-{stream.index}"


def remux(recording_id: str, segments: Segments, file: Any, tracks: Collection[str] | None) -> str:
    """Join the segments' packets into one file; returns its content type.

    A segment may bring a track the earlier ones lacked (a camera that started
    late), so the output's tracks are the union over all segments, known after a
    first pass that also verifies every segment before any output is written.
    Timestamps are kept (the recorder's are continuous across segments), shifted
    so that the *recording* starts at zero: the shift comes from every track, not
    just the selected ones, so renditions of a few tracks (one participant's) share
    one time origin and line up when played side by side.
    """
    keep: list[av.container.InputContainer] = []  # templates must outlive add_stream
    try:
        templates, start = _survey(segments, tracks, keep)
        if not templates or start is None:
            which = "" if tracks is None else f" in tracks {sorted(tracks)}"
            raise NoMedia(f"recording {recording_id} has no media to play{which}")
        codecs = {s.codec_context.name for s in templates.values()}
        container_format = "webm" if codecs <= WEBM_CODECS else "matroska"
        output = av.open(file, mode="w", format=container_format)
        targets = {}
        for name, template in templates.items():
            targets[name] = output.add_stream_from_template(template)
            targets[name].metadata["title"] = name
    finally:
        for source in keep:
            source.close()
    _copy_packets(segments, output, targets, start)
    output.close()
    return "video/webm" if container_format == "webm" else "video/x-matroska"


def _survey(
    segments: Segments, tracks: Collection[str] | None, keep: list
) -> tuple[dict[str, av.stream.Stream], Fraction | None]:
    """First pass: a template stream for each wanted track (from the segment it first
    appears in, whose container goes to ``keep``), and the recording's earliest time."""
    templates: dict[str, av.stream.Stream] = {}
    start: Fraction | None = None
    for plaintext in segments():
        source = av.open(io.BytesIO(plaintext), mode="r")
        contributes = False
        for stream in source.streams:
            name = track_name(stream)
            if (tracks is None or name in tracks) and name not in templates:
                templates[name], contributes = stream, True
        for packet in source.demux():
            ts = packet.dts if packet.dts is not None else packet.pts
            if ts is not None and packet.size:
                at = ts * packet.time_base
                start = at if start is None else min(start, at)
        if contributes:
            keep.append(source)
        else:
            source.close()
    return templates, start


def _copy_packets(
    segments: Segments, output: av.container.OutputContainer, targets: dict, start: Fraction
) -> None:
    """Second pass: every packet of a wanted track, shifted so the recording starts
    at zero; packets overlapping the previous segment are dropped."""
    last_dts: dict[str, int] = {}
    for plaintext in segments():
        with av.open(io.BytesIO(plaintext), mode="r") as source:
            names = {s.index: track_name(s) for s in source.streams}
            for packet in source.demux():
                name = names[packet.stream.index]
                pts, dts = packet.pts, packet.dts if packet.dts is not None else packet.pts
                if name not in targets or dts is None or not packet.size:
                    continue
                shift = round(start / packet.time_base)
                if dts - shift < last_dts.get(name, -(2**62)):
                    continue  # overlaps the previous segment: the muxer refuses it
                last_dts[name] = dts - shift
                packet.dts = dts - shift
                packet.pts = None if pts is None else pts - shift
                packet.stream = targets[name]
                output.mux(packet)
