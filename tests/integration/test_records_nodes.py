"""Two nodes sharing Redis and one PostgreSQL record store: each node's outbox
writes its own changes and audit events; the consult's history is whole and in
order, and the audit chain, appended by both nodes at once, verifies."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import RECORDS
from signaling.records import chain
from signaling.store import RedisStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "urgency": "critical", "summary": "dissection",
       "patient_ref": "P-7"}  # fmt: skip
REPORT = {"findings": "type A dissection", "assessment": "surgical emergency",
          "recommendation": "theatre now", "follow_up_urgency": "critical"}  # fmt: skip


async def test_two_nodes_one_record_store(aiohttp_client, tmp_path, tokens, redis_url,
                                          postgres_url) -> None:  # fmt: skip
    key = tmp_path / "master.key"
    generate_key_file(key)
    nodes = []
    for name in ("n_a", "n_b"):
        settings = make_settings(
            recording_key=key, recordings_dir=tmp_path / "rec", attachments_dir=tmp_path / "att",
            data_dir=tmp_path / name, records_url=postgres_url,
            rate_limits="consult.user=1000/minute",
        )  # fmt: skip
        app = create_app(settings, store=RedisStore(redis_url), node_id=name)
        nodes.append(await aiohttp_client(app))
    node_a, node_b = nodes

    async def call(node, method, path, token, json=None):
        response = await node.request(method, path, json=json, headers=tokens.header(token))
        assert response.status in (200, 201), await response.text()
        return await response.json()

    async def one(n: int) -> str:
        first, second = (node_a, node_b) if n % 2 else (node_b, node_a)
        made = await call(first, "POST", "/api/consults", tokens.referrer, NEW)
        await call(second, "POST", f"/api/consults/{made['id']}/accept", tokens.specialist)
        await call(first, "POST", f"/api/consults/{made['id']}/report", tokens.specialist, REPORT)
        await call(second, "GET", f"/api/consults/{made['id']}", tokens.supervisor)
        return made["id"]

    ids = await asyncio.gather(*(one(n) for n in range(10)))
    for node in nodes:
        assert await node.app[RECORDS].outbox.drained(15)
    records = node_a.app[RECORDS]
    async with records.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT consult_id, state FROM consult_history ORDER BY consult_id, version"
        ))).all()  # fmt: skip
        writers = set((await conn.execute(text("SELECT DISTINCT node FROM audit_entries")))
                      .scalars())  # fmt: skip
    history: dict[str, list[str]] = {}
    for row in rows:
        history.setdefault(row.consult_id, []).append(row.state)
    assert history == {i: ["waiting", "accepted", "ended"] for i in ids}
    assert writers == {"n_a", "n_b"}
    report = await chain.verify(records.engine, records.chain_key)
    assert report.ok, report.problems
    assert report.entries == 10 * 5  # created, accepted, reported, viewed, report viewed
