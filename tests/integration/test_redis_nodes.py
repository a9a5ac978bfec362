"""Several nodes sharing one real Redis: atomic accept, events across nodes, and a
dead Redis answered with a clear 503 while the node keeps serving."""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSMsgType

from signaling.app import create_app
from signaling.keys import CLUSTER
from signaling.store import RedisStore
from tests.redis_server import RedisServer

NEW = {
    "specialty": "cardiology",
    "urgency": "critical",
    "summary": "dissection",
    "patient_ref": "P-7",
}


async def two_nodes(aiohttp_client, settings, url: str):
    node_a = await aiohttp_client(create_app(settings, store=RedisStore(url), node_id="n_a"))
    node_b = await aiohttp_client(create_app(settings, store=RedisStore(url), node_id="n_b"))
    return node_a, node_b


async def test_fifty_concurrent_accepts_through_two_nodes_have_one_winner(
    aiohttp_client, settings, tokens, redis_url
):
    node_a, node_b = await two_nodes(aiohttp_client, settings, redis_url)
    consult = await (
        await node_a.post("/api/consults", json=NEW, headers=tokens.header(tokens.referrer))
    ).json()
    specialists = [
        tokens.make("specialist", f"dr-{i}", specialties=["cardiology"]) for i in range(50)
    ]

    async def accept(i: int):
        node = node_a if i % 2 else node_b
        response = await node.post(
            f"/api/consults/{consult['id']}/accept", headers=tokens.header(specialists[i])
        )
        return response.status, await response.json()

    results = await asyncio.gather(*(accept(i) for i in range(50)))
    winners = [body for status, body in results if status == 200]
    assert len(winners) == 1
    assert sorted({body["error"]["code"] for status, body in results if status != 200}) == [
        "already_accepted"
    ]
    stored = await (
        await node_b.get(f"/api/consults/{consult['id']}", headers=tokens.header(tokens.referrer))
    ).json()
    assert stored["specialist"] == winners[0]["consult"]["specialist"]
    assert stored["session_id"] == winners[0]["session"]["id"]


async def test_consult_created_on_one_node_is_pushed_from_the_other(
    aiohttp_client, settings, tokens, redis_url
):
    node_a, node_b = await two_nodes(aiohttp_client, settings, redis_url)
    ws = await node_b.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": tokens.specialist, "ref": "a"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    created = await (
        await node_a.post("/api/consults", json=NEW, headers=tokens.header(tokens.referrer))
    ).json()
    pushed = await ws.receive_json(timeout=5)
    assert pushed["type"] == "consult.updated" and pushed["consult"]["id"] == created["id"]
    await ws.close()


async def test_redis_down_gives_503_and_node_keeps_serving(aiohttp_client, settings, tokens):
    with RedisServer() as server:
        node = await aiohttp_client(create_app(settings, store=RedisStore(server.url)))
        assert (await node.get("/readyz")).status == 200
        ws = await node.ws_connect("/ws")
        await ws.send_json({"type": "auth", "token": tokens.specialist, "ref": "a"})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        server.stop()

        response = await asyncio.wait_for(
            node.post("/api/consults", json=NEW, headers=tokens.header(tokens.referrer)), 10
        )
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "store_unavailable"
        ready = await node.get("/readyz")
        assert ready.status == 503
        assert (await node.get("/healthz")).status == 200
        await ws.send_json({"type": "join", "session_id": "s_any", "ref": "j"})
        while True:
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type == WSMsgType.TEXT
            data = json.loads(message.data)
            if data.get("ref") == "j":
                break
        assert data["code"] == "store_unavailable"
        await ws.send_json({"type": "ping", "ref": "p"})
        assert (await ws.receive_json(timeout=5))["type"] == "pong"
        await ws.close()


async def test_client_on_any_node_reaches_the_session_host(
    aiohttp_server, settings, tokens, redis_url
):
    """A session's media lives on one node; a client signalling through another node
    is carried there and gets live media from the hosting node."""
    from aiohttp import ClientSession

    from signaling.keys import MEDIA
    from tests.redis_server import free_port
    from tests.support.peers import JisrClient

    servers, apps = {}, {}
    for name in ("n_a", "n_b"):
        port = free_port()
        apps[name] = create_app(
            settings, store=RedisStore(redis_url), node_id=name,
            internal_url=f"http://127.0.0.1:{port}",
        )  # fmt: skip
        servers[name] = await aiohttp_server(apps[name], port=port)
    base = {name: str(server.make_url("")).rstrip("/") for name, server in servers.items()}

    async with ClientSession() as http:
        # Both nodes registered; sessions go to the least loaded, so load n_b first.
        apps["n_b"][MEDIA]._rooms["s_busy"] = object()  # n_b already hosts a session
        for app in apps.values():
            await app[CLUSTER].heartbeat()  # registers its load now
        consult = await (await http.post(
            f"{base['n_b']}/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
        )).json()  # fmt: skip
        accepted = await (await http.post(
            f"{base['n_b']}/api/consults/{consult['id']}/accept",
            headers=tokens.header(tokens.specialist),
        )).json()  # fmt: skip
        session = accepted["session"]
        assert session["node"] == "n_a"
        del apps["n_b"][MEDIA]._rooms["s_busy"]

        referrer = JisrClient(http, base["n_b"], tokens.referrer)  # through the other node
        specialist = JisrClient(http, base["n_a"], tokens.specialist)  # straight to the host
        try:
            for client in (referrer, specialist):
                await client.connect()
                joined = await client.join(session["id"])
                assert joined["type"] == "joined", joined
                assert (await client.start_media(publish=True))["type"] == "answer"
            for client in (referrer, specialist):
                await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)
            assert apps["n_a"][MEDIA].stats() == {"sessions": 1, "peers": 2}
            assert apps["n_b"][MEDIA].stats()["peers"] == 0
            roster = await referrer.expect(
                lambda m: m["type"] == "roster" and len(m["roster"]) == 2
            )
            assert {m["sub"] for m in roster["roster"]} == {"dr-amal", "dr-karim"}
        finally:
            await referrer.close()
            await specialist.close()


async def test_a_malformed_presence_entry_hides_nobody_else(
    aiohttp_client, settings, tokens, redis_url
):
    """Entries written into Redis by anything but a node (not JSON, the wrong shape)
    are left out: the supervisor still sees who is on call."""
    import redis.asyncio as aioredis

    node_a, _ = await two_nodes(aiohttp_client, settings, redis_url)
    ws = await node_a.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": tokens.specialist, "ref": "a"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    await ws.send_json({"type": "presence", "status": "available", "ref": "p"})
    assert (await ws.receive_json(timeout=5))["type"] == "presence.ok"
    admin = aioredis.from_url(redis_url)
    for sub, value in (("not-json", "{oops"), ("wrong-shape", '{"status": 7}'),
                       ("a-list", "[1, 2]")):  # fmt: skip
        await admin.set(f"jisr:presence:{sub}", value, px=60_000)
        await admin.sadd("jisr:presence-index", sub)
    await admin.aclose()
    answer = await node_a.get("/api/oncall", headers=tokens.header(tokens.supervisor))
    assert answer.status == 200, await answer.text()
    on_call = (await answer.json())["presence"]
    assert [(p["sub"], p["status"]) for p in on_call] == [("dr-karim", "available")]
    await ws.close()
