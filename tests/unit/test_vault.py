"""The vault: recordings written by real PyAV muxing into encrypted segments, read
back, exported, streamed, tampered with, shredded, rewrapped and purged."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import av
import pytest
import structlog

from recordings import vault as vault_module
from recordings.cli import add_recordings_commands
from recordings.crypto import (
    MasterKey,
    MasterKeyError,
    TamperedError,
    decrypt_segment,
    load_master_key,
)
from recordings.storage import FileStorage
from recordings.vault import RecordingExists, RecordingNotFound, Vault
from signaling.logs import digest
from tests.unit.test_recording_crypto import EBML_FIELDS, EBML_MAGIC, FPS, MARKER, mux_segment

DAY = 86400.0
T0 = 1_700_000_000.0
RID = "r_casereview01"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class AuditLog(list):
    def __call__(self, event: str, /, **fields) -> None:
        self.append((event, fields))

    def events(self) -> list[str]:
        return [event for event, _ in self]


def metadata(**extra) -> dict:
    return {
        "session_id": "s_1",
        "consult_id": "c_1",
        "participants": [{"sub": "dr-amal", "name": "Dr Amal"}, {"sub": "dr-karim"}],
        "consent_record": [{"event": "recording.consented", "by": "dr-amal", "at": T0}],
        **extra,
    }


def scan(root: Path) -> int:
    """No file under the storage root ever holds Matroska or the plaintext marker."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        assert EBML_FIELDS not in data, path
        assert MARKER not in data, path
    return len(files)


def record(vault: Vault, recording_id: str = RID, segments: int = 3, **meta) -> None:
    """Three one-second segments; a second participant's audio joins in the second
    (a new track, as the recorder does it), and the writers are closed by the vault,
    not the caller, like ``recordings/recorder.py`` does today."""
    handle = vault.create(recording_id, metadata(**meta))
    for index in range(1, segments + 1):
        writer = handle.open_segment(index)
        mux_segment(writer, index - 1, second_audio=index > 1)
    handle.finish(state="complete", ended_at=vault.clock() + segments, duration_s=segments)


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(os.urandom(32))


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vault(root, master, clock) -> Vault:
    return Vault(FileStorage(root), master, clock, chunk_size=4096)


@pytest.fixture
def recorded(vault) -> Vault:
    record(vault)
    return vault


def segment_path(root: Path, index: int, recording_id: str = RID) -> Path:
    return root / recording_id / f"seg-{index:08d}.enc"


def probe(data: bytes) -> dict:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video
        info = {
            "duration": container.duration / 1e6 if container.duration else None,
            "tracks": sorted(s.metadata.get("title", "") for s in container.streams),
            "audio": len(container.streams.audio),
        }
        frames = list(container.decode(video[0])) if video else []
    info["frames"] = len(frames)
    info["sizes"] = {(f.width, f.height) for f in frames}
    info["first_pts"] = float(frames[0].pts * frames[0].time_base) if frames else None
    return info


# writing and reading back ------------------------------------------------------------


def test_nothing_readable_touches_the_disk_while_writing_or_after(vault, root):
    handle = vault.create(RID, metadata())
    seen = 0
    for index in (1, 2, 3):
        writer = handle.open_segment(index)
        container = mux_segment(writer, index - 1, second_audio=index > 1, close=False)
        seen = max(seen, scan(root))  # mid-segment: the .part holds ciphertext only
        container.close()
        writer.close()
        scan(root)
    handle.finish()
    assert scan(root) == 5 and seen >= 3  # key, metadata, three segments
    plaintexts = list(vault.read_segments(RID, audit=AuditLog()))
    assert len(plaintexts) == 3
    assert all(p.startswith(EBML_MAGIC) and MARKER in p for p in plaintexts)
    assert not any(p.name.endswith(".part") for p in root.rglob("*"))


def test_metadata_is_kept_encrypted_and_reported(recorded, root, clock):
    info = recorded.get(RID)
    assert info["recording_id"] == RID and info["state"] == "complete"
    assert info["session_id"] == "s_1" and info["consult_id"] == "c_1"
    assert info["participants"][0]["sub"] == "dr-amal"
    assert info["consent_record"][0]["event"] == "recording.consented"
    assert info["started_at"] == T0 and info["ended_at"] == T0 + 3
    assert info["segments"] == 3 and info["duration_s"] == 3
    assert recorded.list() == [info]
    stored = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    # Markers long enough that random ciphertext cannot contain them by chance.
    assert b"dr-amal" not in stored and b"consent_record" not in stored
    with pytest.raises(RecordingExists):
        recorded.create(RID, metadata())
    with pytest.raises(ValueError, match="invalid recording id"):
        recorded.get("../etc")
    handle = recorded.create("r_other", metadata())
    with pytest.raises(ValueError, match="vault's own"):
        handle.finish(state="complete", segment_indices=[])


