"""Recordings checked at rest and their audit trail, where people meet them: a node
serving an encrypted recordings folder over HTTP, ``jisr recordings`` commands run
as processes on the same folder, the node's JSON audit lines, ``/metrics``."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import av
import pytest
import structlog

from recordings.crypto import generate_key_file, load_master_key
from recordings.layout import RELAY_INBOX
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.keys import RECORDING_CHECKS
from signaling.logs import configure_logging
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.integration.test_recording import scan
from tests.integration.test_recording_renditions import mux_segment, record

RID, OTHER_ORG = "r_reviewed01", "r_orgb01"
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 15.0


@pytest.fixture
def folder(tmp_path) -> Path:
    """A recordings folder: a consult's recording (both participants, the referrer
    sharing a screen), and one of another organisation."""
    master = generate_key_file(tmp_path / "master.key")
    vault = Vault(FileStorage(tmp_path / "recordings"), master)
    record(vault, RID, screen=True)
    meta = {"participants": [{"sub": "b-doc"}], "organisations": ["org-b"]}
    handle = vault.create(OTHER_ORG, meta)
    mux_segment(handle.open_segment(1), 0, ("referrer",))
    handle.finish(duration_s=1)
    return tmp_path


@pytest.fixture
def audit_lines():
    """The node's log lines as it writes them (JSON, screened), audit lines only."""
    saved, configured = structlog.get_config(), structlog.is_configured()
    stream = io.StringIO()
    configure_logging(stream=stream)

    def lines() -> list[dict]:
        parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [line for line in parsed if line.get("audit")]

    lines.text = stream.getvalue  # type: ignore[attr-defined]
    yield lines
    configure_logging()
    if configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


async def serve(aiohttp_client, folder: Path, **overrides):
    settings = make_settings(
        recording_key=folder / "master.key", recordings_dir=folder / "recordings",
        attachments_dir=folder / "attachments", recording_trail_relay_s=0.05, **overrides,
    )  # fmt: skip
    return await aiohttp_client(create_app(settings, store=MemoryStore()))


