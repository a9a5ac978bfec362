"""A Redis failover under a live call, as deploy/ sets things up: a primary, a
replica and three Sentinels (TLS, ACL users), two Jisr node processes reaching
Redis through the Sentinels and each other over TLS, a session on one node with
one participant signalling through the other. The primary is killed with
``kill -9``; the run measures when the API answers again and checks that media
never stopped and that nothing was lost. Used by tests/integration/
test_redis_failover.py (once, asserted) and ``python -m bench.failover`` (runs)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import ClientSession

from tests.conftest import CLUSTER_SECRET, Tokens
from tests.integration.test_media_relay import start_consult
from tests.integration.test_node_loss import start_node
from tests.redis_secure import DOWN_AFTER_MS, SentinelGroup
from tests.redis_server import free_port
from tests.support.peers import JisrClient
from tests.support.tls import make_pki

NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "failover", "patient_ref": "P-5"}


@dataclass(frozen=True)
class Figures:
    kill_to_switch_s: float  # kill -9 to the Sentinels' +switch-master
    kill_to_api_s: float  # kill -9 to the first write the API took again
    switch_to_api_s: float
    kill_to_events_s: float  # to the first event carried between nodes again
    longest_media_gap_s: float  # between two frames at a subscriber, across it all


async def switch_watch(group: SentinelGroup) -> tuple[asyncio.Task, asyncio.Event]:
    """A task noting when a Sentinel announces +switch-master (its monotonic time)."""
    sentinel, pki = group.sentinels[0], group.pki
    client = aioredis.Redis(
        port=sentinel.port, ssl=True, ssl_ca_certs=str(pki.ca), ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key), password=group.passwords.sentinel_client,
    )  # fmt: skip
    pubsub = client.pubsub()
    await pubsub.subscribe("+switch-master")
    subscribed = asyncio.Event()

    async def watch() -> float:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message and message["type"] == "subscribe":
                    subscribed.set()
                elif message and message["type"] == "message":
                    return time.monotonic()
        finally:
            await pubsub.aclose()
            await client.aclose()

    return asyncio.ensure_future(watch()), subscribed


async def snapshot(http: ClientSession, bases: list[str], ids: dict, tokens: Tokens) -> list:
    """The consult's and the session's ids and states, through every node."""
    seen = []
    for base in bases:
        for kind, record_id in (("consults", ids["consult"]), ("sessions", ids["session"])):
            async with http.get(f"{base}/api/{kind}/{record_id}",
                                headers=tokens.header(tokens.referrer)) as response:  # fmt: skip
                body = await response.json()
                seen.append((response.status, body.get("id"), body.get("state")))
    return seen


async def until(check, timeout: float, what: str) -> float:
    """Polls ``check`` (a recovering service has nothing to wait on) until it holds;
    the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(0.05)  # polling interval, bounded by the deadline
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def longest_gap(frames: list, since: float, until_t: float) -> float:
    times = [t for t, _, _ in frames if since <= t <= until_t]
    if len(times) < 2:
        return until_t - since
    return max(b - a for a, b in zip([since, *times], [*times, until_t], strict=True))


async def wait_registered(group: SentinelGroup, names: set[str], nodes: dict) -> None:
    admin = aioredis.Redis(
        port=group.primary.port, ssl=True, ssl_ca_certs=str(group.pki.ca),
        ssl_certfile=str(group.pki.client_cert), ssl_keyfile=str(group.pki.client_key),
        username="admin", password=group.passwords.admin,
    )  # fmt: skip
    try:
        async def registered() -> bool:
            assert all(p.poll() is None for p in nodes.values()), "a node exited"
            return {k.decode().removeprefix("jisr:node:") for k in
                    await admin.keys("jisr:node:*")} >= names  # fmt: skip

        await until(registered, 30, "both nodes in the node map")
    finally:
        await admin.aclose()


def start_nodes(group: SentinelGroup, workdir: Path) -> tuple[dict, dict]:
    pki = group.pki
    env = {**group.jisr_env(), "JISR_INTERNAL_TLS_CERT_FILE": str(pki.server_cert),
           "JISR_INTERNAL_TLS_KEY_FILE": str(pki.server_key),
           "JISR_INTERNAL_CA_FILE": str(pki.ca)}  # fmt: skip
    ports = {"n_a": free_port(), "n_b": free_port()}
    nodes = {name: start_node(name, port, None, workdir / f"{name}.log", **env)
             for name, port in ports.items()}  # fmt: skip
    return nodes, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


async def at_least(frames: list, count: int) -> bool:
    return len(frames) >= count