def test_export_is_one_playable_file(recorded, tmp_path):
    audit = AuditLog()
    target = tmp_path / "out" / "review.webm"
    target.parent.mkdir()
    assert recorded.export(RID, target, audit=audit, actor={"sub": "sup-leila"}) == target
    data = target.read_bytes()
    assert data.startswith(EBML_MAGIC)
    info = probe(data)
    assert info["frames"] == 3 * FPS and info["sizes"] == {(320, 240)}
    assert info["tracks"] == ["referrer-audio", "referrer-video", "specialist-audio"]
    assert info["audio"] == 2 and 2.9 <= info["duration"] <= 3.2
    assert info["first_pts"] == 0
    with av.open(str(target)) as container:  # every audio packet of every track survives
        per_track = {}
        for packet in container.demux(audio=[0, 1]):
            if packet.size:
                title = packet.stream.metadata["title"]
                per_track[title] = per_track.get(title, 0) + 1
    assert per_track == {"referrer-audio": 150, "specialist-audio": 100}
    assert os.listdir(target.parent) == ["review.webm"]
    assert audit == [
        (
            "recording.exported",
            {
                "recording_id": RID,
                "at": T0,
                "outcome": "ok",
                "path": str(target),
                "actor": {"sub": "sup-leila"},
            },
        )
    ]


def test_stream_plays_in_memory(recorded):
    audit = AuditLog()
    playback = recorded.stream(RID, audit=audit, actor={"sub": "sup-leila"}, ip="10.0.0.5")
    assert playback.content_type == "video/webm"
    data = b"".join(playback)
    assert data == playback.data and len(playback) == len(data)
    info = probe(data)
    assert info["frames"] == 3 * FPS and info["sizes"] == {(320, 240)}
    assert info["audio"] == 2 and 2.9 <= info["duration"] <= 3.2  # seekable: Duration, Cues
    assert audit.events() == ["recording.played"]
    assert audit[0][1]["actor"] == {"sub": "sup-leila"} and audit[0][1]["ip"] == "10.0.0.5"
    one = recorded.stream(RID, audit=audit, tracks={"referrer-video", "referrer-audio"})
    assert probe(one.data)["tracks"] == ["referrer-audio", "referrer-video"]


def test_writer_closed_by_the_recorder_and_by_the_vault_alike(vault, root):
    handle = vault.create(RID, metadata())
    first = handle.open_segment(1)
    mux_segment(first, 0)
    first.close()  # a recorder that closes its sink
    mux_segment(handle.open_segment(2), 1)  # one that only closes its muxer
    with pytest.raises(RecordingExists, match="segment 2"):
        handle.open_segment(2)
    handle.finish()
    assert vault.get(RID)["segments"] == 2
    assert probe(vault.stream(RID, audit=AuditLog()).data)["frames"] == 2 * FPS


# a writer that died ---------------------------------------------------------------


def test_crashed_recording_keeps_every_closed_segment(root, master, clock):
    crashed = Vault(FileStorage(root), master, clock)
    handle = crashed.create(RID, metadata())
    for index in (1, 2):
        clock.now += 1
        mux_segment(handle.open_segment(index), index - 1)
    clock.now += 1
    writer = handle.open_segment(3)  # publishes segment 2, then the process dies mid-3
    mux_segment(writer, 2, close=False)
    writer.flush()
    assert any(p.name.endswith(".part") for p in root.rglob("*"))
    del handle, writer

    restarted = Vault(FileStorage(root), master, Clock(T0 + 100))
    assert restarted.mark_interrupted_stale(is_live=lambda rid: rid == RID) == []
    assert restarted.mark_interrupted_stale() == [RID]
    info = restarted.get(RID)
    assert info["state"] == "interrupted" and info["segments"] == 2
    assert info["ended_at"] == T0 + 3 and info["duration_s"] == 3
    assert not any(p.name.endswith(".part") for p in root.rglob("*"))
    assert probe(restarted.stream(RID, audit=AuditLog()).data)["frames"] == 2 * FPS
    assert restarted.mark_interrupted_stale() == []


