"""Segment boundaries that follow the media: SessionRecorder driven with synthetic
frames from simulated publishers (fake subscriptions that answer a keyframe request
after a set delay, or never), segments written in memory and read back with PyAV.
Every frame a publisher sent while recording must be in exactly one segment, in
order, and every video track of every segment must start on a keyframe."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import pytest
import structlog

from recordings.reassembly import Frame
from recordings.recorder import ASK_AGAIN_S, KEYFRAME_LEAD_S, ROLL_BOUND_S, SessionRecorder
from recordings.remux import remux

SEGMENT_S = 2.0
VIDEO_MS = 1000 / 30
AUDIO_MS = 20.0
KEY_HEADER = b"\x10\x00\x00\x9d\x01\x2a\x40\x01\xf0\x00"  # a VP8 key frame, 320x240
INTER_HEADER = b"\x01\x00\x00"
OPUS_TOC = b"\xf8"  # 20 ms CELT, mono, one frame


@dataclass
class Publisher:
    """One simulated track: a frame every ``period`` ms from ``start`` on; a key frame
    first, ``answer`` ms after a request (never if None), and at each of ``own``."""

    label: str
    period: float
    start: float = 0.0  # its first frame
    announced: float = 0.0  # when it starts publishing (before its first frame arrives)
    answer: float | None = 40.0
    own: list[float] = field(default_factory=list)
    count: int = 0
    asked_at: float | None = None
    asks: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # frames delivered to the recorder

    @property
    def kind(self) -> str:
        return "audio" if self.label.endswith("audio") else "video"

    @property
    def next_at(self) -> float:
        return self.start + self.count * self.period

    def frame(self) -> Frame:
        at, n = self.next_at, self.count
        self.count += 1
        tag = f"|{self.label}/{n}".encode()
        if self.kind == "audio":
            return Frame(OPUS_TOC + tag, round(at * 48), True, at / 1000)
        key = n == 0 or any(at - self.period < t <= at for t in self.own)
        if self.asked_at is not None and self.answer is not None:
            if at >= self.asked_at + self.answer:
                key, self.asked_at = True, None
        return Frame((KEY_HEADER if key else INTER_HEADER) + tag, round(at * 90), key, at / 1000)


class FakeSubscription:
    def __init__(self, sim: Sim, label: str) -> None:
        self.sim, self.label = sim, label

    @property
    def publishing(self) -> bool:
        publisher = self.sim.publishers.get(self.label)
        return publisher is not None and self.sim.now >= publisher.announced

    def codec(self, payload_type: int):
        return None

    def sender_clock(self):
        return None

    def request_keyframe(self, *, urgent: bool = False) -> None:
        publisher = self.sim.publishers.get(self.label)
        if publisher is not None and self.publishing:
            publisher.asks.append(self.sim.now)
            if publisher.asked_at is None:
                publisher.asked_at = self.sim.now

    def close(self) -> None:
        pass


class FakeMedia:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def add_sink(self, session_id, slot, role, on_packet) -> FakeSubscription:
        return FakeSubscription(self.sim, f"{slot}-{role}")


class Segment(io.BytesIO):
    """An in-memory segment; ``data`` once the recorder has closed (published) it."""

    data: bytes | None = None

    def close(self) -> None:
        if self.data is None:
            self.data = self.getvalue()


class Sim:
    def __init__(self, *publishers: Publisher, segment_s: float = SEGMENT_S) -> None:
        self.publishers = {p.label: p for p in publishers}
        self.now = 0.0
        self.segments: list[Segment] = []
        self.recorder = SessionRecorder(
            FakeMedia(self), "s_1", self.open_segment, segment_s=segment_s, wall=lambda: 0.0
        )
        self.recorder.start()
        self.tracks = {t.label: t for t in self.recorder.tracks}

    def open_segment(self, index: int, tracks: list[str]) -> Segment:
        assert index == len(self.segments) + 1
        self.segments.append(Segment())
        return self.segments[-1]

    def run(self, until: float, stop_when=lambda: False) -> None:
        """Deliver every frame due before ``until`` ms, in time order (none while paused),
        or up to the first after which ``stop_when()`` holds."""
        while True:
            publisher = min(self.publishers.values(), key=lambda p: p.next_at)
            if publisher.next_at >= until:
                self.now = until
                return
            self.now = publisher.next_at
            n, frame = publisher.count, publisher.frame()
            if not self.recorder.paused:
                publisher.sent.append(n)
                track = self.tracks[publisher.label]
                if track.codec_name is None:  # as its first packet tells the recorder
                    track.codec_name = "OPUS" if track.kind == "audio" else "VP8"
                    track.clock_rate = 48000 if track.kind == "audio" else 90000
                self.recorder.on_frame(track, frame)
                if stop_when():
                    return

    def read(self) -> list[dict[str, list[tuple[int, int, bool]]]]:
        """Per segment: track title -> its packets as (frame number, pts, keyframe)."""
        assert all(s.data is not None for s in self.segments), "a segment left open"
        found = []
        for segment in self.segments:
            tracks: dict[str, list[tuple[int, int, bool]]] = {}
            with av.open(io.BytesIO(segment.data)) as container:
                for packet in container.demux():
                    if packet.size:
                        n = int(bytes(packet).rsplit(b"/", 1)[1])
                        tracks.setdefault(packet.stream.metadata["title"], []).append(
                            (n, packet.pts, packet.is_keyframe)
                        )
            found.append(tracks)
        return found


def camera(label: str, **kw) -> Publisher:
    return Publisher(label, VIDEO_MS, **kw)


def microphone(label: str, **kw) -> Publisher:
    return Publisher(label, AUDIO_MS, **kw)


def check(sim: Sim, complete: tuple[str, ...]) -> dict[str, list[int]]:
    """Every segment's video tracks start on a key frame; per track, frames and pts
    strictly increase across segments (continuous, no overlap); the ``complete``
    tracks hold every frame in their publisher's ``sent`` from the first of them
    recorded on. Returns each track's recorded frame numbers."""
    recorder = sim.recorder
    assert recorder.segments_opened == recorder.segments_closed == len(sim.segments)
    recorded: dict[str, list[tuple[int, int]]] = {}
    for number, tracks in enumerate(sim.read(), 1):
        for title, packets in tracks.items():
            if title.endswith("video"):
                assert packets[0][2], f"segment {number}: {title} starts on an interframe"
            recorded.setdefault(title, []).extend((n, pts) for n, pts, _ in packets)
    frames = {}
    for title, packets in recorded.items():
        numbers = [n for n, _ in packets]
        pts = [p for _, p in packets]
        assert numbers == sorted(set(numbers)), f"{title}: frames repeated or out of order"
        assert pts == sorted(set(pts)), f"{title}: timestamps overlap across segments"
        frames[title] = numbers
    for title in complete:
        sent = sim.publishers[title].sent
        first = min(n for n in frames[title] if n in set(sent))
        expected = [n for n in sent if n >= first]
        missing = sorted(set(expected) - set(frames[title]))
        assert not missing, f"{title}: {len(missing)} frames missing: {missing[:20]}"
    return frames


