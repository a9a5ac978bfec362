"""The baseline for bench.recording: aiortc's stock way to record a participant.

The server's peer receives the publisher's tracks (aiortc decodes them) and writes
them with ``aiortc.contrib.media.MediaRecorder`` to a WebM file (libvpx + libopus:
every frame decoded and encoded again), as in aiortc's own examples.

    python -m bench.recording_server --port 8091 --dir /tmp/out

``POST /offer {"sdp", "role": "publish", "slot"}`` answers ``{"sdp"}`` and starts
recording that publisher to ``DIR/<slot>.webm``; ``GET /stats`` tells how many frames
of each kind the recorders took so far; ``POST /stop`` finishes every file and
answers ``{"files": [...], "frames": {...}}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import aioice.ice
from aiohttp import web
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamTrack

OUT = web.AppKey("out", Path)
pcs: set[RTCPeerConnection] = set()
recorders: dict[str, tuple[MediaRecorder, Path]] = {}  # slot -> its recorder and file


class CountedTrack(MediaStreamTrack):
    """A received track as it is, counting the frames the recorder takes from it."""

    def __init__(self, track: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = track.kind
        self._track = track
        self.frames = 0

    async def recv(self):
        frame = await self._track.recv()
        self.frames += 1
        return frame


counted: list[CountedTrack] = []


def frames() -> dict[str, int]:
    totals: dict[str, int] = {}
    for track in counted:
        totals[track.kind] = totals.get(track.kind, 0) + track.frames
    return totals


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    if body.get("role") != "publish":
        raise web.HTTPBadRequest(text="this server only records publishers")
    slot = body.get("slot", "a")
    if slot in recorders:
        raise web.HTTPConflict(text=f"slot {slot} is already being recorded")
    # No STUN server, and max-bundle as with Jisr (aiortc mis-bundles otherwise).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    pcs.add(pc)
    path = request.app[OUT] / f"{slot}.webm"
    recorder = MediaRecorder(str(path))
    recorders[slot] = (recorder, path)

    def on_track(track: MediaStreamTrack) -> None:
        wrapped = CountedTrack(track)
        counted.append(wrapped)
        recorder.addTrack(wrapped)

    pc.on("track", on_track)
    await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await recorder.start()
    return web.json_response({"sdp": pc.localDescription.sdp})


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"t": time.monotonic(), "frames": frames()})


async def stop(request: web.Request) -> web.Response:
    taken = frames()
    files = []
    for slot, (recorder, path) in list(recorders.items()):
        await recorder.stop()
        files.append(str(path))
        del recorders[slot]
    for pc in list(pcs):
        await pc.close()
    pcs.clear()
    return web.json_response({"files": files, "frames": taken})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def on_shutdown(app: web.Application) -> None:
    for recorder, _ in recorders.values():
        await recorder.stop()
    for pc in list(pcs):
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--dir", type=Path, required=True, help="where the files go")
    args = parser.parse_args()
    # Host candidates on loopback only (aioice leaves loopback out by default).
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    args.dir.mkdir(parents=True, exist_ok=True)
    app = web.Application()
    app[OUT] = args.dir
    app.router.add_post("/offer", offer)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stop", stop)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(on_shutdown)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
