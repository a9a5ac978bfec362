"""Tokens are bounded in time, on every path: a token that lives too long is
refused; an open WebSocket whose token expires is signed out unless the page sends
a fresh one first (``reauth``); signing out revokes a token on every node at once
and closes its sockets."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession, WSMsgType

from signaling.app import create_app
from signaling.auth import mint_token
from signaling.store import MemoryStore, RedisStore
from tests.conftest import make_settings
from tests.support.peers import JisrClient


@pytest.fixture
async def node(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings, store=MemoryStore()))


async def test_a_token_that_lives_longer_than_allowed_is_refused(node, settings, tokens):
    ten_years = mint_token(
        settings, role="referrer", sub="dr-x", facility="h", ttl_s=10 * 365 * 86400
    )
    refused = await node.get("/api/me", headers=tokens.header(ten_years))
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "token_invalid"
    twelve_hours = mint_token(settings, role="referrer", sub="dr-x", facility="h")
    assert (await node.get("/api/me", headers=tokens.header(twelve_hours))).status == 200
    ws = await node.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": ten_years, "ref": "a"})
    seen = await until_closed(ws, timeout=5)
    assert [m.get("code", m.get("close")) for m in seen] == ["token_invalid", 4401]


async def signed_in(node, token: str):
    ws = await node.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token, "ref": "a"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    return ws


async def until_closed(ws, timeout: float) -> list[dict]:
    """Every message until the server closes the socket; the last item is the close
    code the server sent (the client's own ``close_code`` may say 1006 when the
    server drops the connection right after its close frame)."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type != WSMsgType.TEXT:
                return [*seen, {"close": msg.data if msg.type == WSMsgType.CLOSE else None}]
            seen.append(msg.json())


async def test_an_open_socket_is_signed_out_when_its_token_expires(node, settings):
    short = mint_token(settings, role="supervisor", sub="sup-x", ttl_s=2)
    ws = await signed_in(node, short)
    started = time.monotonic()
    seen = await until_closed(ws, timeout=10)
    assert [m.get("code", m.get("close")) for m in seen] == ["token_expired", 4401]
    assert time.monotonic() - started < 5


async def test_a_fresh_token_keeps_the_socket_open(node, settings):
    ws = await signed_in(node, mint_token(settings, role="supervisor", sub="sup-x", ttl_s=2))
    fresh = mint_token(settings, role="supervisor", sub="sup-x", ttl_s=4)
    await ws.send_json({"type": "reauth", "token": fresh, "ref": "r"})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "reauthed" and reply["ref"] == "r"
    started = time.monotonic()
    seen = await until_closed(ws, timeout=10)  # open past the first token's end
    assert time.monotonic() - started > 2.5
    assert [m.get("code", m.get("close")) for m in seen] == ["token_expired", 4401]
    # someone else's token is not a fresh token for this socket
    ws = await signed_in(node, mint_token(settings, role="supervisor", sub="sup-x", ttl_s=60))
    other = mint_token(settings, role="supervisor", sub="sup-y", ttl_s=60)
    await ws.send_json({"type": "reauth", "token": other, "ref": "r"})
    assert (await ws.receive_json(timeout=5))["code"] == "token_invalid"
    assert await until_closed(ws, timeout=5) == [{"close": 4401}]


async def test_sign_out_revokes_the_token_on_every_node(aiohttp_client, redis_url, settings):
    nodes = [
        await aiohttp_client(create_app(settings, store=RedisStore(redis_url), node_id=n))
        for n in ("n_a", "n_b")
    ]
    token = mint_token(settings, role="specialist", sub="dr-k", specialties=["cardiology"])
    header = {"Authorization": f"Bearer {token}"}
    sockets = [await signed_in(node, token) for node in nodes]
    assert (await nodes[1].get("/api/me", headers=header)).status == 200
    out = await nodes[0].post("/api/sign-out", headers=header)
    assert out.status == 200 and (await out.json()) == {"signed_out": True}
    # at once on the node that signed it out; on the others as soon as the news
    # reaches them through the store (a moment: it is published before the answer)
    signed_out = time.monotonic()
    for node in nodes:
        async with asyncio.timeout(2):
            while (refused := await node.get("/api/me", headers=header)).status == 200:
                assert node is not nodes[0], "the node that signed it out still accepts it"
                await asyncio.sleep(0.01)  # polling: the news is on its way
        assert refused.status == 401
        assert (await refused.json())["error"]["code"] == "token_revoked"
    print(f"refused on every node {1000 * (time.monotonic() - signed_out):.0f} ms after")
    # both nodes close the sockets that used it (read at once, as pages do)
    for seen in await asyncio.gather(*(until_closed(ws, 5) for ws in sockets)):
        assert [m.get("code", m.get("close")) for m in seen] == ["token_revoked", 4401]
    # a node started afterwards knows it too
    late = await aiohttp_client(create_app(settings, store=RedisStore(redis_url), node_id="n_c"))
    assert (await late.get("/api/me", headers=header)).status == 401
    # other tokens of the same user still work
    again = mint_token(settings, role="specialist", sub="dr-k", specialties=["cardiology"])
    assert (
        await nodes[1].get("/api/me", headers={"Authorization": f"Bearer {again}"})
    ).status == 200


async def test_a_proxied_socket_is_signed_out_too(aiohttp_server, redis_url, tokens):
    """A page signalling through another node than the host keeps its reauth
    working and is signed out at its token's end by either node."""
    from tests.integration.test_media_relay import start_consult
    from tests.redis_server import free_port

    settings = make_settings()
    servers = {}
    for name in ("n_a", "n_b"):
        port = free_port()
        app = create_app(settings, store=RedisStore(redis_url), node_id=name,
                         internal_url=f"http://127.0.0.1:{port}")  # fmt: skip
        servers[name] = await aiohttp_server(app, port=port)
    base = {name: str(s.make_url("")).rstrip("/") for name, s in servers.items()}
    async with ClientSession() as http:
        session_id = await start_consult(http, base["n_a"], tokens)
        short = mint_token(settings, role="referrer", sub="dr-amal", facility="hospital-a", ttl_s=3)
        client = JisrClient(http, base["n_b"], short)  # the session is on n_a
        try:
            await client.connect()
            assert (await client.join(session_id))["type"] == "joined"
            fresh = mint_token(settings, role="referrer", sub="dr-amal", facility="hospital-a",
                               ttl_s=5)  # fmt: skip
            assert (await client.request({"type": "reauth", "token": fresh}))["type"] == "reauthed"
            expired = await client.expect(lambda m: m.get("code") == "token_expired", 10)
            assert expired["type"] == "error"
        finally:
            await client.close()