def starts(tracks: dict[str, list[tuple[int, int, bool]]]) -> dict[str, int]:
    return {title: packets[0][1] for title, packets in tracks.items()}


ALL = ("referrer-audio", "referrer-video", "specialist-audio", "specialist-video")


def two_participants(answer: dict[str, float | None], **kw) -> Sim:
    return Sim(
        microphone("referrer-audio"),
        camera("referrer-video", answer=answer.get("referrer", 40.0), **kw.get("referrer", {})),
        microphone("specialist-audio", start=7.0),
        camera("specialist-video", start=11.0, answer=answer.get("specialist", 40.0),
               **kw.get("specialist", {})),
    )  # fmt: skip


def test_each_video_track_moves_over_at_its_own_keyframe():
    sim = two_participants({"referrer": 40.0, "specialist": 400.0})
    sim.run(10_500)
    sim.recorder.stop()
    check(sim, ALL)
    segments = sim.read()
    assert len(segments) >= 5 and sim.recorder.video_holes == 0
    for before, after in zip(segments, segments[1:-1], strict=False):
        begun = starts(after)
        # The slow camera went on in the old segment until its keyframe, which came
        # about 400 ms after the quick one's: each started the new segment at its own.
        late = begun["specialist-video"] - begun["referrer-video"]
        assert 300 <= late <= 500, begun
        assert before["specialist-video"][-1][1] > begun["referrer-video"]
        # Audio moved over with the first camera's keyframe.
        assert abs(begun["referrer-audio"] - begun["referrer-video"]) <= AUDIO_MS, begun
        # Keyframes were asked for shortly before the nominal length, once a segment.
        length = begun["referrer-video"] - min(starts(before).values())
        assert abs(length - 1000 * SEGMENT_S) <= 1000 * KEYFRAME_LEAD_S, (length, begun)
    asks = sim.publishers["referrer-video"].asks
    assert len(asks) <= 2 + len(segments)  # the first segment's, then one per roll
    # Joined, the staggered segments make one file with every frame of every track.
    joined = io.BytesIO()
    remux("r_1", lambda: [s.data for s in sim.segments], joined, None)
    with av.open(io.BytesIO(joined.getvalue())) as container:
        found: dict[str, list[int]] = {}
        for packet in container.demux():
            if packet.size:
                number = int(bytes(packet).rsplit(b"/", 1)[1])
                found.setdefault(packet.stream.metadata["title"], []).append(number)
    assert found == check(sim, ALL)


