"""Consent-gated, encrypted recording through the real parts: aiortc participants,
the forwarder, the recorder, the vault on disk, PyAV reading the export."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from aiohttp import ClientSession

from recordings.crypto import generate_key_file, load_master_key
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.keys import RECORDING, RECORDS, STORE
from signaling.store import MemoryStore
from tests.conftest import SECRET, make_settings
from tests.integration.test_media_relay import start_consult
from tests.redis_server import free_port
from tests.support.matroska import check_declared
from tests.support.peers import JisrClient, PatternVideoTrack

SIZE = (320, 240)
# A Matroska/WebM header (the EBML version fields after the magic: long enough that
# ciphertext cannot hold them by chance) and the recorder's track titles.
PLAINTEXT_MARKS = (
    bytes.fromhex("4286810142F7810142F2810442F38108"),
    b"referrer-video",
    b"specialist-audio",
)


def scan(folder: Path) -> list[str]:
    """Files under ``folder`` holding anything a reader could recognise."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {m!r}" for m in PLAINTEXT_MARKS if m in data]
    return found


@pytest.fixture
def recording_env(tmp_path):
    key = tmp_path / "master.key"
    generate_key_file(key)
    return {"key": key, "dir": tmp_path / "recordings"}


@pytest.fixture
async def recording_server(aiohttp_server, recording_env):
    """A node that records into ``recording_env``, in segments of 2 s."""
    settings = make_settings(
        recording_key=recording_env["key"], recordings_dir=recording_env["dir"],
        recording_segment_s=2,
    )  # fmt: skip
    return await aiohttp_server(create_app(settings, store=MemoryStore()))


