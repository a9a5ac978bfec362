"""Every node tells the same story of a session: its roster and state read through
any node are the host's, during a call, after a participant reconnects through
another node, and after the host is killed and the session re-homed; the move is
recorded in the audit trail exactly once, however many participants rejoin at once."""

from __future__ import annotations

import asyncio
import json
import signal

from aiohttp import ClientSession

from tests.integration.test_media_relay import start_consult
from tests.integration.test_node_loss import start_node, stop_nodes
from tests.integration.test_workers import wait_for_nodes
from tests.redis_server import free_port
from tests.support.peers import JisrClient


async def view(http: ClientSession, base: str, session_id: str, token: str) -> dict:
    async with http.get(
        f"{base}/api/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def same_everywhere(http, bases: list[str], session_id: str, token: str, subs: set) -> dict:
    """The view through every node, once the roster holds ``subs`` (a join's roster
    is written just after its reply). The views must agree: they are read one after
    another while the call goes on (media connecting), so a change between two reads
    is read again; views that never agree fail."""
    views: list[dict] = []
    try:
        async with asyncio.timeout(10):
            while True:
                views = [await view(http, base, session_id, token) for base in bases]
                settled = {m["sub"] for m in views[0]["roster"]} == subs
                if settled and all(other == views[0] for other in views[1:]):
                    return views[0]
                await asyncio.sleep(0.05)  # polling the roster, bounded by the timeout
    except TimeoutError:
        raise AssertionError(f"the nodes never agreed: {views}") from None


async def join(http, base: str, token: str, session_id: str, media: bool) -> JisrClient:
    """Join as a page does, trying again when a node is mid-move (node_unavailable)."""
    for _ in range(20):
        client = JisrClient(http, base, token)
        await client.connect()
        joined = await client.join(session_id)
        if joined["type"] == "joined":
            if media:
                assert (await client.start_media(publish=True))["type"] == "answer"
            return client
        assert joined.get("code") == "node_unavailable", joined
        await client.close()
    raise AssertionError("could not join")


def rehomed(logs: list) -> list[dict]:
    lines = [json.loads(line) for log in logs for line in log.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    return [e for e in lines if e.get("event") == "session.rehomed" and e.get("audit")]


async def test_the_session_view_is_the_same_from_every_node(redis_url, tokens, tmp_path):
    names = ("n_a", "n_b", "n_c")
    logs = {name: tmp_path / f"{name}.log" for name in names}
    ports = {name: free_port() for name in names}
    nodes = {name: start_node(name, ports[name], redis_url, logs[name]) for name in names}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    clients: list[JisrClient] = []
    people = {"dr-amal", "dr-karim", "sup-leila"}
    try:
        await wait_for_nodes(redis_url, 3, nodes["n_a"])
        async with ClientSession() as http:
            session_id = await start_consult(http, base["n_a"], tokens)  # hosted on n_a
            for token, via, media in ((tokens.referrer, "n_b", True),
                                      (tokens.specialist, "n_a", True),
                                      (tokens.supervisor, "n_c", False)):  # fmt: skip
                clients.append(await join(http, base[via], token, session_id, media))
            during = await same_everywhere(
                http, list(base.values()), session_id, tokens.supervisor, people
            )
            assert during["node"] == "n_a" and during["state"] == "live"

            # The referrer's page comes back through another node.
            await clients[0].close()
            clients[0] = await join(http, base["n_c"], tokens.referrer, session_id, True)
            again = await same_everywhere(
                http, list(base.values()), session_id, tokens.supervisor, people
            )
            assert {m["status"] for m in again["roster"]} == {"connected"}

            nodes["n_a"].send_signal(signal.SIGKILL)
            nodes["n_a"].wait(10)
            for client in clients:
                await client.close()
            # Everyone comes back at once, through both surviving nodes.
            clients[:] = await asyncio.gather(
                join(http, base["n_b"], tokens.referrer, session_id, True),
                join(http, base["n_b"], tokens.specialist, session_id, True),
                join(http, base["n_c"], tokens.supervisor, session_id, False),
            )
            alive = [base["n_b"], base["n_c"]]
            after = await same_everywhere(http, alive, session_id, tokens.supervisor, people)
            assert after["node"] in ("n_b", "n_c") and after["state"] == "live"
    finally:
        await stop_nodes(nodes, clients)
    moves = rehomed(list(logs.values()))
    assert len(moves) == 1, moves
    assert moves[0]["from_node"] == "n_a" and moves[0]["to_node"] == after["node"]
