"""No task media starts, or has aiortc start for it, dies with an exception nobody
retrieves: the failure is logged and the peer let go."""

from __future__ import annotations

import asyncio
import re

import structlog
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media.aiortc_internals import guard_connection_task, keep_codecs_off, restrict_host_addresses
from media.node import MediaNode


async def test_a_failing_connection_task_is_caught_with_its_error():
    """aiortc's connection task asserts on an offer without a fingerprint once ICE is
    up; the guard hands that failure over instead of letting the task die unseen."""
    restrict_host_addresses(["127.0.0.1"])
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    client, server = RTCPeerConnection(config), RTCPeerConnection(config)
    failed: asyncio.Future = asyncio.get_running_loop().create_future()
    guard_connection_task(server, failed.set_result)
    try:
        client.addTransceiver("audio", direction="sendrecv")
        await client.setLocalDescription(await client.createOffer())
        offer = re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", client.localDescription.sdp)
        await server.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        for transceiver in server.getTransceivers() + client.getTransceivers():
            keep_codecs_off(transceiver)
        await server.setLocalDescription(await server.createAnswer())
        await client.setRemoteDescription(server.localDescription)
        assert isinstance(await asyncio.wait_for(failed, 15), AssertionError)
    finally:
        await client.close()
        await server.close()
        restrict_host_addresses([])


async def test_a_failing_background_task_is_logged():
    node = MediaNode()

    async def fails() -> None:
        raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs:
        task = node._in_background(fails(), "peer.disconnect_failed")
        await asyncio.wait({task}, timeout=5)
    assert task.done() and not node._tasks
    [entry] = [e for e in logs if e["event"] == "peer.disconnect_failed"]
    assert (entry["error"], entry["log_level"]) == ("RuntimeError", "error")
    await node.close()
