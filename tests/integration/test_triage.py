"""Triage with an injected clock: nothing sleeps for minutes. Deadlines live in the
store, so they survive a restart and any node acts on them once."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType

from signaling.app import create_app
from signaling.keys import TRIAGE
from signaling.store import MemoryStore, RedisStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "summary": "STEMI, cath lab?", "patient_ref": "P-77"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def settings_for_triage(tick_s: float = 3600):
    """The tests drive ``tick()`` themselves unless they ask for the node's own loop."""
    return make_settings(
        escalation="cardiology=dr-chief", deadline_critical_s=300, triage_tick_s=tick_s
    )


async def create(client, tokens, urgency="critical", **fields) -> dict:
    response = await client.post(
        "/api/consults", json={**NEW, "urgency": urgency, **fields},
        headers=tokens.header(tokens.referrer),
    )  # fmt: skip
    assert response.status == 201, await response.text()
    return await response.json()


async def socket(client, token: str, presence: str | None = None):
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token, "ref": "a"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    if presence:
        await ws.send_json({"type": "presence", "status": presence, "ref": "p"})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "presence.ok", reply
    return ws


async def next_of(ws, kind: str, timeout: float = 5.0) -> dict:
    async def wait():
        while True:
            message = await ws.receive()
            assert message.type == WSMsgType.TEXT
            data = message.json()
            if data["type"] == kind:
                return data

    return await asyncio.wait_for(wait(), timeout)


