"""Participants come back by themselves: after their WebSocket is cut, and after
their media path is blocked for 10 s. The other side does nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.integration.test_media_relay import start_consult
from tests.support.peers import JisrClient


@pytest.fixture
async def call(aiohttp_server, settings, tokens):
    server = await aiohttp_server(create_app(settings, store=MemoryStore()))
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        clients = []
        for token in (tokens.referrer, tokens.specialist):
            client = JisrClient(http, base, token)
            clients.append(client)
            await client.connect()
            await client.join(session_id)
            await client.start_media(publish=True)
        for client in clients:
            await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)
        yield http, base, session_id, clients
        for client in clients:
            await client.close()


async def frames_resume(video, since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = [t for t, _, _ in video.frames if t > since]
        if len(recent) >= 5:
            return recent[0] - since
        await asyncio.sleep(0.05)  # polling the frame log, bounded by the deadline
    raise AssertionError("video did not resume")


async def test_resumes_after_the_websocket_is_cut(call, tokens):
    http, base, session_id, (referrer, specialist) = call
    await referrer.ws.close()  # the referrer's network drops: signaling and media
    await referrer.pc.close()
    cut = time.monotonic()
    held = await specialist.expect(lambda m: m["type"] == "roster" and any(
        e["sub"] == "dr-amal" and e["status"] == "reconnecting" for e in m["roster"]))  # fmt: skip
    assert len(held["roster"]) == 2
    back = JisrClient(http, base, tokens.referrer)  # the page reconnects on its own
    try:
        await back.connect()
        assert (await back.join(session_id))["type"] == "joined"
        await back.start_media(publish=True)
        # The specialist keeps its peer connection and simply sees video again.
        took = await frames_resume(specialist.by_kind("video")[0], cut, 10)
        await asyncio.wait_for(back.by_kind("video")[0].first.wait(), 10)
        assert took < 5
    finally:
        await back.close()


def block(client: JisrClient) -> callable:
    """Drop every datagram the client sends or receives; returns the undo."""
    connection = client.pc.getTransceivers()[0].receiver.transport.transport._connection
    undo = []
    for protocol in connection._protocols:
        transport, received = protocol.transport, protocol.datagram_received
        original_send = transport.sendto
        transport.sendto = lambda *a, **k: None
        protocol.datagram_received = lambda *a, **k: None
        undo.append((transport, original_send, protocol, received))

    def unblock() -> None:
        for transport, original_send, protocol, received in undo:
            transport.sendto = original_send
            protocol.datagram_received = received

    return unblock


async def test_resumes_after_the_media_path_is_blocked_for_10_s(call):
    http, base, session_id, (referrer, specialist) = call
    unblock = block(referrer)
    await asyncio.sleep(10)  # the outage itself
    unblock()
    back = time.monotonic()
    took_specialist = await frames_resume(specialist.by_kind("video")[0], back, 10)
    took_referrer = await frames_resume(referrer.by_kind("video")[0], back, 10)
    print(
        f"after a 10 s media outage: video back in {took_specialist:.2f} s / {took_referrer:.2f} s"
    )
    assert max(took_specialist, took_referrer) < 5
