"""Recordings any player accepts, through the real parts (aiortc participants, the
forwarder, the recorder, the encrypted vault, the HTTP API, PyAV decoding the
export): an H.264 publisher's camera and screen share recorded as they were sent,
into Matroska; a publisher changing resolution mid-recording; every track of every
file declaring what it holds, Opus tracks with their OpusHead."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession

from recordings.crypto import generate_key_file, load_master_key
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.keys import RECORDING
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.integration.test_media_relay import start_consult
from tests.support.matroska import check_declared, header
from tests.support.peers import JisrClient, PatternVideoTrack

SMALL, LARGE = (320, 240), (640, 360)
SCREEN = (480, 270)
CAMERAS = frozenset({"referrer-video", "specialist-video"})
H264_FIRST = ("video/H264", "video/VP8")  # publishes H.264, still receives VP8


def no_audit(*args, **kwargs) -> None:
    pass


@pytest.fixture
async def node(aiohttp_server, tmp_path):
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, recordings_dir=tmp_path / "recordings", recording_segment_s=2
    )
    server = await aiohttp_server(create_app(settings, store=MemoryStore()))
    vault = Vault(FileStorage(tmp_path / "recordings"), load_master_key(key))
    return server, vault


class Counts:
    """Frames the session's recorder writes, per track (and per size), with an event
    per wish: waiting on what is recorded, not on a clock."""

    def __init__(self, recorder) -> None:
        self.recorder = recorder
        self.frames: dict[tuple[str, tuple[int, int] | None], int] = {}
        self.wishes: list[tuple[dict, asyncio.Event]] = []
        original = recorder.on_frame

        def on_frame(track, frame) -> None:
            before = track.frames
            original(track, frame)
            if track.frames > before:
                key = (track.label, track.size if track.kind == "video" else None)
                self.frames[key] = self.frames.get(key, 0) + 1
                for wanted, event in self.wishes:
                    if all(self.frames.get(k, 0) >= n for k, n in wanted.items()):
                        event.set()

        recorder.on_frame = on_frame  # the tracks call it through their recorder

    async def reach(self, wanted: dict, timeout: float = 20.0) -> None:
        event = asyncio.Event()
        if all(self.frames.get(k, 0) >= n for k, n in wanted.items()):
            event.set()
        self.wishes.append((wanted, event))
        await asyncio.wait_for(event.wait(), timeout)


async def start_recording(http, base, tokens, server, **media) -> tuple[list, str, Counts]:
    """The referrer publishes with ``media["referrer"]``, the specialist with
    ``media["specialist"]``; both consent; returns the clients, the recording's id
    and its frame counts."""
    session_id = await start_consult(http, base, tokens)
    clients = []
    for token, slot in ((tokens.referrer, "referrer"), (tokens.specialist, "specialist")):
        client = JisrClient(http, base, token)
        clients.append(client)
        await client.connect()
        assert (await client.join(session_id))["type"] == "joined"
        await client.start_media(publish=True, **media[slot])
    for client in clients:
        await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)
    referrer, specialist = clients
    await specialist.request({"type": "recording.request"})
    await referrer.request({"type": "recording.consent", "consent": True})
    state = await referrer.expect(
        lambda m: m["type"] == "recording.state" and m["state"] == "recording"
    )
    recorder = server.app[RECORDING].sessions[session_id].recorder
    return clients, state["recording_id"], Counts(recorder)


async def stop(clients: list[JisrClient]) -> None:
    referrer, specialist = clients
    await referrer.request({"type": "recording.stop"})
    await specialist.expect(lambda m: m["type"] == "recording.state" and m["state"] == "stopped")


async def test_an_h264_publishers_camera_and_screen_are_recorded_and_decode(node, tokens):
    server, vault = node
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        h264 = {"video_codecs": H264_FIRST, "video": PatternVideoTrack(*SMALL, 30, 60),
                "screen": PatternVideoTrack(*SCREEN, 10, 255)}  # fmt: skip
        clients, recording_id, counts = await start_recording(
            http, base, tokens, server,
            referrer=h264, specialist={"video": PatternVideoTrack(*SMALL, 30, 200)},
        )  # fmt: skip
        try:
            await counts.reach({
                ("referrer-video", SMALL): 60, ("referrer-screen", SCREEN): 20,
                ("specialist-video", SMALL): 60, ("referrer-audio", None): 100,
            })  # fmt: skip
            recorded = {t.label: t.codec_name for t in counts.recorder.tracks if t.codec_name}
            assert recorded["referrer-video"] == recorded["referrer-screen"] == "H264"
            await stop(clients)
            served = await http.get(
                f"{base}/api/recordings/{recording_id}/media",
                headers=tokens.header(tokens.referrer),
            )
            assert served.status == 200
            assert served.headers["Content-Type"] == "video/x-matroska"  # H.264: not WebM
            body = await served.read()
            vp8_only = await http.get(
                f"{base}/api/recordings/{recording_id}/media?participant=specialist",
                headers=tokens.header(tokens.referrer),
            )
            assert vp8_only.headers["Content-Type"] == "video/webm"
        finally:
            for client in clients:
                await client.close()

    doctype, tracks = header(body)
    assert doctype == "matroska"
    assert tracks["referrer-video"].codec_id == tracks["referrer-screen"].codec_id
    assert tracks["referrer-video"].codec_id == "V_MPEG4/ISO/AVC"
    assert tracks["specialist-video"].codec_id == "V_VP8"
    held = check_declared(body)  # codecs, sizes of every frame, Opus rate, channels, OpusHead
    assert len(held["referrer-video"]) >= 60 and len(held["referrer-screen"]) >= 20
    exported = vault.export(recording_id, vault.storage.root.parent / "h264.mkv", audit=no_audit)
    assert check_declared(exported.read_bytes()).keys() == held.keys()


async def test_a_change_of_resolution_mid_recording(node, tokens):
    server, vault = node
    base = str(server.make_url("")).rstrip("/")
    cameras = {"referrer": PatternVideoTrack(*SMALL, 30, 60),
               "specialist": PatternVideoTrack(*SMALL, 30, 200)}  # fmt: skip
    async with ClientSession() as http:
        clients, recording_id, counts = await start_recording(
            http, base, tokens, server,
            referrer={"video": cameras["referrer"]},
            specialist={"video": cameras["specialist"], "video_codecs": H264_FIRST},
        )  # fmt: skip
        try:
            await counts.reach({(name, SMALL): 30 for name in CAMERAS})
            for camera in cameras.values():  # each encoder starts over at the new size
                camera.width, camera.height = LARGE
            await counts.reach({(name, LARGE): 45 for name in CAMERAS})
            await stop(clients)
        finally:
            for client in clients:
                await client.close()

    segments = list(vault.read_segments(recording_id, audit=no_audit))
    for segment in segments:  # every segment declares exactly what it holds
        check_declared(segment, allow_empty=True)
    exported = vault.export(recording_id, vault.storage.root.parent / "sizes.mkv", audit=no_audit)
    data = exported.read_bytes()
    held = check_declared(data, changing=CAMERAS)
    _, tracks = header(data)
    for name in CAMERAS:
        # The export declares the size its track starts with; the change of size comes
        # with a keyframe, in the stream (VP8's frame header, H.264's SPS).
        assert (tracks[name].width, tracks[name].height) == SMALL
        frames = held[name]
        changes = [i for i in range(1, len(frames)) if frames[i] != frames[i - 1]]
        assert len(changes) == 1 and set(frames[changes[0] :]) == {LARGE}, name
        assert frames.count(SMALL) >= 30 and frames.count(LARGE) >= 45