def test_a_recording_whose_node_died_continues_as_a_new_part(root, master, clock):
    lost = Vault(FileStorage(root), master, clock)
    handle = lost.create(RID, metadata(node="n_a"))
    mux_segment(handle.open_segment(1), 0)
    writer = handle.open_segment(2)  # publishes segment 1; the node dies mid-2
    mux_segment(writer, 1, close=False)
    writer.flush()
    del handle, writer

    clock.now += 30
    taker = Vault(FileStorage(root), master, clock)
    handle, meta = taker.resume(RID, node="n_b")
    # The unfinished segment is discarded (it could never be read) and its index reused.
    assert handle.next_segment == 2
    assert not any(p.name.endswith(".part") for p in root.rglob("*"))
    assert [(p["node"], p["first_segment"]) for p in meta["parts"]] == [("n_a", 1), ("n_b", 2)]
    assert meta["started_at"] == T0 and meta["node"] == "n_b"
    assert taker.mark_interrupted_stale() == []  # being written again, on this node
    mux_segment(handle.open_segment(2), 1)
    handle.finish()
    info = taker.get(RID)
    assert info["state"] == "complete" and info["segments"] == 2
    assert probe(taker.stream(RID, audit=AuditLog()).data)["frames"] == 2 * FPS
    with pytest.raises(ValueError, match="complete"):
        taker.resume(RID, node="n_c")  # a finished recording stays finished


def test_a_live_recording_is_not_marked_stale(vault):
    handle = vault.create(RID, metadata())
    mux_segment(handle.open_segment(1), 0)
    assert vault.mark_interrupted_stale() == []
    assert vault.get(RID)["state"] == "recording"


# tampering: a clear error, and never partial output ------------------------------------


def flip(root: Path) -> None:
    path = segment_path(root, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(root: Path) -> None:
    path = segment_path(root, 3)
    path.write_bytes(path.read_bytes()[:-10])


def swap(root: Path) -> None:
    one, two = segment_path(root, 1), segment_path(root, 2)
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)


def remove(root: Path) -> None:
    segment_path(root, 2).unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (flip, "segment 2 of recording r_casereview01: chunk .* failed authentication"),
        (truncate, "segment 3 of recording r_casereview01 is truncated"),
        (swap, "segment 1 of recording r_casereview01: chunk 0 failed authentication"),
        (remove, r"recording r_casereview01 is missing segment\(s\) \[2\]"),
    ],
)
def test_tampering_is_detected_and_nothing_is_written(recorded, root, tmp_path, damage, message):
    damage(root)
    out = tmp_path / "out"
    out.mkdir()
    audit = AuditLog()
    with pytest.raises(TamperedError, match=message):
        recorded.export(RID, out / "review.webm", audit=audit, actor={"sub": "adm"})
    assert os.listdir(out) == []
    with pytest.raises(TamperedError, match=message):
        recorded.stream(RID, audit=audit)
    assert audit.events() == ["recording.export_failed", "recording.playback_failed"]
    assert audit[0][1]["outcome"] == "failed" and RID in audit[0][1]["error"]


def test_read_segments_is_all_or_nothing_per_segment(recorded, root):
    flip(root)
    audit = AuditLog()
    segments = recorded.read_segments(RID, audit=audit, actor={"sub": "adm"})
    assert next(segments).startswith(EBML_MAGIC)  # segment 1 is intact
    with pytest.raises(TamperedError, match="segment 2"):
        next(segments)
    assert audit.events() == ["recording.read", "recording.read_failed"]


def test_a_failure_after_output_started_leaves_no_file(recorded, tmp_path, monkeypatch):
    calls = []

    def failing(data, key, rid, index):
        calls.append(index)
        if len(calls) == 6:  # second pass, last segment: the output is half written
            raise TamperedError(f"segment {index} changed while it was read")
        return decrypt_segment(data, key, rid, index)

    monkeypatch.setattr(vault_module, "decrypt_segment", failing)
    with pytest.raises(TamperedError, match="changed while"):
        recorded.export(RID, tmp_path / "review.webm", audit=AuditLog())
    assert calls == [1, 2, 3, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_wrong_master_key_is_a_clear_error(recorded, root, tmp_path):
    other = Vault(FileStorage(root), MasterKey(os.urandom(32)))
    with pytest.raises(MasterKeyError, match="wrapped by master key .* but the loaded master"):
        other.export(RID, tmp_path / "review.webm", audit=AuditLog())
    with pytest.raises(MasterKeyError):
        other.get(RID)
    assert not (tmp_path / "review.webm").exists()
    assert other.list()[0]["state"] == "unreadable"


def test_altered_metadata_is_detected(recorded, root):
    path = root / RID / "meta.enc"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedError, match="metadata of recording r_casereview01"):
        recorded.get(RID)