async def nothing_of(ws, kind: str, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await next_of(ws, kind, timeout=within)


async def test_reannounce_at_half_and_escalation_at_deadline(aiohttp_client, tokens):
    clock = Clock()
    client = await aiohttp_client(
        create_app(settings_for_triage(), store=MemoryStore(), clock=clock)
    )
    triage = client.app[TRIAGE]
    available = await socket(client, tokens.specialist, "available")
    chief = await socket(client, tokens.make("specialist", "dr-chief", specialties=["surgery"]))
    supervisor = await socket(client, tokens.supervisor)
    consult = await create(client, tokens)
    assert (await next_of(available, "consult.updated"))["consult"]["id"] == consult["id"]

    clock.now += 149
    assert await triage.tick() == []
    clock.now += 2  # past half of the 5 min deadline
    assert await triage.tick() == [f"reannounce:{consult['id']}"]
    assert (await next_of(available, "consult.reannounced"))["consult"]["id"] == consult["id"]

    clock.now += 150  # past the deadline
    assert await triage.tick() == [f"escalate:{consult['id']}"]
    alert = await next_of(supervisor, "consult.escalated")
    assert alert["consult"]["offered_to"] == ["dr-chief"]
    offered = await next_of(chief, "consult.escalated")
    assert offered["consult"]["id"] == consult["id"]
    # The escalation list may take it although it is not their specialty.
    accepted = await client.post(
        f"/api/consults/{consult['id']}/accept",
        headers=tokens.header(tokens.make("specialist", "dr-chief", specialties=["surgery"])),
    )
    assert accepted.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'jisr_escalations_total{specialty="cardiology",urgency="critical"} 1.0' in metrics
    assert "jisr_time_to_accept_seconds_count" in metrics
    for ws in (available, chief, supervisor):
        await ws.close()


async def test_new_consult_reaches_available_specialists_only(aiohttp_client, tokens):
    client = await aiohttp_client(create_app(settings_for_triage(), store=MemoryStore()))
    available = await socket(client, tokens.specialist, "available")
    busy = await socket(client, tokens.other_specialist, "busy")
    consult = await create(client, tokens)
    assert (await next_of(available, "consult.updated"))["consult"]["id"] == consult["id"]
    await nothing_of(busy, "consult.updated")
    oncall = await (
        await client.get("/api/oncall", headers=tokens.header(tokens.supervisor))
    ).json()
    assert {p["sub"]: p["status"] for p in oncall["presence"]} == {
        "dr-karim": "available",
        "dr-sara": "busy",
    }
    await available.close()
    await busy.close()


async def test_decline_transfer_position_and_report(aiohttp_client, tokens):
    client = await aiohttp_client(create_app(settings_for_triage(), store=MemoryStore()))
    first = await create(client, tokens, urgency="routine")
    second = await create(client, tokens, urgency="critical")
    mine = await (await client.get("/api/consults", headers=tokens.header(tokens.referrer))).json()
    assert {c["id"]: c["position"] for c in mine["consults"]} == {second["id"]: 1, first["id"]: 2}

    declined = await client.post(
        f"/api/consults/{second['id']}/decline", json={"reason": "in theatre"},
        headers=tokens.header(tokens.specialist),
    )  # fmt: skip
    assert (await declined.json())["declines"][0]["reason"] == "in theatre"
    queue = await (
        await client.get("/api/consults", headers=tokens.header(tokens.specialist))
    ).json()
    assert [c["id"] for c in queue["consults"]] == [first["id"]]  # declined: not offered again

    bad = await client.post(
        f"/api/consults/{first['id']}/transfer", json={"specialty": "alchemy", "reason": "x"},
        headers=tokens.header(tokens.specialist),
    )  # fmt: skip
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "unknown_specialty"
    moved = await client.post(
        f"/api/consults/{first['id']}/transfer",
        json={"specialty": "neurology", "reason": "stroke signs"},
        headers=tokens.header(tokens.specialist),
    )
    assert (await moved.json())["specialty"] == "neurology"
    seen = await (
        await client.get("/api/consults", headers=tokens.header(tokens.neurologist))
    ).json()
    assert [c["id"] for c in seen["consults"]] == [first["id"]]

    accepted = await (await client.post(
        f"/api/consults/{second['id']}/accept", headers=tokens.header(tokens.other_specialist)
    )).json()  # fmt: skip
    report = {
        "findings": "pericardial effusion",
        "assessment": "tamponade",
        "recommendation": "pericardiocentesis now",
        "follow_up_urgency": "critical",
    }
    for token, status in ((tokens.referrer, 403), (tokens.specialist, 404),
                          (tokens.supervisor, 403)):  # fmt: skip
        refused = await client.post(
            f"/api/consults/{second['id']}/report", json=report, headers=tokens.header(token)
        )
        assert refused.status == status
    closed = await client.post(
        f"/api/consults/{second['id']}/report", json=report,
        headers=tokens.header(tokens.other_specialist),
    )  # fmt: skip
    body = await closed.json()
    assert body["state"] == "ended" and len(body["report_sha256"]) == 64
    exported = await client.get(
        f"/api/consults/{second['id']}/report", headers=tokens.header(tokens.referrer)
    )
    assert exported.headers["Content-Disposition"].startswith("attachment")
    assert (await exported.json())["report"]["recommendation"] == "pericardiocentesis now"
    session = await (await client.get(
        f"/api/sessions/{accepted['session']['id']}", headers=tokens.header(tokens.supervisor)
    )).json()  # fmt: skip
    assert session["state"] == "ended"


async def test_pending_escalation_survives_a_restart(aiohttp_client, tokens, redis_url):
    clock = Clock()
    settings = settings_for_triage(tick_s=0.2)
    first = await aiohttp_client(create_app(settings, store=RedisStore(redis_url), clock=clock))
    consult = await create(first, tokens)
    await first.close()  # the node goes away with the deadline pending

    second = await aiohttp_client(create_app(settings, store=RedisStore(redis_url), clock=clock))
    third = await aiohttp_client(create_app(settings, store=RedisStore(redis_url), clock=clock))
    supervisor_b = await socket(second, tokens.supervisor)
    supervisor_c = await socket(third, tokens.supervisor)
    clock.now += 301  # both new nodes' schedulers now find the deadline due
    for ws in (supervisor_b, supervisor_c):  # supervisors on either node are alerted
        assert (await next_of(ws, "consult.escalated"))["consult"]["id"] == consult["id"]
        await ws.close()
    counted = [
        node.app[TRIAGE].metrics.escalations.labels("critical", "cardiology")._value.get()
        for node in (second, third)
    ]
    assert sorted(counted) == [0.0, 1.0]  # exactly one node acted


async def test_two_nodes_announce_to_specialists_on_either(aiohttp_client, tokens, redis_url):
    settings = settings_for_triage()
    nodes = [
        await aiohttp_client(create_app(settings, store=RedisStore(redis_url), node_id=f"n{i}"))
        for i in range(2)
    ]
    specialists = [await socket(node, tokens.specialist, "available") for node in nodes]
    consult = await create(nodes[0], tokens)
    for ws in specialists:
        assert (await next_of(ws, "consult.updated", timeout=1.0))["consult"]["id"] == consult["id"]
        await ws.close()


async def test_dashboard_for_supervisors_only(aiohttp_client, tokens):
    client = await aiohttp_client(create_app(settings_for_triage(), store=MemoryStore()))
    consult = await create(client, tokens)
    await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
    )
    await create(client, tokens, urgency="urgent")
    refused = await client.get("/api/dashboard", headers=tokens.header(tokens.specialist))
    assert refused.status == 403
    board = await (
        await client.get("/api/dashboard", headers=tokens.header(tokens.supervisor))
    ).json()
    assert board["queue"]["urgent"]["waiting"] == 1 and board["queue"]["critical"]["waiting"] == 0
    assert [c["id"] for c in board["live"]] == [consult["id"]]
    assert "critical" in board["mean_time_to_accept_s"]