def test_a_keyframe_that_never_comes_is_waited_for_a_bounded_time():
    # The specialist's camera ignores requests; it sends a key frame on its own at 9 s.
    sim = two_participants({"specialist": None}, specialist={"own": [9000.0]})
    with structlog.testing.capture_logs() as logs:
        sim.run(12_000)
        sim.recorder.stop()
    frames = check(sim, ("referrer-audio", "referrer-video", "specialist-audio"))
    assert sim.recorder.video_holes == 1
    [hole] = [e for e in logs if e["event"] == "recording.segment_hole"]
    assert hole["tracks"] == ["specialist-video"]
    assert ROLL_BOUND_S * 1000 <= hole["waited_ms"] < ROLL_BOUND_S * 1000 + 50
    [closed] = [e for e in logs if e["event"] == "recording.segment_hole_closed"]
    assert closed["track"] == "specialist-video" and closed["frames_dropped"] > 0
    # The first segment waited for it from 1.7 s (asking again every second) to 7 s,
    # then closed: the camera's frames from there until its own key frame are lost.
    asks = [t for t in sim.publishers["specialist-video"].asks if t > 1000]
    assert len(asks) >= ROLL_BOUND_S / ASK_AGAIN_S
    lost = sorted(set(sim.publishers["specialist-video"].sent) - set(frames["specialist-video"]))
    assert lost and 6900 <= 11 + lost[0] * VIDEO_MS and 11 + lost[-1] * VIDEO_MS < 9000
    assert closed["hole_ms"] == pytest.approx(9000 - (11 + (lost[0] - 1) * VIDEO_MS), abs=40)
    first, second = sim.read()[:2]
    # The camera went on in the first segment until the bound (its nominal end at
    # about 2 s, plus ROLL_BOUND_S), while everything else had moved over at 1.8 s.
    assert 7000 <= first["specialist-video"][-1][1] < 7050
    assert first["referrer-video"][-1][1] < 1000 * SEGMENT_S
    assert "specialist-video" not in second  # nothing decodable in it before 9 s
    assert any("specialist-video" in tracks for tracks in sim.read()[2:])  # its own key frame


