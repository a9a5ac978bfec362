"""Segment boundaries lose nothing: two aiortc participants whose cameras draw their
frame counters and whose microphones play their frame counters as pitches are
recorded for 14 s in 4 s segments through a real server; the segments, the export
and each participant's playback are read back frame by frame. (A segment's length
changes only where the cuts fall: the keyframe is asked for the same 0.3 s ahead
of each, as with the default 10 s.)"""

from __future__ import annotations

import asyncio
import io
from fractions import Fraction
from itertools import pairwise

import av
from aiohttp import ClientSession

from recordings.crypto import generate_key_file, load_master_key
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.keys import RECORDING
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.integration.test_media_relay import start_consult
from tests.support.counted import (
    AUDIO_FRAME,
    PITCHES,
    CounterAudioTrack,
    CounterVideoTrack,
    read_counter,
    read_pitch,
)
from tests.support.peers import JisrClient

FPS = 30
RECORD_S = 14
SEGMENT_S = 4
AUDIO_MS = 20
MAX_VIDEO_GAP_MS = 100
MAX_AUDIO_GAP_MS = 30  # beyond the packet's own 20 ms
# Frames still on their way when the stop arrives (in flight, or awaiting a
# retransmission) may be missing at the very end, and only there.
TAIL_FRAMES = 15

Spans = dict[str, tuple[int, int, bool]]  # track -> first pts, last pts, starts on a key


def noop(*_args, **_kwargs) -> None:
    return None


async def test_no_frame_is_lost_at_segment_boundaries(aiohttp_server, tokens, tmp_path):
    key, folder = tmp_path / "master.key", tmp_path / "recordings"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, recordings_dir=folder, recording_segment_s=SEGMENT_S
    )
    server = await aiohttp_server(create_app(settings, store=MemoryStore()))
    base = str(server.make_url("")).rstrip("/")
    cameras = {"referrer": CounterVideoTrack(fps=FPS), "specialist": CounterVideoTrack(fps=FPS)}
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        clients = {}
        try:
            for slot, token in (("referrer", tokens.referrer), ("specialist", tokens.specialist)):
                client = clients[slot] = JisrClient(http, base, token)
                await client.connect()
                assert (await client.join(session_id))["type"] == "joined"
                microphone = CounterAudioTrack()
                await client.start_media(publish=True, video=cameras[slot], audio=microphone)
            for client in clients.values():
                await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)
            referrer, specialist = clients["referrer"], clients["specialist"]
            await specialist.request({"type": "recording.request"})
            await referrer.request({"type": "recording.consent", "consent": True})
            started = await referrer.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "recording"
            )
            recording_id = started["recording_id"]
            recorder = server.app[RECORDING].sessions[session_id].recorder
            first_sent = {slot: camera.sent for slot, camera in cameras.items()}
            await asyncio.wait_for(
                cameras["referrer"].reached(first_sent["referrer"] + RECORD_S * FPS), RECORD_S + 20
            )
            sent_at_stop = {slot: camera.sent for slot, camera in cameras.items()}
            await referrer.request({"type": "recording.stop"})
            await specialist.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "stopped"
            )
            # Playback too: one rendition per participant, remuxed like the export.
            played = {}
            for slot in cameras:
                response = await http.get(
                    f"{base}/api/recordings/{recording_id}/media?participant={slot}",
                    headers=tokens.header(tokens.referrer),
                )
                assert response.status == 200, await response.text()
                played[f"{slot} playback"] = await response.read()
        finally:
            for client in clients.values():
                await client.close()
    assert recorder.segments_opened == recorder.segments_closed
    print(f"video holes left by the recorder: {recorder.video_holes}")

    vault = Vault(FileStorage(folder), load_master_key(key))
    meta = vault.get(recording_id)
    assert meta["state"] == "complete" and meta["segments"] >= 4, meta  # 3 boundaries or more
    segments = [segment_spans(p) for p in vault.read_segments(recording_id, audit=noop)]
    problems = boundary_problems(segments)
    # The cuts on the files' timeline, which starts at the recording's first packet.
    origin = min(first for spans in segments for first, _, _ in spans.values())
    cuts = [min(first for first, _, _ in spans.values()) - origin for spans in segments[1:]]

    exported = vault.export(recording_id, tmp_path / "case.webm", audit=noop)
    for label, data in {"export": exported.read_bytes(), **played}.items():
        print(f"-- {label}")
        times = packet_times(data)
        assert len(times) == (4 if label == "export" else 2), sorted(times)
        problems += [f"{label}: {p}" for p in gap_problems(times, cuts)]
        for name in times:
            if name.endswith("video"):
                slot = name.removesuffix("-video")
                counters = decode_counters(data, name)
                assert None not in counters, f"{label} {name}: an unreadable picture"
                first, last = counters[0], counters[-1]
                missing = sorted(set(range(first, last + 1)) - set(counters))
                repeated = len(counters) - len(set(counters))
                print(f"{name}: frames {first}..{last} ({len(counters)} decoded), publisher "
                      f"sent {first_sent[slot]}..{sent_at_stop[slot]}; missing {len(missing)}: "
                      f"{missing[:40]}, repeated {repeated}")  # fmt: skip
                if counters != list(range(first, last + 1)):
                    problems.append(f"{label} {name}: {len(missing)} missing, {repeated} repeated")
                assert first_sent[slot] <= first < first_sent[slot] + 2 * FPS, (name, first)
                assert last >= sent_at_stop[slot] - TAIL_FRAMES, (name, last, sent_at_stop)
            else:
                pitches = decode_pitches(data, name)
                steps = [(b - a) % PITCHES for a, b in pairwise(pitches) if None not in (a, b)]
                unread = pitches.count(None)
                wrong = [(i, step) for i, step in enumerate(steps) if step != 1]
                print(f"{name}: {len(pitches)} frames decoded, {unread} unread, "
                      f"{len(wrong)} steps other than one frame: {wrong[:20]}")  # fmt: skip
                if unread or wrong:
                    problems.append(f"{label} {name}: {unread} unread, steps {wrong[:20]}")
    assert not problems, problems


