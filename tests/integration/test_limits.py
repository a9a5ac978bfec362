"""Nobody starves: what one user or one address can make the server do is limited
(``429 rate_limited`` with ``Retry-After``; on the WebSocket an ``error`` with
``retry_after``), counted across nodes through Redis; consults, attachments and
sessions are capped. Limits here are set low; the defaults are far above any
clinician's pace."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession, WSMsgType

from signaling.app import create_app
from signaling.store import MemoryStore, RedisStore
from tests.conftest import make_settings
from tests.integration.test_attachments import PDF, upload
from tests.integration.test_media_relay import start_consult
from tests.redis_server import free_port

NEW = {"specialty": "cardiology", "urgency": "routine", "summary": "s", "patient_ref": "P-1"}
LOW = "consult.user=3/minute;chat.user=3/minute;message.user=20/second;sign_in.address=5/minute"


async def create(node, token: str):
    return await node.post("/api/consults", json=NEW, headers={"Authorization": f"Bearer {token}"})


async def refused_with(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    return (await response.json())["error"]


async def test_consult_creation_is_limited_per_user_across_nodes(aiohttp_client, redis_url, tokens):
    settings = make_settings(rate_limits=LOW, redis_url=redis_url)
    nodes = [
        await aiohttp_client(create_app(settings, store=RedisStore(redis_url), node_id=n))
        for n in ("n_a", "n_b")
    ]
    statuses = [(await create(nodes[i % 2], tokens.referrer)).status for i in range(3)]
    assert statuses == [201, 201, 201]
    limited = await create(nodes[1], tokens.referrer)  # the fourth, on either node
    error = await refused_with(limited, 429, "rate_limited")
    assert error["code"] == "rate_limited" and 1 <= error["retry_after"] <= 60
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # another user of the same facility is not held back
    colleague = tokens.make("referrer", "dr-lina", facility="hospital-a")
    assert (await create(nodes[0], colleague)).status == 201


async def test_caps_on_waiting_consults_and_attachments(aiohttp_client, tmp_path, tokens):
    from recordings.crypto import generate_key_file

    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        max_waiting_per_referrer=2, max_attachments_per_consult=2, recording_key=key,
        attachments_dir=tmp_path / "files", recordings_dir=tmp_path / "recordings",
    )  # fmt: skip
    node = await aiohttp_client(create_app(settings, store=MemoryStore()))
    first = await (await create(node, tokens.referrer)).json()
    second = await (await create(node, tokens.referrer)).json()
    error = await refused_with(await create(node, tokens.referrer), 429, "too_many_waiting")
    assert "2 consults waiting" in error["message"]
    await node.post(f"/api/consults/{first['id']}/cancel", headers=tokens.header(tokens.referrer))
    assert (await create(node, tokens.referrer)).status == 201  # one left the queue

    for _ in range(2):
        added = await upload(node, tokens, second["id"], PDF, "ecg.pdf", "application/pdf")
        assert added.status == 201
    third = await upload(node, tokens, second["id"], PDF, "ecg.pdf", "application/pdf")
    await refused_with(third, 409, "too_many_attachments")


async def ws_signed_in(http: ClientSession, base: str, token: str):
    ws = await http.ws_connect(base.replace("http", "ws", 1) + "/ws")
    await ws.send_json({"type": "auth", "token": token, "ref": "a"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    return ws


async def reply(ws, ref: str) -> dict:
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT, msg
            data = msg.json()
            for message in data if isinstance(data, list) else [data]:
                if message.get("ref") == ref:
                    return message


async def next_message(ws) -> dict:
    msg = await ws.receive()
    assert msg.type == WSMsgType.TEXT, msg
    data = msg.json()
    return data[0] if isinstance(data, list) else data


async def test_a_flooding_client_is_cut_off(aiohttp_server, tokens):
    server = await aiohttp_server(create_app(make_settings(rate_limits=LOW), store=MemoryStore()))
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        ws = await ws_signed_in(http, base, tokens.referrer)
        for _ in range(1100):  # far past 20 a second
            await ws.send_str('{"type": "ping"}')
        async with asyncio.timeout(10):
            while (msg := await ws.receive()).type == WSMsgType.TEXT:
                pass
        assert msg.type == WSMsgType.CLOSE and msg.data == 1008
        other = await ws_signed_in(http, base, tokens.specialist)  # others are served
        await other.send_json({"type": "ping", "ref": "x"})
        assert (await reply(other, "x"))["type"] == "pong"


async def test_websocket_messages_and_chat_are_limited(aiohttp_server, tokens):
    settings = make_settings(rate_limits=LOW)
    server = await aiohttp_server(create_app(settings, store=MemoryStore()))
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        ws = await ws_signed_in(http, base, tokens.referrer)
        await ws.send_json({"type": "join", "session_id": session_id, "ref": "j"})
        assert (await reply(ws, "j"))["type"] == "joined"
        answers = []
        for n in range(5):  # the fourth chat in a minute is refused
            await ws.send_json({"type": "chat", "text": f"line {n}", "ref": f"c{n}"})
            answers.append(await reply(ws, f"c{n}"))
        assert [a["type"] for a in answers] == ["chat.ok"] * 3 + ["error"] * 2
        assert answers[3]["code"] == "rate_limited" and answers[3]["retry_after"] >= 1
        # a flood of any message: past 20 a second the first is answered rate_limited
        # and the rest are dropped unanswered; the socket keeps serving
        for n in range(40):
            await ws.send_json({"type": "ping", "ref": f"p{n}"})
        first = await reply(ws, "p0")
        seen = [first]
        async with asyncio.timeout(5):
            while not any(m.get("code") == "rate_limited" for m in seen):
                seen.append(await next_message(ws))
        limited = seen[-1]
        await asyncio.sleep(limited["retry_after"])  # what the server asked to wait
        await ws.send_json({"type": "ping", "ref": "after"})
        async with asyncio.timeout(5):
            while seen[-1].get("ref") != "after":
                seen.append(await next_message(ws))
        kinds = [m["type"] if m["type"] == "pong" else m["code"] for m in seen]
        assert kinds.count("rate_limited") == 1 and kinds[-1] == "pong"
        assert 10 <= kinds.count("pong") - 1 < 20  # the join and chats count too
        # another user meanwhile is served as usual
        other = await ws_signed_in(http, base, tokens.specialist)
        await other.send_json({"type": "ping", "ref": "x"})
        assert (await reply(other, "x"))["type"] == "pong"
        await ws.close()
        await other.close()


async def test_an_address_sending_forged_tokens_waits(aiohttp_client, tokens):
    node = await aiohttp_client(create_app(make_settings(rate_limits=LOW), store=MemoryStore()))
    forged = tokens.referrer[:-4] + "AAAA"
    codes = []
    for _ in range(6):
        answer = await node.get("/api/me", headers=tokens.header(forged))
        codes.append((await answer.json())["error"]["code"])
    assert codes == ["token_invalid"] * 5 + ["rate_limited"]
    waits = await node.get("/api/me", headers=tokens.header(tokens.referrer))  # even a good one
    await refused_with(waits, 429, "rate_limited")
    assert int(waits.headers["Retry-After"]) >= 1


async def test_a_full_node_is_skipped_and_a_full_cluster_says_so(aiohttp_server, redis_url, tokens):
    settings = make_settings(max_sessions_per_node=1)
    bases = []
    for name in ("n_a", "n_b"):
        port = free_port()
        app = create_app(settings, store=RedisStore(redis_url), node_id=name,
                         internal_url=f"http://127.0.0.1:{port}")  # fmt: skip
        server = await aiohttp_server(app, port=port)
        bases.append(str(server.make_url("")).rstrip("/"))
    placed = []
    async with ClientSession() as http:
        for n in range(3):
            consult = await (await http.post(
                f"{bases[0]}/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
            )).json()  # fmt: skip
            accept = await http.post(
                f"{bases[0]}/api/consults/{consult['id']}/accept",
                headers=tokens.header(tokens.specialist),
            )
            if n < 2:
                assert accept.status == 200, await accept.text()
                placed.append((await accept.json())["session"]["node"])
            else:
                await refused_with(accept, 503, "no_capacity")
    assert placed == ["n_a", "n_b"]  # n_a took the first and was then full