@pytest.mark.parametrize("end", ["pause", "stop"])
def test_pausing_or_stopping_during_a_roll_keeps_every_frame(end):
    sim = two_participants({"referrer": 40.0, "specialist": 600.0})
    held = lambda: sim.recorder._roll is not None and sim.recorder._roll.held  # noqa: E731
    sim.run(10_000, stop_when=held)  # the quick camera moved over; the slow one has not
    assert sim.recorder._roll is not None
    moved_at = sim.now
    getattr(sim.recorder, end)()
    assert sim.recorder._roll is None and sim.recorder._container is None
    check(sim, ALL)
    # The old segment and a short one of the frames held for the next.
    last = sim.read()[-1]
    assert "referrer-video" in last and "specialist-video" not in last
    assert max(p for packets in last.values() for _, p, _ in packets) <= moved_at
    if end == "pause":
        count = len(sim.segments)
        sim.run(moved_at + 1000)  # nothing is recorded while paused
        assert len(sim.segments) == count
        for publisher in sim.publishers.values():
            publisher.sent.clear()
        sim.recorder.resume()
        sim.run(moved_at + 5000)
        sim.recorder.stop()
        frames = check(sim, ALL)
        # After the pause, each camera starts again at the key frame asked for.
        for title in ("referrer-video", "specialist-video"):
            assert frames[title][0] - sim.publishers[title].sent[0] <= 700 / VIDEO_MS


def test_a_participant_joining_starts_a_segment_without_a_hole():
    sim = Sim(
        microphone("referrer-audio"),
        camera("referrer-video", answer=120.0),
        microphone("specialist-audio", start=3000.0, announced=3000.0),
        camera("specialist-video", start=3005.0, announced=3000.0, answer=None),
    )
    sim.run(4_000)
    sim.recorder.stop()
    check(sim, ALL)
    segments = sim.read()
    [joined] = [i for i, tracks in enumerate(segments) if "specialist-audio" in tracks]
    assert joined >= 1 and "specialist-audio" not in segments[joined - 1]
    begun = starts(segments[joined])
    # The new segment starts at the joiner's first frames; the referrer's camera went
    # on in the old one until the key frame asked for then.
    assert 3000 <= begun["specialist-audio"] <= 3020
    assert 3000 + 120 <= begun["referrer-video"] <= 3000 + 120 + 2 * VIDEO_MS
    assert sim.recorder.video_holes == 0


def test_sender_reports_place_frames_by_their_least_delayed_report():
    """A busy publisher stamps its sender reports late by varying amounts: frames
    keep the earliest placement rather than jumping with each report; a report a
    second or more later is a new publisher's clock and is taken."""
    from media import SenderClock

    sim = Sim(Publisher("referrer-video", period=1000 / 30))
    track = sim.tracks["referrer-video"]
    reports: list[SenderClock] = []
    track.subscription.sender_clock = lambda: reports[-1]
    rate = 90000

    def place(ts: int, arrival: float) -> float:
        return track.seconds(ts, rate, arrival)

    reports.append(SenderClock(wall=100.0, timestamp=0))  # sent 0 s late
    first = place(0, 5.0)
    reports.append(SenderClock(wall=101.3, timestamp=rate))  # frame 1 s on, sent 0.3 s late
    assert place(rate, 6.0) == pytest.approx(first + 1.0)  # where the clock puts it
    reports.append(SenderClock(wall=101.9, timestamp=2 * rate))  # 0.9 s early: a better report
    assert place(2 * rate, 7.0) == pytest.approx(first + 1.9)
    reports.append(SenderClock(wall=105.0, timestamp=3 * rate))  # 2.1 s later: a new clock
    assert place(3 * rate, 8.0) == pytest.approx(first + 5.0)
