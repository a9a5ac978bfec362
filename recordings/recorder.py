"""The recorder: an internal subscriber of a session's forwarded RTP that
reassembles encoded frames and muxes them, never decoded, into encrypted
Matroska/WebM segments.

Each segment is a complete file on its own (every video track starts on a
keyframe), so a crash loses at most the segment being written. Timestamps are
milliseconds since the recording started, continuous across segments. Audio
and video of a participant are placed on the publisher's own clock through its
RTCP sender reports (RTP timestamp <-> wall clock), so they stay in sync.

Segment boundaries follow the media, not the clock, so that no frame is dropped
at one. ``KEYFRAME_LEAD_S`` before a segment reaches its nominal length (or as
soon as a track it lacks shows up: a participant joining, a screen shared) every
publishing video track is asked for a keyframe, and the segment *rolls*: a video
track's frames keep going into it until that track's next keyframe, which with
everything after it belongs to the next segment; audio follows the first video
track over. What belongs to the next segment is held in memory until every video
track has moved over; then the segment is closed and the next one opened with
the held frames, so each track's timeline is continuous and never overlaps from
one segment to the next, and each video track of the new segment starts on its
keyframe. A segment with no publishing video rolls at its nominal length.

Holding the next segment's first frames, rather than writing two containers at
once, keeps one segment open at a time: a crash still loses the segment being
written (and the few hundred milliseconds held for the next one, which the other
way would lose with it as a second, unpublished file), and the vault's handle
keeps publishing segments in order. A keyframe still missing ``ASK_AGAIN_S``
after it was asked for is asked for again; ``ROLL_BOUND_S`` past the nominal
length the segment waits no longer: it is closed, and the late track's frames
are dropped until its keyframe (a hole, logged and counted in ``video_holes``).
Pausing or stopping during a roll ends it at once: the held frames still make a
(short) segment of their own.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import structlog

from media import InternalSubscription, MediaSubscriptions
from media.rtp import RTP_HEADER_SIZE, rtp_payload_type, ts_delta

from .codecs import (
    RECORDED_CODECS,
    StreamConfig,
    add_track,
    container_format,
    declares,
    frames_for,
    keyframe_config,
)
from .reassembly import Frame, OpusFrames, VideoFrames
from .tracks import ROLES, SLOTS, track_title

log = structlog.get_logger("jisr.recordings")

MS = fractions.Fraction(1, 1000)
# Packets wait this long and are then handled together: one warm pass over a batch
# costs a fraction of as many cold calls between other work, and a file has no hurry.
BATCH_S = 0.1
# A sender report placing the stream a second or more later than before: a new clock.
NEW_SENDER_CLOCK_S = 1.0
# Segment boundaries (see the module docstring). A keyframe asked for at the lead
# arrives a round trip and an encode later: about when the segment is due.
KEYFRAME_LEAD_S = 0.3
ASK_AGAIN_S = 1.0
ROLL_BOUND_S = 5.0


class TrackRecorder:
    """One participant's audio or video: RTP in, timed encoded frames out."""

    def __init__(self, recorder: SessionRecorder, slot: str, role: str) -> None:
        self.recorder = recorder
        self.slot = slot
        self.role = role  # "audio", "video" (the camera) or "screen"
        self.kind = "audio" if role == "audio" else "video"
        self.label = track_title(slot, role)
        self.frames_in: OpusFrames | VideoFrames | None = None  # for the codec in use
        self.subscription: InternalSubscription = recorder.media.add_sink(
            recorder.session_id, slot, role, self.on_packet
        )
        self.codec_name: str | None = None
        self.clock_rate = 90000
        self.size: tuple[int, int] | None = None
        self.config: StreamConfig | None = None  # video: size and CodecPrivate, by keyframe
        self.arrival_ref: tuple[int, float] | None = None  # (rtp ts, wall) of the first frame
        self.last_pts = -1
        self.frames = 0
        self.sync_samples: list[float] = []  # sender-clock placement minus arrival, seconds
        self._sender_ref_best: float | None = None  # see _sender_ref

    def on_packet(self, data: bytes) -> None:
        if not self.recorder.paused:
            self.recorder.queue(self, data)

    def handle(self, data: bytes, arrival: float) -> None:
        if len(data) < RTP_HEADER_SIZE:
            return
        codec = self.subscription.codec(rtp_payload_type(data))
        if codec is None or codec.name not in RECORDED_CODECS:
            return
        if codec.name != self.codec_name:
            self.codec_name = codec.name
            self.clock_rate = codec.clock_rate
            self.frames_in = frames_for(codec.name, self.subscription.request_keyframe)
            self.size = self.config = None  # known again from the new codec's first keyframe
        for frame in self.frames_in.add(data, arrival):
            self.recorder.on_frame(self, frame)

    def seconds(self, timestamp: int, clock_rate: int, arrival: float) -> float:
        """Wall-clock time of a frame: from the publisher's sender reports when it has
        sent one (audio and video then share its clock), else from arrival."""
        if self.arrival_ref is None:
            self.arrival_ref = (timestamp, arrival)
        ref_ts, ref_wall = self.arrival_ref
        since_ref = ts_delta(timestamp, ref_ts) / clock_rate
        clock = self.subscription.sender_clock()
        if clock is None:
            return ref_wall + since_ref
        sender_ref = self._sender_ref(clock.wall - ts_delta(clock.timestamp, ref_ts) / clock_rate)
        sender_wall = sender_ref + since_ref
        by_sender = sender_wall + self.recorder.clock_offset(self.slot, sender_wall, arrival)
        self.sync_samples.append(by_sender - arrival)  # per frame: how early it is placed
        del self.sync_samples[:-200]
        return by_sender

    def _sender_ref(self, reported: float) -> float:
        """When the publisher sampled the reference frame, on its clock. A sender
        report stamps a packet's timestamp with the time it was *sent*, which a busy
        publisher does late: each report places the reference a little later than
        it was, by that report's delay. The earliest placement is the least delayed,
        so it is kept (frames otherwise jump by the delay's changes, hundreds of
        milliseconds under load); a placement a second or more later is a new
        publisher's clock (it reconnected) and replaces it."""
        best = self._sender_ref_best
        if best is None or reported < best or reported - best >= NEW_SENDER_CLOCK_S:
            self._sender_ref_best = best = reported
        return best