async def join_call(http, base: dict, tokens: Tokens, session_id: str) -> list[JisrClient]:
    """The specialist straight on the host, the referrer through the other node."""
    clients = []
    for token, via in ((tokens.specialist, "n_a"), (tokens.referrer, "n_b")):
        client = JisrClient(http, base[via], token)
        clients.append(client)
        await client.connect()
        joined = await client.join(session_id)
        assert joined["type"] == "joined", joined
        assert (await client.start_media(publish=True))["type"] == "answer"
    for client in clients:
        video = client.by_kind("video")[0]
        await asyncio.wait_for(video.first.wait(), 20)
        # A second and a half of video before the kill: the gap is measured from
        # a second before it. (Frames arrive one by one: nothing to wait on.)
        await until(lambda video=video: at_least(video.frames, 20), 10, "video")
    return clients


async def run_failover(
    workdir: Path, tokens: Tokens, down_after_ms: int = DOWN_AFTER_MS
) -> Figures:
    group = SentinelGroup(workdir, make_pki(workdir / "pki"), down_after_ms=down_after_ms)
    group.start()
    nodes: dict = {}
    clients: list[JisrClient] = []
    try:
        nodes, base = start_nodes(group, workdir)
        await wait_registered(group, {"n_a", "n_b"}, nodes)
        async with ClientSession() as http:
            session_id = await start_consult(http, base["n_a"], tokens)  # hosted on n_a
            clients = await join_call(http, base, tokens, session_id)
            watcher = JisrClient(http, base["n_b"], tokens.other_specialist)
            clients.append(watcher)
            await watcher.connect()
            figures = await fail_over(http, group, base, tokens, session_id, clients)
    finally:
        for client in clients:
            await client.close()
        for process in nodes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)
        group.stop()
    logs = "".join(path.read_text(errors="replace") for path in workdir.glob("n_*.log"))
    secrets = [*group.passwords.placeholders().values(), CLUSTER_SECRET]
    assert "node.started" in logs and not [s for s in secrets if s in logs]  # none logged
    return figures


async def fail_over(http, group, base, tokens, session_id, clients) -> Figures:
    bases = [base["n_a"], base["n_b"]]
    async with http.get(f"{base['n_a']}/api/sessions/{session_id}",
                        headers=tokens.header(tokens.referrer)) as response:  # fmt: skip
        ids = {"session": session_id, "consult": (await response.json())["consult_id"]}
    before = await snapshot(http, bases, ids, tokens)
    assert {state for _, _, state in before} == {"live"}, before
    switch, subscribed = await switch_watch(group)
    await asyncio.wait_for(subscribed.wait(), 5)
    # The replica has every write so far (replication is asynchronous: see
    # deploy/README.md). WAIT takes up to a second (replicas acknowledge once a
    # second): in a thread, so that this process goes on receiving media.
    assert await asyncio.to_thread(replicated, group) == 1

    group.primary.kill()
    killed = time.monotonic()

    async def write_taken() -> bool:
        async with http.post(f"{base['n_b']}/api/consults", json=NEW,
                             headers=tokens.header(tokens.referrer)) as response:  # fmt: skip
            return response.status == 201

    api_back = await until(write_taken, 30, "the API to take writes again")
    switched = await asyncio.wait_for(switch, 30)
    events_back = await until(lambda: carried(http, base, tokens, clients[-1]), 30, "events")

    async def same_as_before() -> bool:
        return await snapshot(http, bases, ids, tokens) == before

    await until(same_as_before, 10, f"the consult and session as before: {before}")
    subscriber = clients[0].by_kind("video")[0]  # the specialist, receiving the referrer
    ended = time.monotonic()
    return Figures(
        kill_to_switch_s=switched - killed, kill_to_api_s=api_back - killed,
        switch_to_api_s=api_back - switched, kill_to_events_s=events_back - killed,
        longest_media_gap_s=longest_gap(subscriber.frames, killed - 1, ended),
    )  # fmt: skip


def replicated(group: SentinelGroup) -> int:
    admin = group.primary.admin()
    try:
        return admin.execute_command("WAIT", 1, 5000)
    finally:
        admin.close()


async def carried(http, base, tokens, watcher: JisrClient) -> bool:
    """A consult created on one node reaches a specialist connected to the other
    (each node's events subscription follows the failover)."""
    async with http.post(f"{base['n_a']}/api/consults", json=NEW,
                         headers=tokens.header(tokens.referrer)) as response:  # fmt: skip
        if response.status != 201:
            return False
        consult_id = (await response.json())["id"]
    try:
        await watcher.expect(lambda m: m.get("consult", {}).get("id") == consult_id, timeout=1)
        return True
    except TimeoutError:
        return False  # not subscribed again yet

