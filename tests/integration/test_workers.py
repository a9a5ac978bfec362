"""`jisr serve --workers 2`: two node processes on one port sharing one Redis; a
consult works whichever worker each client lands on, and each worker carries its
media on a UDP port of its own (JISR_MEDIA_UDP_PORT plus its index)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import redis.asyncio as aioredis
from aiohttp import ClientSession

from tests.conftest import CLUSTER_SECRET, SECRET
from tests.integration.test_media_relay import start_consult
from tests.redis_server import free_port
from tests.support.peers import JisrClient
from tests.support.udp import (
    candidate_ports,
    children_of,
    free_tcp_ports,
    free_udp_ports,
    udp_ports_of,
)


async def wait_for_nodes(url: str, count: int, process: subprocess.Popen) -> list[str]:
    client = aioredis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            keys = sorted(k.decode() for k in await client.keys("jisr:node:*"))
            if len(keys) >= count:
                return keys
            assert process.poll() is None, "the server exited"
            await asyncio.sleep(0.1)  # polling the node map, bounded by the deadline
        raise AssertionError(f"{count} nodes did not register")
    finally:
        await client.aclose()


async def internal_ports(url: str, nodes: list[str]) -> list[int]:
    client = aioredis.from_url(url)
    try:
        entries = [json.loads(await client.get(key)) for key in nodes]
    finally:
        await client.aclose()
    return [int(entry["internal_url"].rsplit(":", 1)[1]) for entry in entries]


async def test_two_workers_serve_one_consult(redis_url, tokens):
    port, media_port, internal_port = free_port(), free_udp_ports(2), free_tcp_ports(2)
    env = {**os.environ, "JISR_PORT": str(port), "JISR_JWT_SECRET": SECRET,
           "JISR_ICE_ADDRESSES": "127.0.0.1", "JISR_REDIS_URL": redis_url,
           "JISR_CLUSTER_SECRET": CLUSTER_SECRET,
           "JISR_MEDIA_UDP_PORT": str(media_port),
           "JISR_INTERNAL_PORT": str(internal_port)}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "signaling.cli", "serve", "--workers", "2"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        nodes = await wait_for_nodes(redis_url, 2, process)
        assert len(nodes) == 2
        # what the other node's firewall opens: one internal port per worker
        assert sorted(await internal_ports(redis_url, nodes)) == [internal_port, internal_port + 1]
        base = f"http://127.0.0.1:{port}"
        async with ClientSession() as http:
            session_id = await start_consult(http, base, tokens)
            clients = [JisrClient(http, base, t) for t in (tokens.referrer, tokens.specialist)]
            observer = JisrClient(http, base, tokens.supervisor)
            answer_ports = []
            try:
                for client in clients:
                    welcome = await client.connect()
                    assert welcome["node"] in {n.removeprefix("jisr:node:") for n in nodes}
                    assert (await client.join(session_id))["type"] == "joined"
                    reply = await client.start_media(publish=True)
                    assert reply["type"] == "answer"
                    answer_ports.append(candidate_ports(reply["sdp"]))
                await observer.connect()
                await observer.join(session_id)
                await observer.start_media(publish=False, receive_pairs=2)
                for client in [*clients, observer]:
                    for video in client.by_kind("video"):
                        await asyncio.wait_for(video.first.wait(), 20)
                # The session's media is on the port of the worker hosting it (whichever
                # worker a client's WebSocket reached); one UDP socket per worker.
                assert answer_ports[0] == answer_ports[1]
                assert answer_ports[0] in ({media_port}, {media_port + 1})
                held = sorted(p for pid in children_of(process.pid) for p in udp_ports_of(pid))
                assert held == [media_port, media_port + 1]
            finally:
                for client in [*clients, observer]:
                    await client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    client = aioredis.from_url(redis_url)
    assert await client.keys("jisr:node:*") == []  # both workers left the node map
    await client.aclose()