@dataclass(slots=True)
class _Roll:
    """A segment handing over to the next one (see the module docstring)."""

    due: int  # pts of the segment's nominal end, or of the track that started the roll
    asked: int  # pts when keyframes were last asked for
    moved: set[str] = field(default_factory=set)  # video tracks now in the next segment
    held: list[tuple[TrackRecorder, int, bytes, bool]] = field(default_factory=list)


class SessionRecorder:
    """Records every participant of one session into a vault recording."""

    def __init__(
        self,
        media: MediaSubscriptions,
        session_id: str,
        open_segment: Callable[[int, list[str]], object],
        *,
        segment_s: float = 10.0,
        wall: Callable[[], float] = time.time,
        started_at: float | None = None,
        first_segment: int = 1,
    ) -> None:
        """``started_at`` and ``first_segment`` are given when this continues a
        recording (a new part after its node was lost): timestamps stay on the
        recording's timeline and segment indices follow the earlier part's."""
        self.media = media
        self.session_id = session_id
        # (index, track titles) -> binary sink (an encrypting writer)
        self.open_segment = open_segment
        self.segment_s = segment_s
        self.wall = wall
        self.started_at = wall() if started_at is None else started_at
        self.part_started_at = wall()
        self.paused = False
        self.tracks: list[TrackRecorder] = []
        self.segment_index = first_segment - 1
        self.segments_opened = 0
        self.segments_closed = 0
        self.video_holes = 0  # video tracks left behind at a boundary (a keyframe too late)
        self._container = None
        self._sink = None
        self._streams: dict[str, object] = {}
        self._segment_started: float | None = None
        self._waiting_keyframe: set[str] = set()
        self._roll: _Roll | None = None
        self._holes: dict[str, list[int]] = {}  # left-behind track -> [last pts, dropped]
        self._offsets: dict[str, float] = {}
        self.last_pts = 0
        self._inbox: list[tuple[TrackRecorder, bytes, float]] = []
        self._drain_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.tracks = [TrackRecorder(self, slot, role) for slot in SLOTS for role in ROLES]

    def clock_offset(self, slot: str, sender_wall: float, arrival: float) -> float:
        """Each publisher's clock differs from ours: fixed once per participant so its
        audio and video keep the relation its sender reports give them."""
        return self._offsets.setdefault(slot, arrival - sender_wall)

    def _all_ready(self) -> bool:
        return all(
            t.codec_name and (t.kind == "audio" or t.size)
            for t in self.tracks
            if t.subscription.publishing
        )

    # segments --------------------------------------------------------------
    def _open(self, moved: set[str] = frozenset()) -> None:
        ready = [t for t in self.tracks if t.codec_name and (t.kind == "audio" or t.size)]
        if not ready:
            return
        self.segment_index += 1
        self.segments_opened += 1
        sink = self.open_segment(self.segment_index, [t.label for t in ready])
        self._sink = sink
        codecs = [RECORDED_CODECS[t.codec_name] for t in ready]
        container = av.open(sink, mode="w", format=container_format(codecs), options={"live": "1"})
        self._streams = {}
        for track, name in zip(ready, codecs, strict=True):
            stream = add_track(container, name, track.config)
            stream.time_base = MS
            stream.metadata["title"] = track.label
            self._streams[track.label] = stream
        self._container = container
        self._segment_started = None
        # Video tracks that did not move over in a roll start at their next keyframe.
        self._waiting_keyframe = {t.label for t in ready if t.kind == "video"} - moved
        for track in ready:
            if track.label in self._waiting_keyframe:
                track.subscription.request_keyframe(urgent=True)

    def _close(self) -> None:
        """End the current segment; a roll under way ends at once, nothing dropped."""
        roll, self._roll = self._roll, None
        if roll is not None and roll.held:
            try:
                self._switch(roll, ())
            except Exception:  # noqa: BLE001 - e.g. deleted meanwhile: pausing must not fail
                log.exception(
                    "recording.segment_open_failed",
                    session_id=self.session_id,
                    segment=self.segment_index,
                )
        self._close_container()

    def _close_container(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            container.close()
            self._sink.close()  # publishes the encrypted segment
            self.segments_closed += 1
        except Exception:  # noqa: BLE001 - a failed segment must not stop the call
            log.exception(
                "recording.segment_close_failed",
                session_id=self.session_id,
                segment=self.segment_index,
            )

    def _declared(self, track: TrackRecorder) -> bool:
        """Whether the open segment's track for ``track`` declares its codec and config."""
        if self._container is None or track.label not in self._streams:
            return True  # the next segment will
        codec = RECORDED_CODECS[track.codec_name]
        return declares(self._streams[track.label], codec, track.config)

    def queue(self, track: TrackRecorder, data: bytes) -> None:
        self._inbox.append((track, data, self.wall()))
        if self._drain_timer is None:
            self._drain_timer = asyncio.get_running_loop().call_later(BATCH_S, self.drain)

    def drain(self) -> None:
        """Handle every packet queued so far."""
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        inbox, self._inbox = self._inbox, []
        for track, data, arrival in inbox:
            track.handle(data, arrival)

    def pause(self) -> None:
        self.drain()
        self.paused = True
        self._close()

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        self.drain()
        self._close()
        for track in self.tracks:
            track.subscription.close()

    # frames ----------------------------------------------------------------
    def on_frame(self, track: TrackRecorder, frame: Frame) -> None:
        data = frame.data
        keyframe = False
        if track.kind == "video":
            config = keyframe_config(track.codec_name, data) if frame.keyframe else None
            keyframe = config is not None
            if keyframe:
                track.config, track.size = config, config[0]
            elif track.size is None:
                return  # nothing decodable before this track's first keyframe
        when = track.seconds(frame.timestamp, track.clock_rate, frame.arrival)
        pts = max(int((when - self.started_at) * 1000), track.last_pts + 1)
        track.last_pts = pts
        if self._container is None:
            if (
                self.segments_opened == 0
                and not self._all_ready()
                and frame.arrival - self.part_started_at < 1.5
            ):
                return  # let every publishing track show up before the first segment
            self._open()
            if self._container is None or track.label not in self._streams:
                return
        elif self._roll is None:
            # A new track, or a keyframe of a new size or codec parameters (a segment
            # declares one of each), moves over at once; otherwise the clock decides.
            if track.label not in self._streams or (keyframe and not self._declared(track)):
                self._begin_roll(pts, nominal=False)
            elif self._due(pts):
                self._begin_roll(pts, nominal=True)
        if self._roll is None:
            self._write(track, pts, data, keyframe)
        else:
            self._roll_frame(track, pts, data, keyframe)

    def _write(self, track: TrackRecorder, pts: int, data: bytes, keyframe: bool) -> None:
        """Mux one frame into the current segment."""
        if track.label in self._waiting_keyframe:
            if not keyframe:
                if track.label in self._holes:
                    self._holes[track.label][1] += 1
                return
            self._waiting_keyframe.discard(track.label)
        if self._holes and (hole := self._holes.pop(track.label, None)) is not None:
            log.warning(
                "recording.segment_hole_closed", session_id=self.session_id,
                segment=self.segment_index, track=track.label, hole_ms=pts - hole[0],
                frames_dropped=hole[1],
            )  # fmt: skip
        if self._segment_started is None:
            self._segment_started = pts
        packet = av.Packet(data)
        packet.stream = self._streams[track.label]
        packet.time_base = MS
        packet.pts = packet.dts = pts
        packet.is_keyframe = keyframe or track.kind == "audio"
        self._container.mux(packet)
        track.frames += 1
        self.last_pts = max(self.last_pts, pts)

    # segment boundaries (see the module docstring) ----------------------------
    def _due(self, pts: int) -> bool:
        """Whether the current segment should start rolling at ``pts``."""
        if self._segment_started is None:
            return False
        age, nominal = pts - self._segment_started, self.segment_s * 1000
        if age >= nominal:
            return True
        lead = min(KEYFRAME_LEAD_S, self.segment_s / 4) * 1000
        return age >= nominal - lead and bool(self._rolling_video(()))

    def _rolling_video(self, moved: set[str] | tuple) -> list[TrackRecorder]:
        """The current segment's video tracks that are published, have begun in it
        (one still waiting for its keyframe loses nothing at the cut: it begins in the
        next segment instead), and have not moved over."""
        return [
            t
            for t in self.tracks
            if t.kind == "video"
            and t.label in self._streams
            and t.label not in moved
            and t.label not in self._waiting_keyframe
            and t.subscription.publishing
        ]

    def _begin_roll(self, pts: int, nominal: bool) -> None:
        due = self._segment_started + int(self.segment_s * 1000) if nominal else pts
        self._roll = _Roll(due=due, asked=pts)
        for track in self._rolling_video(()):
            track.subscription.request_keyframe(urgent=True)

    def _roll_frame(self, track: TrackRecorder, pts: int, data: bytes, keyframe: bool) -> None:
        """One frame during a roll: into the current segment, or held for the next."""
        roll = self._roll
        label = track.label
        if label not in self._streams or label in roll.moved:
            moves = True
        elif track.kind == "video":
            moves = keyframe
        else:  # audio follows the first video track over, or goes at once without video
            moves = bool(roll.moved) or not self._rolling_video(roll.moved)
        if moves:
            if track.kind == "video":
                roll.moved.add(label)
            roll.held.append((track, pts, data, keyframe))
        else:
            self._write(track, pts, data, keyframe)
        late = self._rolling_video(roll.moved)
        if not late:
            if roll.held:
                self._roll = None
                self._switch(roll, ())
        elif pts - roll.due >= ROLL_BOUND_S * 1000:
            self._roll = None
            log.warning(
                "recording.segment_hole", session_id=self.session_id, segment=self.segment_index,
                tracks=[t.label for t in late], waited_ms=pts - roll.due,
                holes=self.video_holes + len(late),
            )  # fmt: skip
            self._switch(roll, late)
        elif pts - roll.asked >= ASK_AGAIN_S * 1000:
            roll.asked = pts
            for waiting in late:
                waiting.subscription.request_keyframe(urgent=True)

    def _switch(self, roll: _Roll, late: list[TrackRecorder] | tuple) -> None:
        """Close the current segment and open the next with the frames held for it;
        ``late`` video tracks start in it at their next keyframe (a hole)."""
        self._close_container()
        self._open(roll.moved)
        self.video_holes += len(late)
        for t in late:
            self._holes[t.label] = [t.last_pts, 0]  # closed (and logged) by its keyframe
        if self._container is None:
            return
        for track, pts, data, keyframe in roll.held:
            self._write(track, pts, data, keyframe)

    def av_sync_ms(self) -> dict[str, float]:
        """Per participant: how far apart its audio and video are placed, relative to
        when they actually arrived together (median over frames of sender-clock
        placement minus arrival time, video minus audio)."""
        result = {}
        for slot in SLOTS:
            medians = {}
            for track in self.tracks:
                if track.slot == slot and track.sync_samples:
                    samples = sorted(track.sync_samples)
                    medians[track.role] = samples[len(samples) // 2]
            if "video" in medians and "audio" in medians:
                result[slot] = (medians["video"] - medians["audio"]) * 1000
        return result
