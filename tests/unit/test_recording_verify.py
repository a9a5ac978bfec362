"""Verifying recordings at rest, and their audit journal: real encrypted segments on
disk, damaged as an intruder or a failing disk would; ``jisr recordings verify``,
``list`` and ``trail`` as an operator runs them."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from recordings.crypto import MasterKey, TamperedError, generate_key_file, segment_chunks
from recordings.layout import RELAY_INBOX
from recordings.storage import FileStorage
from recordings.trail import UNREADABLE
from recordings.vault import Vault
from recordings.verify import verify, verify_many
from signaling.verification import RecordingChecks
from tests.unit.test_recording_crypto import MARKER, encrypt
from tests.unit.test_vault import (
    RID,
    T0,
    AuditLog,
    Clock,
    metadata,
    record,
    run_cli,
    scan,
    segment_path,
    structlog_config,  # noqa: F401 - a fixture
)

CLEAN = "r_clean01"


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(os.urandom(32))


@pytest.fixture
def vault(root, master) -> Vault:
    vault = Vault(FileStorage(root), master, Clock(), chunk_size=4096)
    record(vault, RID, segments=3)
    record(vault, CLEAN, segments=2)
    return vault


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The temporary directory every library would write to, watched."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def flip_byte(root: Path, index: int, recording_id: str = RID) -> None:
    path = segment_path(root, index, recording_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_and_a_missing_segment_are_named(vault, root, master, private_tmp):
    flip_byte(root, 1)
    segment_path(root, 2).unlink()  # from the middle: 1 and 3 are left
    path3 = segment_path(root, 3)
    path3.write_bytes(path3.read_bytes()[:-7])
    before = files(root)
    audit = AuditLog()

    checked = verify(vault, RID, audit=audit, actor={"sub": "cli:ops"})

    assert checked.result == "tampered" and checked.segments == 2
    assert [(f.segment, f.reason) for f in checked.failures] == [
        (1, "authentication_failed"), (2, "missing"), (3, "truncated"),
    ]  # fmt: skip
    # Nothing readable written, nowhere: beside the recording only its verification
    # record and a journal event, both sealed; the temporary directory untouched.
    after = files(root)
    new = sorted(set(after) - set(before))
    assert len(new) == 2 and new[1] == f"{RID}/verify.enc"
    assert new[0].startswith(f"{RID}/trail-") and new[0].endswith("-node.enc")
    assert all(after[n] == before[n] for n in before)  # the metadata is not rewritten
    scan(root)
    assert not any(MARKER in data or b"tampered" in data for data in after.values())
    assert list(private_tmp.iterdir()) == []
    # The listing says so, with which segments and when, and still after a restart.
    again = Vault(FileStorage(root), master, Clock(T0 + 5))
    listed = {r["recording_id"]: r for r in again.list()}
    assert listed[RID]["state"] == "tampered" and listed[RID]["recorded_state"] == "complete"
    assert listed[RID]["verification"] == {
        "result": "tampered", "verified_at": T0, "segments": 2, "by": {"sub": "cli:ops"},
        "failures": [
            {"segment": 1, "reason": "authentication_failed"},
            {"segment": 2, "reason": "missing"},
            {"segment": 3, "reason": "truncated"},
        ],
    }  # fmt: skip
    assert listed[CLEAN]["state"] == "complete" and "verification" not in listed[CLEAN]
    assert audit == [("recording.verified", {
        "recording_id": RID, "at": T0, "outcome": "ok", "actor": {"sub": "cli:ops"},
        "result": "tampered", "segments": 2, "failures": listed[RID]["verification"]["failures"],
    })]  # fmt: skip
    assert [e["event"] for e in again.trail.events(RID)] == ["recording.verified"]


def test_a_clean_recording_verifies_ok_and_a_repaired_one_is_ok_again(vault, root):
    saved = segment_path(root, 2).read_bytes()
    flip_byte(root, 2)
    summary = verify_many(vault, None, audit=AuditLog(), by="schedule")
    assert [(v.recording_id, v.result) for v in summary.verified] == [
        (RID, "tampered"), (CLEAN, "ok"),
    ]  # fmt: skip
    assert vault.get(CLEAN)["verification"]["result"] == "ok"
    segment_path(root, 2).write_bytes(saved)  # restored from a backup
    assert verify(vault, RID, audit=AuditLog()).result == "ok"
    assert vault.get(RID)["state"] == "complete" and "recorded_state" not in vault.get(RID)
    # A schedule does not journal a recording found ok as it was last time.
    audit = AuditLog()
    assert verify(vault, RID, audit=audit, repeat_ok=False).result == "ok"
    assert audit == []


def test_every_fault_of_a_segment_has_its_reason():
    key = os.urandom(32)
    segment = encrypt(b"x" * 1000, key, index=3, chunk_size=64, rid="r_x")

    def reason(data: bytes) -> str | None:
        try:
            for _ in segment_chunks(lambda o, n: data[o : o + n], len(data), key, "r_x", 3):
                pass
        except TamperedError as exc:
            return exc.reason
        return None

    assert reason(segment) is None
    assert reason(segment[:-1]) == "truncated"
    assert reason(segment[:10]) == "truncated"  # not even a header
    assert reason(segment + b"\0") == "malformed"  # bytes after its end
    assert reason(b"NOTSEG" + segment[6:]) == "malformed"
    flipped = bytearray(segment)
    flipped[200] ^= 0x80
    assert reason(bytes(flipped)) == "authentication_failed"
    with pytest.raises(TamperedError) as caught:  # another recording's key
        next(segment_chunks(lambda o, n: segment[o : o + n], len(segment), os.urandom(32),
                            "r_x", 3))  # fmt: skip
    assert caught.value.reason == "authentication_failed"


def test_an_altered_verification_record_is_detected_not_ignored(vault, root):
    flip_byte(root, 1)
    verify(vault, RID, audit=AuditLog())
    path = root / RID / "verify.enc"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    listed = {r["recording_id"]: r for r in vault.list()}
    assert listed[RID]["state"] == "unreadable"
    assert "verification record of recording r_casereview01" in listed[RID]["error"]
    assert verify(vault, RID, audit=AuditLog()).result == "tampered"  # written afresh
    assert vault.get(RID)["state"] == "tampered"


def test_a_tampered_recording_still_ages_out(vault, root, master):
    flip_byte(root, 1)
    verify(vault, RID, audit=AuditLog())
    (root / RELAY_INBOX).mkdir()
    (root / RELAY_INBOX / f"{CLEAN}.trail-00000000000000000001-0123abcd-cli").write_bytes(b"")
    vault.clock.now = T0 + 400 * 86400
    purged = vault.purge_older_than(365, audit=AuditLog())
    assert purged == [RID, CLEAN]  # the relay inbox is not a recording cut short


def test_the_journal_holds_each_audited_action_sealed(vault, root, tmp_path):
    audit = AuditLog()
    target = tmp_path / "review.webm"
    vault.export(RID, target, audit=audit, actor={"sub": "adm"}, reason="morbidity review")
    vault.stream(RID, audit=audit, by={"sub": "sup"}).close()
    events = vault.trail.events(RID)
    assert [(e["event"], e["origin"], e.get("reason")) for e in events] == [
        ("recording.exported", "node", "morbidity review"), ("recording.played", "node", None),
    ]  # fmt: skip
    assert events[0]["actor"] == {"sub": "adm"} and events[0]["at"] == T0
    assert not (root / RELAY_INBOX).exists()  # a node's own events are in its log already
    stored = b"".join(files(root).values())
    assert b"morbidity review" not in stored and b"recording.exported" not in stored
    # An event altered, or moved into another recording's journal, does not read as one.
    first = sorted((root / RID).glob("trail-*"))[0]
    moved = root / CLEAN / first.name
    moved.write_bytes(first.read_bytes())
    data = bytearray(first.read_bytes())
    data[20] ^= 1
    first.write_bytes(bytes(data))
    assert [e["event"] for e in vault.trail.events(RID)] == [UNREADABLE, "recording.played"]
    assert [e["event"] for e in vault.trail.events(CLEAN)] == [UNREADABLE]
    # Deleting the recording shreds its journal with it; nothing more is journalled.
    vault.delete(RID, audit=audit)
    assert not (root / RID).exists()


def test_an_interruption_is_audited_and_journalled(root, master):
    vault = Vault(FileStorage(root), master, Clock())
    handle = vault.create("r_cut", metadata(node="n_gone"))
    record(vault, CLEAN, segments=1)
    writer = handle.open_segment(1)
    writer.write(b"\0" * 10)
    writer.close()
    del handle  # its node died
    restarted = Vault(FileStorage(root), master, Clock(T0 + 60))
    audit = AuditLog()
    assert restarted.mark_interrupted_stale(audit=audit, reason="writer_lost") == ["r_cut"]
    assert [(e, f["recording_id"], f["reason"]) for e, f in audit] == [
        ("recording.interrupted", "r_cut", "writer_lost"),
    ]
    assert [e["event"] for e in restarted.trail.events("r_cut")] == ["recording.interrupted"]
    assert restarted.get("r_cut")["state"] == "interrupted"


# the command line ----------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch, structlog_config):  # noqa: F811
    key_file, store = tmp_path / "master.key", tmp_path / "store"
    master = generate_key_file(key_file)
    monkeypatch.setenv("JISR_RECORDING_KEY", str(key_file))
    monkeypatch.setenv("JISR_RECORDINGS_DIR", str(store))
    vault = Vault(FileStorage(store), master, Clock())
    record(vault, RID, segments=3)
    record(vault, CLEAN, segments=1)
    return store


def test_cli_verify_names_what_failed_and_list_says_tampered(cli_env, capsys, private_tmp):
    flip_byte(cli_env, 2)
    with structlog.testing.capture_logs() as logs:
        assert run_cli("verify") == 1
    out = capsys.readouterr().out
    assert f"{RID}" in out and "segment 2 authentication_failed" in out
    assert "2 recording(s): 1 ok, 1 tampered, 0 unreadable" in out
    assert [(e["event"], e["audit"], e["result"]) for e in logs] == [
        ("recording.verified", True, "tampered"), ("recording.verified", True, "ok"),
    ]  # fmt: skip
    assert run_cli("verify", CLEAN) == 0
    assert "1 segment(s) authenticated" in capsys.readouterr().out
    assert run_cli("list") == 0
    listing = capsys.readouterr().out
    assert f"{RID:<24} tampered" in listing and "segment 2 authentication_failed" in listing
    assert f"{CLEAN:<24} complete" in listing
    assert run_cli("list", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["state"] for r in rows] == ["tampered", "complete"]
    assert list(private_tmp.iterdir()) == []
    # Each verification is in the recording's journal, waiting for a server to relay it.
    assert run_cli("trail", RID, "--json") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["origin"], e["result"]) for e in events] == [
        ("recording.verified", "cli", "tampered")
    ]
    assert sorted(p.name.split(".", 1)[0] for p in (cli_env / RELAY_INBOX).iterdir()) == [
        RID, CLEAN, CLEAN,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("verify", "r_unknown"), "recording r_unknown does not exist"),
        (("verify", CLEAN, "r_unknown"), "recording r_unknown does not exist"),
        (("verify", "../etc"), "invalid recording id '../etc'"),
        (("verify", "r" * 129), "invalid recording id"),
        (("export", "bad id", "x.webm"), "invalid recording id 'bad id'"),
        (("trail", "r_unknown"), "recording r_unknown does not exist"),
    ],
)
def test_cli_bad_ids_are_refused_and_nothing_is_verified(cli_env, capsys, argv, message):
    before = files(cli_env)
    assert run_cli(*argv) == 2
    assert message in capsys.readouterr().err
    assert files(cli_env) == before


# the schedule ---------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.recording_event = AuditLog()


def test_a_scheduled_pass_verifies_what_is_due_and_counts_it(vault, root):
    flip_byte(root, 3)
    registry, clock, audit = CollectorRegistry(), Clock(T0), Recorder()
    checks = RecordingChecks(vault, audit, registry, interval_s=3600, relay_s=1, clock=clock)

    def figure(name: str, **labels) -> float:
        return registry.get_sample_value(name, labels or None)

    results = sorted((v.recording_id, v.result) for v in checks.verify_pass().verified)
    assert results == [(RID, "tampered"), (CLEAN, "ok")]
    assert figure("jisr_recordings_tampered") == 1
    assert figure("jisr_recordings_verified_total", result="ok") == 1
    assert figure("jisr_recording_verify_last_run_timestamp_seconds") == T0
    clock.now = T0 + 60
    assert checks.verify_pass().verified == []  # verified within the interval
    clock.now = vault.clock.now = T0 + 3600
    assert sorted(v.recording_id for v in checks.verify_pass().verified) == [RID, CLEAN]
    # A tampered recording is audited at every pass; a clean one once, while it stays so.
    audited = sorted((f["recording_id"], f["at"], f["result"]) for _, f in audit.recording_event)
    assert audited == [(RID, T0, "tampered"), (RID, T0 + 3600, "tampered"), (CLEAN, T0, "ok")]
    assert figure("jisr_recordings_verified_total", result="tampered") == 2
    assert figure("jisr_recordings_tampered") == 1
