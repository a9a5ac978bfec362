"""The baseline: aiortc's stock way to fan media out, as in its own examples.

Each publisher's tracks are decoded by aiortc and shared through a MediaRelay; each
subscriber gets its own encoder. ``POST /offer {"sdp", "role": "publish"|"subscribe",
"slot"}`` answers ``{"sdp"}``; a subscriber receives the slot's current publisher.

    python -m bench.stock_server --port 8090
"""

from __future__ import annotations

import argparse

import aioice.ice
from aiohttp import web
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

relay = MediaRelay()
sources: dict[str, dict[str, object]] = {}  # slot -> kind -> the publisher's remote track
pcs: set[RTCPeerConnection] = set()


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    slot = body.get("slot", "a")
    # No STUN server, and max-bundle as with Jisr (aiortc mis-bundles otherwise).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    pcs.add(pc)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            pcs.discard(pc)
            await pc.close()

    if body["role"] == "publish":
        pc.on("track", lambda track: sources.setdefault(slot, {}).__setitem__(track.kind, track))
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
    else:
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        for transceiver in pc.getTransceivers():
            source = sources.get(slot, {}).get(transceiver.kind)
            if source is not None:
                pc.addTrack(relay.subscribe(source))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def on_shutdown(app: web.Application) -> None:
    for pc in list(pcs):
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    # Host candidates on loopback only (aioice leaves loopback out by default).
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    app = web.Application()
    app.router.add_post("/offer", offer)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(on_shutdown)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
