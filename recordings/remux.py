"""Joining a recording's segments into one playable file, in memory or on disk,
without decoding anything: packets are copied from each segment's container into
one output container."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Iterable
from fractions import Fraction
from typing import Any

import av

from .errors import NoMedia

WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "libdav1d", "opus", "vorbis"})

# The plaintext segments in order, afresh on each call: they are read twice.
Segments = Callable[[], Iterable[bytes]]


def track_name(stream: av.stream.Stream) -> str:
    """A segment track's title as the recorder set it (see recordings.tracks)."""
    return stream.metadata.get("title") or f"{stream.type}-{stream.index}"


def remux(recording_id: str, segments: Segments, file: Any, tracks: Collection[str] | None) -> str:
    """Join the segments' packets into one file; returns its content type."""
    with Remux(recording_id, segments, tracks) as job:
        job.write(file)
    return job.content_type


class Remux:
    """One remux, in two steps: surveying the segments (which verifies every one of
    them before any output exists, and tells the container format), then writing.

    A segment may bring a track the earlier ones lacked (a camera that started
    late), so the output's tracks are the union over all segments, known after the
    survey. Timestamps are kept (the recorder's are continuous across segments),
    shifted so that the *recording* starts at zero: the shift comes from every track,
    not just the selected ones, so renditions of a few tracks (one participant's)
    share one time origin and line up when played side by side.
    """

    def __init__(
        self, recording_id: str, segments: Segments, tracks: Collection[str] | None
    ) -> None:
        self._segments = segments
        self._keep: list[av.container.InputContainer] = []  # templates outlive add_stream
        try:
            self._templates, start = _survey(segments, tracks, self._keep)
            if not self._templates or start is None:
                which = "" if tracks is None else f" in tracks {sorted(tracks)}"
                raise NoMedia(f"recording {recording_id} has no media to play{which}")
        except BaseException:
            self.close()
            raise
        self._start = start
        codecs = {s.codec_context.name for s in self._templates.values()}
        self.container_format = "webm" if codecs <= WEBM_CODECS else "matroska"

    @property
    def content_type(self) -> str:
        return "video/webm" if self.container_format == "webm" else "video/x-matroska"

    def write(self, file: Any) -> None:
        # bitexact: the same segments always make the same bytes (no random UIDs), so
        # a playback rebuilt elsewhere still matches the ranges a player already has.
        try:
            output = av.open(
                file, mode="w", format=self.container_format, options={"fflags": "+bitexact"}
            )
            targets = {}
            for name, template in self._templates.items():
                targets[name] = output.add_stream_from_template(template)
                targets[name].metadata["title"] = name
        finally:
            self.close()
        _copy_packets(self._segments, output, targets, self._start)
        output.close()

    def close(self) -> None:
        for source in self._keep:
            source.close()
        self._keep.clear()

    def __enter__(self) -> Remux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
