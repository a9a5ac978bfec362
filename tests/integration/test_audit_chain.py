"""``jisr audit verify`` on a real trail (a consult's life through the API, on
SQLite and on PostgreSQL) passes, and fails naming the entry after a row is edited,
deleted, or two are swapped directly in the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import RECORDS
from signaling.store import MemoryStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "urgency": "routine", "summary": "murmur", "patient_ref": "P-1"}
REPORT = {"findings": "soft systolic murmur", "assessment": "benign flow murmur",
          "recommendation": "no follow-up", "follow_up_urgency": "none"}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def trail(aiohttp_client, tmp_path, records_url, tokens):
    """A node that kept a real trail (8 entries); the command's environment."""
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(recording_key=key, recordings_dir=tmp_path / "rec",
                             attachments_dir=tmp_path / "att", data_dir=tmp_path / "data",
                             records_url=records_url)  # fmt: skip
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))

    async def call(method, path, token, json=None):
        response = await client.request(method, path, json=json, headers=tokens.header(token))
        assert response.status in (200, 201), await response.text()
        return await response.json()

    consult = await call("POST", "/api/consults", tokens.referrer, NEW)
    await call("POST", f"/api/consults/{consult['id']}/accept", tokens.specialist)
    await call("POST", f"/api/consults/{consult['id']}/report", tokens.specialist, REPORT)
    await call("GET", f"/api/consults/{consult['id']}", tokens.referrer)  # viewed (+ report)
    await call("GET", f"/api/consults/{consult['id']}/report", tokens.supervisor)
    await call("GET", f"/api/consults/{consult['id']}", tokens.supervisor)  # (+ report)
    records = client.app[RECORDS]
    assert await records.outbox.drained(10)
    env = {**os.environ, "JISR_RECORDS_URL": records_url, "JISR_RECORDING_KEY": str(key)}
    return records.engine, env


def verify(env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "signaling.cli", "audit", "verify"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


async def tamper(engine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def test_a_real_trail_verifies(trail) -> None:
    engine, env = trail
    status, output = verify(env)
    assert status == 0, output
    assert "audit trail ok: 8 entries" in output


async def test_an_edited_entry_is_named(trail) -> None:
    engine, env = trail
    await tamper(engine, "UPDATE audit_entries SET actor_sub = 'dr-nobody' WHERE seq = 3")
    status, output = verify(env)
    assert status == 1
    assert "FAILED entry 3: altered" in output and "FAILED entry 4" not in output


async def test_a_deleted_entry_is_named(trail) -> None:
    engine, env = trail
    await tamper(engine, "DELETE FROM audit_entries WHERE seq = 5")
    status, output = verify(env)
    assert status == 1 and "FAILED entry 5: missing: entry 5 is missing" in output


async def test_the_last_entries_deleted_are_named(trail) -> None:
    engine, env = trail
    await tamper(engine, "DELETE FROM audit_entries WHERE seq >= 7")
    status, output = verify(env)
    assert status == 1 and "entries 7..8 (the last ones) are missing" in output


async def test_two_swapped_entries_are_named(trail) -> None:
    engine, env = trail
    await tamper(engine, "UPDATE audit_entries SET seq = -1 WHERE seq = 2",
                 "UPDATE audit_entries SET seq = 2 WHERE seq = 6",
                 "UPDATE audit_entries SET seq = 6 WHERE seq = -1")  # fmt: skip
    status, output = verify(env)
    assert status == 1
    assert "FAILED entry 2: altered" in output and "FAILED entry 6: altered" in output


async def test_a_rebuilt_hash_without_the_key_does_not_pass(trail) -> None:
    """Someone with the database alone recomputes an edited entry's hash the only
    way they can (unkeyed) and moves the head: still named."""
    engine, env = trail
    fake = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    await tamper(engine, f"UPDATE audit_entries SET event = 'consult.cancelled', hash = '{fake}' "
                 "WHERE seq = 8", f"UPDATE audit_head SET hash = '{fake}'")  # fmt: skip
    status, output = verify(env)
    assert status == 1 and "FAILED entry 8: altered" in output and "head" in output


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "signaling.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


async def test_a_master_key_rotation_keeps_the_trail_verifiable(trail, tmp_path) -> None:
    """The chain's key and every consult's key are rewrapped: once the old master key
    is gone, the trail still verifies."""
    engine, env = trail
    new_key = tmp_path / "new.key"
    generate_key_file(new_key)
    rotating = {**env, "JISR_RECORDING_KEY": str(new_key),
                "JISR_RECORDING_OLD_KEYS": env["JISR_RECORDING_KEY"]}  # fmt: skip
    status, output = run(rotating, "records", "rotate-key")
    assert status == 0 and "rewrapped 2 keys" in output, output  # the consult's, the chain's
    assert "rewrapped 0 keys" in run(rotating, "records", "rotate-key")[1]  # nothing left
    status, output = run({**env, "JISR_RECORDING_KEY": str(new_key)}, "audit", "verify")
    assert status == 0 and "audit trail ok: 8 entries" in output, output
    status, output = run(env, "audit", "verify")  # the old key alone opens nothing now
    assert status == 2 and "error" in output


async def test_the_trail_exports_as_json_lines(trail) -> None:
    _, env = trail
    status, output = run(env, "audit", "export", "--actor", "sup-leila")
    assert status == 0, output
    lines = [json.loads(line) for line in output.splitlines()]
    assert [e["event"] for e in lines] == ["report.viewed", "consult.viewed", "report.viewed"]
    assert [e["seq"] for e in lines] == sorted(e["seq"] for e in lines)