async def published(folder: Path, count: int, timeout: float = 20.0) -> list[Path]:
    """Wait until at least ``count`` segments are published (closed) on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.rglob("seg-*.enc"))
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)  # polling the folder, bounded by the deadline
    raise AssertionError(f"fewer than {count} segments were published")


async def join_all(http, base, tokens, session_id, observer=True):
    people = [(tokens.referrer, 60), (tokens.specialist, 200)]
    clients = []
    for token, shade in people:
        client = JisrClient(http, base, token)
        clients.append(client)
        await client.connect()
        assert (await client.join(session_id))["type"] == "joined"
        await client.start_media(publish=True, video=PatternVideoTrack(*SIZE, 30, shade))
    for client in clients:
        await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)
    return clients


async def test_consented_recording_is_encrypted_and_exports(
    recording_server, tokens, recording_env
):
    server = recording_server
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        referrer, specialist = await join_all(http, base, tokens, session_id)
        observer = JisrClient(http, base, tokens.supervisor)
        await observer.connect()
        await observer.join(session_id)
        try:
            # An observer can neither start nor consent.
            for message in ({"type": "recording.request"},
                            {"type": "recording.consent", "consent": True}):  # fmt: skip
                refused = await observer.request(message)
                assert (refused["type"], refused["code"]) == ("error", "forbidden")

            assert (await specialist.request({"type": "recording.request"}))[
                "type"
            ] == "recording.ok"
            waiting = await referrer.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "requested"
            )
            assert any(c["sub"] == "dr-amal" and c["consent"] is None for c in waiting["consents"])
            assert not any(recording_env["dir"].rglob("seg-*"))  # nothing before consent
            await referrer.request({"type": "recording.consent", "consent": True})
            started = await observer.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "recording"
            )
            recording_id = started["recording_id"]
            for _ in range(6):
                await asyncio.sleep(1)  # recording runs for about 6 s; scan as it goes
                assert scan(recording_env["dir"]) == []
            # Audio and video of each participant placed on one clock (sender reports).
            recorder = server.app[RECORDING].sessions[session_id].recorder
            sync = recorder.av_sync_ms()
            print(f"recording A/V offset per participant (ms): {sync}")
            assert set(sync) == {"referrer", "specialist"}
            assert all(abs(offset) <= 40 for offset in sync.values()), sync
            await referrer.request({"type": "recording.stop"})
            await specialist.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "stopped"
            )
            assert scan(recording_env["dir"]) == []

            # Playback is for the session's participants, supervisors and admins only.
            outsider = await http.get(
                f"{base}/api/recordings/{recording_id}/media",
                headers=tokens.header(tokens.other_referrer),
            )
            assert outsider.status == 404
            assert (await outsider.json())["error"]["code"] == "recording_not_found"
            played = await http.get(
                f"{base}/api/recordings/{recording_id}/media",
                headers=tokens.header(tokens.referrer),
            )
            assert played.status == 200 and played.headers["Content-Type"].startswith("video/")
            assert (await played.read())[:4] == b"\x1a\x45\xdf\xa3"
            # The record store indexes it with its consult (FHIR: a DocumentReference).
            records = server.app[RECORDS]
            assert await records.outbox.drained(10)
            consult_id = (await server.app[STORE].get_session(session_id)).consult_id
            indexed = (await records.reader.recordings([consult_id]))[consult_id]
            assert [(r.id, r.state) for r in indexed] == [(recording_id, "complete")]
            assert indexed[0].duration_s > 4 and indexed[0].ended_at > indexed[0].started_at
        finally:
            for client in (referrer, specialist, observer):
                await client.close()

    vault = Vault(FileStorage(recording_env["dir"]), load_master_key(recording_env["key"]))
    meta = vault.get(recording_id)
    assert meta["state"] == "complete"
    assert meta["tracks"] == [  # noted as segments were published: no decryption to list
        "referrer-audio", "referrer-video", "specialist-audio", "specialist-video",
    ]  # fmt: skip
    assert [e["event"] for e in meta["consent_record"]][:3] == [
        "recording.requested",
        "recording.consented",
        "recording.consented",
    ]
    exported = vault.export(recording_id, recording_env["dir"].parent / "case.webm",
                            audit=lambda *a, **k: None)  # fmt: skip
    check_export(exported, expected_s=6.0)


def check_export(path: Path, expected_s: float, tolerance: float = 0.5) -> None:
    container = av.open(str(path))
    duration = container.duration / av.time_base
    assert abs(duration - expected_s) <= tolerance, duration
    videos = [s for s in container.streams if s.type == "video"]
    audios = [s for s in container.streams if s.type == "audio"]
    assert len(videos) == 2 and audios
    for stream in videos:
        reader = av.open(str(path))
        frames = list(reader.decode(reader.streams.video[videos.index(stream)]))
        assert frames and {(f.width, f.height) for f in frames} == {SIZE}
        assert len(frames) >= 0.8 * 30 * (expected_s - 1)
        reader.close()
    container.close()
    check_declared(path.read_bytes())  # every track as declared; Opus with its OpusHead


async def test_segments_closed_before_a_crash_survive(tokens, tmp_path, recording_env):
    port = free_port()
    env = {
        **os.environ,
        "JISR_PORT": str(port),
        "JISR_JWT_SECRET": SECRET,
        "JISR_ICE_ADDRESSES": "127.0.0.1",
        "JISR_RECORDING_KEY": str(recording_env["key"]),
        "JISR_RECORDINGS_DIR": str(recording_env["dir"]),
        "JISR_RECORDING_SEGMENT_S": "1",
    }
    env.pop("JISR_REDIS_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "signaling.cli", "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with ClientSession() as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{base}/healthz")).status == 200:
                        break
                except OSError:
                    await asyncio.sleep(0.05)  # polling the starting server
            session_id = await start_consult(http, base, tokens)
            referrer, specialist = await join_all(http, base, tokens, session_id)
            await specialist.request({"type": "recording.request"})
            await referrer.request({"type": "recording.consent", "consent": True})
            state = await referrer.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "recording"
            )
            await asyncio.sleep(4)  # about four 1 s segments get closed
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            for client in (referrer, specialist):
                await client.close()
    finally:
        if process.poll() is None:
            process.kill()
    assert scan(recording_env["dir"]) == []
    vault = Vault(FileStorage(recording_env["dir"]), load_master_key(recording_env["key"]))
    assert vault.mark_interrupted_stale() == [state["recording_id"]]
    meta = vault.get(state["recording_id"])
    assert meta["state"] == "interrupted" and meta["segments"] >= 2
    exported = vault.export(state["recording_id"], tmp_path / "partial.webm",
                            audit=lambda *a, **k: None)  # fmt: skip
    container = av.open(str(exported))
    assert container.duration / av.time_base >= 2.0
    frames = list(container.decode(video=0))
    assert frames and frames[0].width == SIZE[0]


async def test_a_shared_screen_is_recorded_as_its_own_track(
    recording_server, tokens, recording_env
):
    base = str(recording_server.make_url("")).rstrip("/")
    screen_size = (640, 360)
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        referrer, specialist = JisrClient(http, base, tokens.referrer), None
        clients = [referrer]
        try:
            await referrer.connect()
            await referrer.join(session_id)
            await referrer.start_media(
                publish=True, video=PatternVideoTrack(*SIZE, 30, 60),
                screen=PatternVideoTrack(*screen_size, 10, 255),
            )  # fmt: skip
            specialist = JisrClient(http, base, tokens.specialist)
            clients.append(specialist)
            await specialist.connect()
            await specialist.join(session_id)
            await specialist.start_media(publish=True, screen_slot=True)
            await asyncio.wait_for(specialist.by_kind("video")[0].first.wait(), 15)
            await referrer.request({"type": "recording.request"})
            await specialist.request({"type": "recording.consent", "consent": True})
            recording_id = (
                await referrer.expect(
                    lambda m: m["type"] == "recording.state" and m["state"] == "recording"
                )
            )["recording_id"]
            await published(recording_env["dir"], 2)
            await referrer.request({"type": "recording.stop"})
        finally:
            for client in clients:
                await client.close()

    vault = Vault(FileStorage(recording_env["dir"]), load_master_key(recording_env["key"]))
    assert "referrer-screen" in vault.get(recording_id)["tracks"]
    exported = vault.export(recording_id, recording_env["dir"].parent / "screen.webm",
                            audit=lambda *a, **k: None)  # fmt: skip
    with av.open(str(exported)) as container:
        [screen] = [s for s in container.streams if s.metadata.get("title") == "referrer-screen"]
        frames = list(container.decode(screen))
    assert frames and {(f.width, f.height) for f in frames} == {screen_size}