async def jisr(folder: Path, *argv: str) -> tuple[int, str, str]:
    """``jisr recordings …`` of this checkout, as an operator runs it on the node."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JISR_RECORDING_KEY": str(folder / "master.key"),
           "JISR_RECORDINGS_DIR": str(folder / "recordings")}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling.cli", "recordings", *argv, env=env, cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), WAIT_S)
    return process.returncode, out.decode(), err.decode()


async def relayed(client) -> None:
    """Until a relay pass that started after now has finished."""
    checks = client.server.app[RECORDING_CHECKS]
    await asyncio.wait_for(checks.finished("relay", checks.passes["relay"] + 1), WAIT_S)


def titles(path: Path) -> set[str]:
    with av.open(str(path)) as container:
        return {stream.metadata["title"] for stream in container.streams}


async def answer(response, status: int) -> dict:
    assert response.status == status, await response.text()
    return await response.json()


async def get(client, token: str, path: str, status: int = 200) -> dict:
    return await answer(await client.get(path, headers={"Authorization": f"Bearer {token}"}),
                        status)  # fmt: skip


async def test_exports_by_command_are_in_the_servers_trail(aiohttp_client, folder, tokens,
                                                           audit_lines):  # fmt: skip
    client = await serve(aiohttp_client, folder)
    code, out, err = await jisr(folder, "export", RID, "review.webm", "--reason", "second opinion")
    assert code == 0, err
    assert "second opinion" not in err  # the command's own audit line: its length and hash
    assert json.loads(err)["reason"]["chars"] == len("second opinion")
    code, out, err = await jisr(folder, "export", RID, "review.webm", "--per-participant")
    assert code == 0, err
    # One file per participant (camera and microphone together) and per shared screen.
    assert titles(folder / "review.webm") == {
        "referrer-audio", "referrer-video", "referrer-screen", "specialist-audio",
        "specialist-video",
    }  # fmt: skip
    assert titles(folder / "review-referrer.webm") == {"referrer-audio", "referrer-video"}
    assert titles(folder / "review-specialist.webm") == {"specialist-audio", "specialist-video"}
    assert titles(folder / "review-referrer-screen.webm") == {"referrer-screen"}
    assert "exported r_reviewed01 (specialist) to" in out
    assert [json.loads(line)["event"] for line in err.splitlines()] == ["recording.exported"] * 3

    await relayed(client)
    exported = [line for line in audit_lines() if line["event"] == "recording.exported"]
    assert [(e["origin"], e["relayed"], e.get("participant")) for e in exported] == [
        ("cli", True, None), ("cli", True, "referrer"), ("cli", True, "specialist"),
        ("cli", True, "referrer-screen"),
    ]  # fmt: skip
    assert all(e["recording_id"] == RID and e["actor"]["sub"].startswith("cli:") for e in exported)
    assert exported[0]["reason"]["chars"] == len("second opinion")
    assert "second opinion" not in audit_lines.text()  # a typed reason is not logged
    inbox = folder / "recordings" / RELAY_INBOX
    assert not inbox.exists() or list(inbox.iterdir()) == []  # relayed, once

    # The recording's answer holds its trail, for supervisors; not for a participant.
    seen = await get(client, tokens.supervisor, f"/api/recordings/{RID}")
    trail = [(e["event"], e["origin"], e.get("participant")) for e in seen["trail"]]
    assert trail == [("recording.exported", "cli", p)
                     for p in (None, "referrer", "specialist", "referrer-screen")]  # fmt: skip
    assert seen["trail"][0]["reason"] == "second opinion" and seen["trail_total"] == 4
    mine = await get(client, tokens.referrer, f"/api/recordings/{RID}")
    assert "trail" not in mine
    # The node's own playback joins the same trail (and its audit lines, not relayed).
    played = await client.get(f"/api/recordings/{RID}/media?participant=referrer",
                              headers=tokens.header(tokens.supervisor))  # fmt: skip
    assert played.status == 200
    await played.read()
    code, out, err = await jisr(folder, "trail", RID)
    assert code == 0, err
    assert out.count("recording.exported") == 4 and "recording.played" in out
    assert "sup-leila" in out and "(node)" in out and "(cli)" in out


async def test_an_interrupted_recording_has_its_audit_event(aiohttp_client, folder, tokens,
                                                            audit_lines):  # fmt: skip
    vault = Vault(FileStorage(folder / "recordings"), load_master_key(folder / "master.key"))
    handle = vault.create("r_zcut01", {"participants": [{"sub": "dr-amal"}], "node": "n_gone"})
    writer = handle.open_segment(1)
    mux_segment(writer, 0, ("referrer",))
    writer.close()  # published; then its node died mid-recording
    del handle

    # Another recording's verification record altered: it does not stop the check.
    (folder / "recordings" / RID / "verify.enc").write_bytes(os.urandom(64))
    client = await serve(aiohttp_client, folder)  # a node starts and finds it
    seen = await get(client, tokens.supervisor, "/api/recordings/r_zcut01")
    assert seen["state"] == "interrupted" and seen["segments"] == 1
    assert [(e["event"], e["origin"], e["reason"]) for e in seen["trail"]] == [
        ("recording.interrupted", "node", "writer_lost"),
    ]
    lines = [line for line in audit_lines() if line["event"] == "recording.interrupted"]
    assert [(line["recording_id"], line["reason"]) for line in lines] == [
        ("r_zcut01", "writer_lost")
    ]


async def test_scheduled_verification_marks_tampering_and_reports_it(
    aiohttp_client, folder, tokens, audit_lines
):
    segment = folder / "recordings" / RID / "seg-00000002.enc"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x04
    segment.write_bytes(bytes(data))

    client = await serve(aiohttp_client, folder, recording_verify_interval_s=0.2)
    checks = client.server.app[RECORDING_CHECKS]
    await asyncio.wait_for(checks.finished("verify", 0), WAIT_S)

    metrics = await (await client.get("/metrics")).text()
    figures = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in metrics.splitlines() if line.startswith("jisr_recording")}  # fmt: skip
    assert figures['jisr_recordings_verified_total{result="tampered"}'] >= 1
    assert figures['jisr_recordings_verified_total{result="ok"}'] >= 1  # the other organisation's
    assert figures['jisr_recordings_verified_total{result="unreadable"}'] == 0
    assert figures["jisr_recordings_tampered"] == 1
    assert figures["jisr_recording_verify_last_run_timestamp_seconds"] > 1.7e9

    listed = await get(client, tokens.supervisor, "/api/recordings")
    (mine,) = [r for r in listed["recordings"] if r["id"] == RID]
    assert mine["state"] == "tampered" and mine["recorded_state"] == "complete"
    assert mine["verification"]["failures"] == [{"segment": 2, "reason": "authentication_failed"}]
    assert mine["verification"]["by"] == "schedule" and mine["verification"]["verified_at"] > 0
    code, out, err = await jisr(folder, "list")
    assert code == 0 and f"{RID:<24} tampered" in out, err
    assert "segment 2 authentication_failed" in out
    verified = [line for line in audit_lines() if line["event"] == "recording.verified"]
    first = {line["recording_id"]: line for line in reversed(verified)}
    assert first[RID]["result"] == "tampered" and first[OTHER_ORG]["result"] == "ok"
    assert first[RID]["failures"] == [{"segment": 2, "reason": "authentication_failed"}]
    assert scan(folder / "recordings") == []  # no plaintext written by any of it


@pytest.mark.parametrize("path", ["", "/media", "/media?participant=referrer"])
async def test_unknown_foreign_and_malformed_ids_are_refused(aiohttp_client, folder, tokens,
                                                             path):  # fmt: skip
    client = await serve(aiohttp_client, folder)
    supervisor = tokens.header(tokens.supervisor)
    for recording_id in ("r_unknown01", OTHER_ORG):  # another organisation's is not seen
        error = await answer(await client.get(f"/api/recordings/{recording_id}{path}",
                                              headers=supervisor), 404)  # fmt: skip
        assert error["error"]["code"] == "recording_not_found"
    for bad in ("-r", "r" * 129, "r.x", "r%20x", "r%2F..", "%C3%A9"):
        error = await answer(await client.get(f"/api/recordings/{bad}{path}",
                                              headers=supervisor), 400)  # fmt: skip
        assert error["error"]["code"] == "invalid_recording_id", bad
    if not path:  # deletion, by an admin, alike
        admin = tokens.header(tokens.admin)
        assert (await client.delete(f"/api/recordings/{OTHER_ORG}", headers=admin)).status == 404
        assert (await client.delete("/api/recordings/r.x", headers=admin)).status == 400
        assert (folder / "recordings" / OTHER_ORG / "key.json").exists()