# crypto-shredding ------------------------------------------------------------------


def test_delete_shreds_the_key_first_and_nothing_is_recoverable(recorded, root, master):
    key_path = root / RID / "key.json"
    wrapped = key_path.read_bytes()
    witness = root.parent / "witness"
    os.link(key_path, witness)  # sees the key file's blocks after it is unlinked
    ciphertexts = {i: segment_path(root, i).read_bytes() for i in (1, 2, 3)}
    audit = AuditLog()

    recorded.delete(RID, audit=audit, actor={"sub": "adm-yusuf"}, reason="consent withdrawn")

    assert not key_path.exists() and not (root / RID).exists()
    assert witness.read_bytes() != wrapped and len(witness.read_bytes()) == len(wrapped)
    assert audit == [
        (
            "recording.deleted",
            {
                "recording_id": RID,
                "at": T0,
                "outcome": "ok",
                "actor": {"sub": "adm-yusuf"},
                "reason": "consent withdrawn",
            },
        )
    ]
    with pytest.raises(RecordingNotFound, match="does not exist"):
        recorded.get(RID)
    assert recorded.list() == []
    with pytest.raises(RecordingNotFound):
        next(recorded.read_segments(RID, audit=AuditLog()))
    # Even with the ciphertext restored from a backup, the master key opens nothing.
    for index, data in ciphertexts.items():
        segment_path(root, index).parent.mkdir(exist_ok=True)
        segment_path(root, index).write_bytes(data)
    fresh = Vault(FileStorage(root), master)
    with pytest.raises(RecordingNotFound):
        fresh.get(RID)
    with pytest.raises(TamperedError):
        decrypt_segment(ciphertexts[1], os.urandom(32), RID, 1)
    with pytest.raises(RecordingNotFound):
        recorded.delete("r_never", audit=audit)
    assert audit.events()[-1] == "recording.delete_failed"


def test_deleting_during_recording_stops_the_writer(vault, root):
    handle = vault.create(RID, metadata())
    writer = handle.open_segment(1)
    mux_segment(writer, 0)
    vault.delete(RID, audit=AuditLog())
    writer.close()  # the segment in flight does not outlive its key
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"the muxer's next packet")
    assert not (root / RID).exists()
    with pytest.raises(RecordingNotFound, match="was deleted"):
        handle.open_segment(2)


# master key rotation ---------------------------------------------------------------


def test_rotation_rewraps_every_key(root, master, clock, tmp_path):
    vault = Vault(FileStorage(root), master, clock)
    record(vault, "r_one", segments=1)
    record(vault, "r_two", segments=1)
    new = MasterKey(os.urandom(32))
    assert vault.rotate_master_key(new) == 2
    assert vault.master_key_id == new.key_id
    assert json.loads((root / "r_one" / "key.json").read_bytes())["master_key_id"] == new.key_id
    with pytest.raises(MasterKeyError):
        Vault(FileStorage(root), master).get("r_one")
    rotated = Vault(FileStorage(root), new)
    assert [r["state"] for r in rotated.list()] == ["complete", "complete"]
    rotated.export("r_two", tmp_path / "two.webm", audit=AuditLog())
    assert probe((tmp_path / "two.webm").read_bytes())["frames"] == FPS
    assert rotated.rotate_master_key(new) == 0


def test_rotation_can_be_rerun_after_a_crash(root, master, clock, monkeypatch):
    storage = FileStorage(root)
    vault = Vault(storage, master, clock)
    for rid in ("r_one", "r_two", "r_three"):
        record(vault, rid, segments=1)
    new = MasterKey(os.urandom(32))
    put = storage.put
    puts = []

    def crash_on_second(name, data):
        puts.append(name)
        if len(puts) == 2:
            raise OSError("power lost")
        put(name, data)

    monkeypatch.setattr(storage, "put", crash_on_second)
    with pytest.raises(OSError, match="power lost"):
        vault.rotate_master_key(new)
    monkeypatch.setattr(storage, "put", put)

    rerun = Vault(FileStorage(root), master, clock)
    assert rerun.rotate_master_key(new) == 2
    assert [r["state"] for r in Vault(FileStorage(root), new).list()] == ["complete"] * 3


# retention -------------------------------------------------------------------------


