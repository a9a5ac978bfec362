"""The record store's database stopped for 20 s while consults change state: the
node keeps working, /readyz and /metrics show the backlog, and once PostgreSQL is
back every change is in the record store, in order, with its audit entries."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import RECORDS
from signaling.records import chain
from signaling.store import MemoryStore
from tests.conftest import make_settings

OUTAGE_S = 20.0
NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "syncope, AV block?",
       "patient_ref": "MRN-9"}  # fmt: skip
REPORT = {"findings": "complete heart block", "assessment": "needs pacing",
          "recommendation": "temporary pacing wire", "follow_up_urgency": "urgent"}  # fmt: skip


async def call(client, method, path, token, tokens, json=None):
    response = await client.request(method, path, json=json, headers=tokens.header(token))
    body = await response.json()
    assert response.status in (200, 201), body
    return body


async def one_consult(client, tokens, seen: dict[str, list[tuple[int, str]]], n: int) -> None:
    """A consult through its life (reported, or cancelled every third), noting each
    version the API answered with."""
    made = await call(client, "POST", "/api/consults", tokens.referrer, tokens, NEW)
    history = seen.setdefault(made["id"], [(made.get("version", 0), made["state"])])
    if n % 3 == 2:
        cancelled = await call(client, "POST", f"/api/consults/{made['id']}/cancel",
                               tokens.referrer, tokens)  # fmt: skip
        history.append((cancelled["version"], cancelled["state"]))
        return
    accepted = await call(client, "POST", f"/api/consults/{made['id']}/accept",
                          tokens.specialist, tokens)  # fmt: skip
    history.append((accepted["consult"]["version"], accepted["consult"]["state"]))
    reported = await call(client, "POST", f"/api/consults/{made['id']}/report",
                          tokens.specialist, tokens, REPORT)  # fmt: skip
    history.append((reported["version"], reported["state"]))


async def test_a_database_outage_loses_no_change(aiohttp_client, tmp_path, postgres_server,
                                                 tokens) -> None:  # fmt: skip
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, recordings_dir=tmp_path / "rec", attachments_dir=tmp_path / "att",
        data_dir=tmp_path / "data", records_url=postgres_server.create_database(),
        max_waiting_per_referrer=1000, rate_limits="consult.user=1000/minute",
    )  # fmt: skip
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))
    records = client.app[RECORDS]
    seen: dict[str, list[tuple[int, str]]] = {}
    await one_consult(client, tokens, seen, 0)
    assert await records.outbox.drained(10)

    postgres_server.stop()
    try:
        began, n = time.monotonic(), 1
        while time.monotonic() - began < OUTAGE_S:  # changes all through the outage
            await one_consult(client, tokens, seen, n)
            n += 1
            await asyncio.sleep(0.25)  # pacing the load, not waiting for anything
        ready = await (await client.get("/readyz")).json()
        assert ready["status"] == "ready"  # the node serves on
        assert ready["records"]["database"] == "down"
        backlog = ready["records"]["backlog"]
        assert backlog >= 3 * (n - 1)  # every change (and its audit events) waits
        read = await client.get("/api/records/consults", headers=tokens.header(tokens.referrer))
        assert read.status == 503  # reads need the database; writes wait in the outbox
        assert (await read.json())["error"]["code"] == "records_unavailable"
        metrics = await (await client.get("/metrics")).text()
        assert "jisr_records_database_up 0.0" in metrics
        assert f"jisr_records_outbox_backlog {float(backlog)}" in metrics
    finally:
        postgres_server.start()

    back = time.monotonic()
    assert await records.outbox.drained(60), "the backlog did not reach the record store"
    print(f"outage of {OUTAGE_S:.0f} s: {n - 1} consults, {backlog} entries waited; in the "
          f"record store {time.monotonic() - back:.1f} s after PostgreSQL was back")
    assert (await (await client.get("/readyz")).json())["records"]["database"] == "up"
    async with records.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT consult_id, version, state FROM consult_history ORDER BY consult_id, version"
        ))).all()  # fmt: skip
        kept = (await conn.execute(text("SELECT id, version, state FROM consults"))).all()
    recorded: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        recorded.setdefault(row.consult_id, []).append((row.version, row.state))
    assert recorded == seen  # every change, in order
    assert {r.id: (r.version, r.state) for r in kept} == {c: h[-1] for c, h in seen.items()}
    report = await chain.verify(records.engine, records.chain_key)
    assert report.ok, report.problems
    assert report.entries >= len(rows)  # each change's audit entry is on the chain too
    assert records.outbox.rejected == 0


async def readyz_database(client) -> str:
    return (await (await client.get("/readyz")).json())["records"]["database"]


async def until_database(client, wanted: str, timeout_s: float) -> float:
    """Seconds until /readyz says the record store's database is ``wanted``."""
    began = time.monotonic()
    while (state := await readyz_database(client)) != wanted:
        assert time.monotonic() - began < timeout_s, f"/readyz still says {state!r}"
        await asyncio.sleep(0.2)  # polling /readyz, bounded by the timeout
    return time.monotonic() - began


async def test_an_idle_node_notices_the_database_going_and_coming_back(
    aiohttp_client, tmp_path, postgres_server
) -> None:
    """Nothing is written meanwhile: /readyz learns of the outage from the outbox's
    own check, not from a change that failed."""
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, recordings_dir=tmp_path / "rec", attachments_dir=tmp_path / "att",
        data_dir=tmp_path / "data", records_url=postgres_server.create_database(),
    )  # fmt: skip
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))
    assert await readyz_database(client) == "up"
    postgres_server.stop()
    try:
        went = await until_database(client, "down", 20)
        assert client.app[RECORDS].outbox.backlog == 0  # nothing was written meanwhile
    finally:
        postgres_server.start()
    came = await until_database(client, "up", 20)
    print(f"an idle node saw the database go in {went:.1f} s and come back in {came:.1f} s")
