"""A node killed (SIGKILL) while the record store's database is down loses none of
the changes it answered: they wait in its journal on disk, and the node started
again (the same node id and data folder) applies them once PostgreSQL is back."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from recordings.crypto import generate_key_file
from tests.conftest import Tokens, make_settings
from tests.redis_server import free_port
from tests.support.processes import jisr, wait_for

NEW = {"specialty": "cardiology", "urgency": "routine", "summary": "palpitations",
       "patient_ref": "MRN-5"}  # fmt: skip


def call(base: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def backlog(base: str) -> int:
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
        return json.loads(response.read())["records"]["backlog"]


def history(url: str) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT consult_id, state FROM consult_history ORDER BY consult_id, version"
            ))).all()  # fmt: skip
        await engine.dispose()
        return [(r.consult_id, r.state) for r in rows]

    return asyncio.run(read())


def test_a_node_killed_during_an_outage_loses_nothing(tmp_path, postgres_server) -> None:
    key = tmp_path / "master.key"
    generate_key_file(key)
    url = postgres_server.create_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"JISR_PORT": str(port), "JISR_RECORDING_KEY": str(key), "JISR_RECORDS_URL": url,
           "JISR_DATA_DIR": str(tmp_path / "data"), "JISR_NODE_ID": "n_crash"}  # fmt: skip
    tokens = Tokens(make_settings())
    made: list[str] = []
    postgres_server.stop()
    try:
        with jisr(tmp_path, env) as process:
            wait_for(f"{base}/healthz", process, tmp_path / "jisr.log")
            for _ in range(5):
                made.append(call(base, "POST", "/api/consults", tokens.referrer, NEW)["id"])
            call(base, "POST", f"/api/consults/{made[0]}/cancel", tokens.referrer)
            assert backlog(base) >= 12  # six changes, each with its audit event
            process.kill()  # no shutdown, nothing drained
            process.wait()
    finally:
        postgres_server.start()

    with jisr(tmp_path, env) as process:  # the same node, started again
        wait_for(f"{base}/healthz", process, tmp_path / "jisr.log")
        deadline = time.monotonic() + 15
        while backlog(base) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the node's backlog, bounded by the deadline
        assert backlog(base) == 0, "the journal was not applied after the restart"
    rows = history(url)
    assert sorted({consult for consult, _ in rows}) == sorted(made)
    assert [state for consult, state in rows if consult == made[0]] == ["waiting", "cancelled"]
