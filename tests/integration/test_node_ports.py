"""A node whose fixed port is taken (by another server, or a second copy of Jisr)
stops at start with one coded line naming the setting, not a traceback, and a server
with workers stops as a whole rather than restarting them in a loop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pytest

from tests.conftest import CLUSTER_SECRET, SECRET
from tests.redis_server import free_port


async def run_serve(env: dict[str, str], workers: int = 1) -> tuple[int, list[dict], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling.cli", "serve", "--workers", str(workers),
        env={**os.environ, "JISR_JWT_SECRET": SECRET, "JISR_PORT": str(free_port()),
             "JISR_ICE_ADDRESSES": "127.0.0.1", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    output = out.decode(errors="replace")
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return process.returncode, lines, output


def taken(kind: socket.SocketKind) -> socket.socket:
    """A port on 127.0.0.1 held by someone else for the length of the test."""
    holder = socket.socket(socket.AF_INET, kind)
    holder.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        holder.listen()
    return holder


@pytest.mark.parametrize(
    ("setting", "kind"),
    [("JISR_MEDIA_UDP_PORT", socket.SOCK_DGRAM), ("JISR_INTERNAL_PORT", socket.SOCK_STREAM)],
)
async def test_a_taken_port_stops_the_node_with_a_coded_line(setting, kind):
    with taken(kind) as holder:
        port = holder.getsockname()[1]
        code, lines, output = await run_serve({setting: str(port)})
    assert code == 1, output
    failed = [line for line in lines if line["event"] == "node.start_failed"]
    assert [(f["reason"], f["setting"], f["port"]) for f in failed] == [
        ("port_in_use", setting, port)
    ], output
    assert "Traceback" not in output


async def test_with_workers_a_taken_port_stops_the_server(redis_url):
    with taken(socket.SOCK_STREAM) as holder:
        port = holder.getsockname()[1]  # worker 0's internal port; worker 1's may be free
        env = {"JISR_REDIS_URL": redis_url, "JISR_CLUSTER_SECRET": CLUSTER_SECRET,
               "JISR_INTERNAL_PORT": str(port)}  # fmt: skip
        code, lines, output = await run_serve(env, workers=2)
    assert code == 1, output
    events = [line["event"] for line in lines]
    assert "node.start_failed" in events and "node.workers_stopped" in events, output
    assert "node.worker_restarted" not in events
    assert "Traceback" not in output


async def test_ports_past_65535_for_the_workers_are_refused_before_starting(redis_url):
    env = {"JISR_REDIS_URL": redis_url, "JISR_CLUSTER_SECRET": CLUSTER_SECRET,
           "JISR_INTERNAL_PORT": "65535"}  # fmt: skip
    code, _, output = await run_serve(env, workers=2)
    assert code == 2
    assert "JISR_INTERNAL_PORT" in output and "workers do not fit" in output
