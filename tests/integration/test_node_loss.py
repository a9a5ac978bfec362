"""kill -9 of the node hosting a session's media: the session is re-homed on a live
node as the participants reconnect, and both have video again within 5 s."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import ClientSession

from tests.conftest import CLUSTER_SECRET, SECRET
from tests.integration.test_media_relay import start_consult
from tests.integration.test_workers import wait_for_nodes
from tests.redis_server import free_port
from tests.support.peers import JisrClient


def start_node(
    name: str, port: int, redis_url: str | None, log: Path | None = None, **extra_env: str
) -> subprocess.Popen:
    """A node process; its JSON log lines go to ``log`` when given. Without
    ``redis_url``, ``extra_env`` says where Redis is (JISR_REDIS_SENTINELS)."""
    env = {**os.environ, "JISR_PORT": str(port), "JISR_JWT_SECRET": SECRET,
           "JISR_ICE_ADDRESSES": "127.0.0.1", "JISR_CLUSTER_SECRET": CLUSTER_SECRET,
           "JISR_NODE_ID": name, "JISR_NODE_HEARTBEAT_S": "1", **extra_env}  # fmt: skip
    if redis_url is not None:
        env["JISR_REDIS_URL"] = redis_url
    out = subprocess.DEVNULL if log is None else log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "signaling.cli", "serve", "--workers", "1"], env=env,
        stdout=out, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_two_nodes(
    redis_url: str, **extra_env: str
) -> tuple[dict[str, subprocess.Popen], dict[str, str]]:
    """Nodes "n_a" and "n_b" sharing ``redis_url``: their processes and base URLs."""
    ports = {"n_a": free_port(), "n_b": free_port()}
    nodes = {name: start_node(name, port, redis_url, **extra_env) for name, port in ports.items()}
    return nodes, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


async def stop_nodes(nodes: dict[str, subprocess.Popen], clients: list[JisrClient]) -> None:
    for client in clients:
        await client.close()
    for process in nodes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


async def test_participants_resume_on_a_live_node_after_kill_9(redis_url, tokens):
    nodes, base = start_two_nodes(redis_url)
    clients: list[JisrClient] = []
    try:
        await wait_for_nodes(redis_url, 2, nodes["n_a"])
        async with ClientSession() as http:
            session_id = await start_consult(http, base["n_a"], tokens)  # hosted on n_a
            for token, via in ((tokens.referrer, "n_b"), (tokens.specialist, "n_a")):
                client = JisrClient(http, base[via], token)
                clients.append(client)
                await client.connect()
                assert (await client.join(session_id))["type"] == "joined"
                await client.start_media(publish=True)
            for client in clients:
                await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)

            nodes["n_a"].send_signal(signal.SIGKILL)
            nodes["n_a"].wait(10)
            killed = time.monotonic()
            # Each page sees its signaling drop (or its media stop) and comes back
            # through whatever node answers: here n_b.
            for client in clients:
                await client.close()
            resumed = []
            for token in (tokens.referrer, tokens.specialist):
                client = JisrClient(http, base["n_b"], token)
                resumed.append(client)
                clients.append(client)
                await client.connect()
                joined = await client.join(session_id)
                assert joined["type"] == "joined", joined
                assert (await client.start_media(publish=True))["type"] == "answer"
            for client in resumed:
                await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 10)
            took = time.monotonic() - killed
            print(f"both participants had video again {took:.2f} s after kill -9")
            assert took <= 5.0
            consult = joined["consult"]
            assert consult["state"] == "live" and consult["session_id"] == session_id
    finally:
        await stop_nodes(nodes, clients)
