"""Encoded frames out of forwarded RTP, for the recorder: VP8 frames reassembled
from their packets (RFC 7741), Opus packets taken as they are (RFC 7587).

Only the fixed header and the VP8 payload descriptor are read, nothing is decoded,
and no per-packet objects are built: the recorder sees every packet of every
recorded stream, so this is on the hot path.

Video frames come out in order and only when decodable: a frame is complete when
its packets from the one that starts it (VP8: S=1, partition 0) to the one with the
marker bit are all here, and it follows the previous frame without a hole in the
sequence numbers. A hole is waited for (a retransmission may fill it) for at most
``max_wait_s`` of media time; then the frames around it are given up and nothing
is written until the next keyframe, which is asked for. `VideoFrames` does this for
any codec; `Vp8Frames` and `recordings.h264.H264Frames` read their payloads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from media import REPAIR_WINDOW_S
from media.rtp import (
    HALF_SEQ,
    SEQ_MASK,
    packet_fields,
    ts_delta,
    ts_distance,
    ts_newer,
    vp8_descriptor_size,
    vp8_key_data,
    vp8_starts_frame,
)


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes
    timestamp: int  # RTP timestamp
    keyframe: bool
    arrival: float  # when its first packet arrived


class OpusFrames:
    """Every Opus packet is one frame; late (reordered) packets are dropped."""

    def __init__(self) -> None:
        self.last_ts: int | None = None

    def add(self, packet: bytes, now: float) -> list[Frame]:
        parsed = packet_fields(packet)
        if parsed is None:
            return []
        _, ts, _, _, payload = parsed
        if self.last_ts is not None and not ts_newer(ts, self.last_ts):
            return []
        self.last_ts = ts
        return [Frame(payload, ts, True, now)]


@dataclass(slots=True)
class _Pending:
    arrival: float
    parts: dict[int, bytes] = field(default_factory=dict)  # seq -> the codec's data
    start: int = -1  # seq of the packet that starts the frame
    end: int = -1  # seq of the packet with the marker bit
    keyframe: bool = False

    def assemble(self) -> list[bytes] | None:
        """The frame's packets' data in order, None until they are all here."""
        if self.start < 0 or self.end < 0:
            return None
        count = ((self.end - self.start) & SEQ_MASK) + 1
        if len(self.parts) != count:
            return None
        try:
            return [self.parts[(self.start + i) & SEQ_MASK] for i in range(count)]
        except KeyError:
            return None  # a stray packet with this timestamp stood in for a missing one


class VideoFrames:
    """Video packets in, whole frames out, in order and decodable (see the module).
    A codec says what a payload holds (`_describe`) and how a frame's pieces make
    one frame (`_join`)."""

    codec: ClassVar[str] = "video"

    def __init__(
        self,
        ask_keyframe: Callable[[], None],
        *,
        clock_rate: int = 90000,
        # A hole may be filled for as long as the forwarder asks the publisher for it
        # (plus a round trip on a slow link); a keyframe asked for sooner would cross
        # that same link for nothing.
        max_wait_s: float = REPAIR_WINDOW_S + 0.5,
        max_pending: int = 150,  # 2.5 s at 60 frames/s
    ) -> None:
        self.ask_keyframe = ask_keyframe
        self.max_wait_ticks = int(max_wait_s * clock_rate)
        self.max_pending = max_pending
        self.pending: dict[int, _Pending] = {}  # rtp ts -> its packets so far
        self.last_ts: int | None = None  # of the last frame given out or given up
        self.newest_ts: int | None = None
        self.next_seq = -1  # the seq that must start the next frame; -1: a keyframe must
        self.frames_lost = 0

    def _describe(self, payload: bytes) -> tuple[bytes, bool, bool] | None:
        """(the data to keep, whether the packet can start a frame, whether it shows
        the frame is a keyframe), or None to ignore the packet."""
        raise NotImplementedError

    def _join(self, parts: list[bytes], keyframe: bool) -> bytes | None:
        """One frame out of its packets' data; None if they do not make one."""
        return b"".join(parts)

    def add(self, packet: bytes, now: float) -> list[Frame]:
        parsed = packet_fields(packet)
        if parsed is None:
            return []
        seq, ts, _, marker, payload = parsed
        if self.last_ts is not None and not ts_newer(ts, self.last_ts):
            return []  # a frame already given out or given up: too late
        described = self._describe(payload)
        if described is None:
            return []
        data, starts, keyframe = described
        frame = self.pending.get(ts)
        if frame is None:
            frame = self.pending[ts] = _Pending(now)
            if self.newest_ts is None or ts_newer(ts, self.newest_ts):
                self.newest_ts = ts
        frame.parts[seq] = data
        if starts and (frame.start < 0 or (frame.start - seq) & SEQ_MASK < HALF_SEQ):
            frame.start = seq  # the earliest packet that may start it
        frame.keyframe |= keyframe
        if marker:
            frame.end = seq
        return self._ready()

    def _ready(self) -> list[Frame]:
        out: list[Frame] = []
        newest = self.newest_ts
        while self.pending:
            ts = min(self.pending, key=lambda t: ts_delta(t, newest))  # the oldest
            frame = self.pending[ts]
            parts = frame.assemble()
            data = None if parts is None else self._join(parts, frame.keyframe)
            follows = data is not None and (
                frame.start == self.next_seq or (self.next_seq < 0 and frame.keyframe)
            )
            if follows:
                out.append(Frame(data, ts, frame.keyframe, frame.arrival))
                self.next_seq = (frame.end + 1) & SEQ_MASK
            elif data is not None and self.next_seq < 0:
                pass  # complete, but it cannot be decoded without the frames lost before
            elif parts is not None and data is None:
                self._give_up()  # all here but malformed: as good as lost
            elif (
                ts_distance(newest, ts) > self.max_wait_ticks
                or len(self.pending) > self.max_pending
            ):
                self._give_up()
            else:
                break  # a hole a retransmission may still fill
            del self.pending[ts]
            self.last_ts = ts
        return out

    def _give_up(self) -> None:
        if self.next_seq >= 0:
            self.frames_lost += 1
            self.next_seq = -1
        self.ask_keyframe()


class Vp8Frames(VideoFrames):
    """VP8 packets in (RFC 7741), whole frames out: the payload descriptor is
    dropped, and the packet with S=1 in partition 0 starts a frame."""

    codec = "VP8"

    def _describe(self, payload: bytes) -> tuple[bytes, bool, bool] | None:
        size = vp8_descriptor_size(payload)
        if size < 0:
            return None
        starts = vp8_starts_frame(payload)
        return payload[size:], starts, starts and vp8_key_data(payload, size)