def test_purge_by_age(root, master, clock):
    vault = Vault(FileStorage(root), master, clock)
    record(vault, "r_old", segments=1)
    clock.now = T0 + 20 * DAY
    record(vault, "r_recent", segments=1)
    live = vault.create("r_live_old", metadata(started_at=T0 - DAY))  # still recording
    (root / "r_orphan").mkdir()  # a deletion cut short after the key was destroyed
    (root / "r_orphan" / "seg-00000001.enc").write_bytes(os.urandom(100))

    clock.now = T0 + 40 * DAY
    audit = AuditLog()
    assert vault.purge_older_than(30, audit=audit, actor={"sub": "retention"}) == ["r_old"]
    assert sorted(r["recording_id"] for r in vault.list()) == ["r_live_old", "r_recent"]
    assert not (root / "r_old").exists() and not (root / "r_orphan").exists()
    assert [(e, f["recording_id"], f["reason"]) for e, f in audit] == [
        ("recording.deleted", "r_old", "retention"),
        ("recording.deleted", "r_orphan", "interrupted_deletion"),
    ]
    assert audit[0][1]["older_than_days"] == 30 and audit[0][1]["actor"] == {"sub": "retention"}
    clock.now = T0 + 60 * DAY
    assert vault.purge_older_than(30, audit=audit) == ["r_recent"]
    assert live.recording_id == "r_live_old"
    with pytest.raises(ValueError):
        vault.purge_older_than(-1, audit=audit)


# the command line ------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="jisr")
    add_recordings_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["recordings", *argv])
    return args.func(args)


@pytest.fixture
def structlog_config():
    saved = structlog.get_config()
    configured = structlog.is_configured()
    yield
    if configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def test_cli(tmp_path, monkeypatch, capsys, structlog_config):
    key_file, new_key_file = tmp_path / "master.key", tmp_path / "new.key"
    store = tmp_path / "store"
    monkeypatch.delenv("JISR_RECORDING_KEY", raising=False)
    monkeypatch.setenv("JISR_RECORDINGS_DIR", str(store))
    assert run_cli("list") == 2
    assert "JISR_RECORDING_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("JISR_RECORDING_KEY", str(key_file))
    assert run_cli("list") == 2
    assert "init-key" in capsys.readouterr().err

    assert run_cli("init-key", str(key_file)) == 0 and run_cli("init-key", str(new_key_file)) == 0
    assert run_cli("init-key", str(key_file)) == 2
    record(Vault(FileStorage(store), load_master_key(key_file), Clock()), segments=2)
    capsys.readouterr()

    assert run_cli("list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["recording_id"], r["segments"]) for r in listed] == [(RID, 2)]
    assert run_cli("list") == 0 and RID in capsys.readouterr().out

    with structlog.testing.capture_logs() as logs:
        assert run_cli("export", RID, str(tmp_path / "review.webm"), "--reason", "M&M") == 0
        assert run_cli("rotate-key", "--new-key", str(new_key_file)) == 0
    assert probe((tmp_path / "review.webm").read_bytes())["frames"] == 2 * FPS
    assert [(e["event"], e["audit"]) for e in logs] == [
        ("recording.exported", True),
        ("recordings.key_rotated", True),
    ]
    assert logs[0]["actor"]["sub"].startswith("cli:")
    # A typed reason is free text: the command's own audit line keeps its length and
    # hash, as the server's relayed line does; the sealed journal keeps the text.
    assert logs[0]["reason"] == {"chars": 3, "sha256": digest("M&M")["sha256"]}
    assert "M&M" not in json.dumps(logs)
    journal = Vault(FileStorage(store), load_master_key(new_key_file)).trail.events(RID)
    assert [e["reason"] for e in journal if e["event"] == "recording.exported"] == ["M&M"]
    capsys.readouterr()
    assert run_cli("list") == 0  # the old key no longer opens anything...
    assert "unreadable" in capsys.readouterr().out
    monkeypatch.setenv("JISR_RECORDING_KEY", str(new_key_file))
    with structlog.testing.capture_logs() as logs:
        assert run_cli("purge", "--older-than-days", "0") == 0  # ...the new one does
    assert [e["event"] for e in logs] == ["recording.deleted"]
    assert RID in capsys.readouterr().out
    assert Vault(FileStorage(store), load_master_key(new_key_file)).list() == []
    assert run_cli("export", "r_gone", str(tmp_path / "x.webm")) == 2
    assert not (tmp_path / "x.webm").exists()