def segment_spans(plaintext: bytes) -> Spans:
    with av.open(io.BytesIO(plaintext)) as source:
        spans: Spans = {}
        for packet in source.demux():
            if packet.size and packet.pts is not None:
                name = packet.stream.metadata["title"]
                first, _, key = spans.get(name, (packet.pts, 0, packet.is_keyframe))
                spans[name] = (first, packet.pts, key)
    return spans


def boundary_problems(segments: list[Spans]) -> list[str]:
    """Each segment plays on its own: every video track in it starts on a keyframe.
    Across each boundary every track goes on where it stopped: no overlap, no gap."""
    problems = []
    for number, spans in enumerate(segments, 1):
        print(f"segment {number}: " + ", ".join(
            f"{name} {first}..{last} ms{' (key)' if key else ''}"
            for name, (first, last, key) in sorted(spans.items())
        ))  # fmt: skip
        assert all(key for name, (_, _, key) in spans.items() if name.endswith("video")), spans
    for number, (before, after) in enumerate(pairwise(segments), 1):
        for name in sorted(before.keys() & after.keys()):
            step = after[name][0] - before[name][1]
            limit = MAX_VIDEO_GAP_MS if name.endswith("video") else AUDIO_MS + MAX_AUDIO_GAP_MS
            if not 0 < step <= limit:
                problems.append(f"boundary {number}: {name} steps {step} ms")
    return problems


def packet_times(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """Track title -> its packets' (pts, duration) in ms, in file order."""
    times: dict[str, list[tuple[int, int]]] = {}
    with av.open(io.BytesIO(data)) as container:
        for packet in container.demux():
            if packet.size and packet.pts is not None:
                ms = Fraction(1000) * packet.time_base
                times.setdefault(packet.stream.metadata["title"], []).append(
                    (int(packet.pts * ms), int((packet.duration or 0) * ms))
                )
    return times


def gap_problems(times: dict[str, list[tuple[int, int]]], cuts: list[int]) -> list[str]:
    """Anywhere in the file (the cuts are named in what fails): video frames more
    than MAX_VIDEO_GAP_MS apart, audio packets more than MAX_AUDIO_GAP_MS apart beyond
    their own duration, timestamps that go back."""
    problems = []
    for name, packets in sorted(times.items()):
        video = name.endswith("video")
        limit = MAX_VIDEO_GAP_MS if video else MAX_AUDIO_GAP_MS
        steps = [(a, b - a - (0 if video else d)) for (a, d), (b, _) in pairwise(packets)]
        long = [(at, gap) for at, gap in steps if gap > limit]
        back = [at for (at, _), (b, _) in pairwise(packets) if b <= at]
        print(f"{name}: {len(packets)} packets, {packets[0][0]}..{packets[-1][0]} ms, "
              f"longest gap {max(g for _, g in steps)} ms; over {limit} ms: {long}")  # fmt: skip
        if long:
            problems.append(f"{name}: gaps over {limit} ms (cuts at {cuts}): {long}")
        if back:
            problems.append(f"{name}: timestamps go back at {back[:10]}")
    return problems


def decode_counters(data: bytes, title: str) -> list[int | None]:
    """The frame counter of every decoded picture of a video track, in order."""
    with av.open(io.BytesIO(data)) as container:
        [stream] = [s for s in container.streams if s.metadata.get("title") == title]
        return [read_counter(f.to_ndarray(format="gray")) for f in container.decode(stream)]


def decode_pitches(data: bytes, title: str) -> list[int | None]:
    """The pitch counter of every audio packet of a track, in order."""
    pitches = []
    with av.open(io.BytesIO(data)) as container:
        [stream] = [s for s in container.streams if s.metadata.get("title") == title]
        for packet in container.demux(stream):
            for frame in packet.decode():
                if not pitches and frame.samples < AUDIO_FRAME:
                    continue  # the first frame, shortened by the OpusHead's pre-skip
                samples = frame.to_ndarray()  # planar: one row per channel
                pitches.append(read_pitch(samples[0]))
    return pitches
