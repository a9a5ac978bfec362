"""A real aiortc client that speaks Jisr's signaling protocol, and synthetic media."""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass, field

import av
import numpy as np
from aiohttp import ClientSession, ClientWebSocketResponse
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

from media.aiortc_internals import restrict_host_addresses

VIDEO_CLOCK = 90000


class PatternVideoTrack(MediaStreamTrack):
    """Synthetic camera: a moving gradient at a fixed size and frame rate."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15, shade: int = 0) -> None:
        super().__init__()
        self.width, self.height, self.fps, self.shade = width, height, fps, shade
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # media pacing, not test synchronisation
        image = np.full((self.height, self.width, 3), self.shade, dtype=np.uint8)
        image[:, :, 1] = (np.arange(self.width, dtype=np.uint16) + self._count * 4) % 256
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._count * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        return frame


@dataclass
class Received:
    kind: str
    frames: list[tuple[float, int, int]] = field(default_factory=list)  # (time, width, height)
    first: asyncio.Event = field(default_factory=asyncio.Event)

    def rate(self, since: float, until: float) -> float:
        return sum(1 for t, _, _ in self.frames if since <= t < until) / (until - since)


class JisrClient:
    """Signaling over the WebSocket and one aiortc peer connection to the server."""

    def __init__(self, http: ClientSession, base_url: str, token: str) -> None:
        self.http = http
        self.base_url = base_url
        self.token = token
        self.ws: ClientWebSocketResponse | None = None
        self.pc: RTCPeerConnection | None = None
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.received: list[Received] = []
        self.tasks: list[asyncio.Task] = []
        self._reader: asyncio.Task | None = None
        self._refs = 0
        self.on_frame = None  # called with every decoded frame, when set

    async def connect(self) -> dict:
        self.ws = await self.http.ws_connect(self.base_url.replace("http", "ws", 1) + "/ws")
        self._reader = asyncio.ensure_future(self._read())
        return await self.request({"type": "auth", "token": self.token, "batch": True})

    async def _read(self) -> None:
        async for msg in self.ws:
            data = msg.json()
            for message in data if isinstance(data, list) else [data]:  # a batch
                self.inbox.put_nowait(message)

    async def send(self, message: dict) -> str:
        self._refs += 1
        ref = message.setdefault("ref", f"r{self._refs}")
        await self.ws.send_json(message)
        return ref

    async def expect(self, predicate, timeout: float = 10.0) -> dict:
        async def wait() -> dict:
            while True:
                message = await self.inbox.get()
                if predicate(message):
                    return message

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, message: dict, timeout: float = 10.0) -> dict:
        ref = await self.send(message)
        return await self.expect(lambda m: m.get("ref") == ref, timeout)

    async def join(self, session_id: str) -> dict:
        return await self.request({"type": "join", "session_id": session_id})

    async def start_media(
        self,
        *,
        publish: bool,
        receive_pairs: int = 1,
        video=None,
        audio=None,
        video_codecs: tuple[str, ...] | None = None,
        munge=None,
        screen=None,
        screen_slot: bool = False,
    ) -> dict:
        """``video_codecs`` limits what a publisher offers on its camera and screen
        m-lines, first preferred (e.g. ("video/H264",)); ``munge`` rewrites the offer's
        SDP text before it is sent; ``video`` and ``audio`` are the tracks published (a
        pattern and silence by default)."""
        # Test peers live on loopback, like the servers they talk to (in this process
        # or another); in a fresh network namespace it is the only address anyway.
        restrict_host_addresses(["127.0.0.1"])
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            received = Received(track.kind)
            self.received.append(received)
            self.tasks.append(asyncio.ensure_future(self._consume(track, received, self)))

        if publish:
            self.pc.addTransceiver(audio or AudioStreamTrack(), direction="sendrecv")
            videos = [self.pc.addTransceiver(video or PatternVideoTrack(), direction="sendrecv")]
            if screen is not None or screen_slot:  # a third m-line: screen share
                videos.append(self.pc.addTransceiver(screen or "video", direction="sendrecv"))
            if video_codecs:  # on the camera's m-line and the screen's, in this order
                order = [c.lower() for c in video_codecs] + ["video/rtx"]
                offered = sorted(
                    (c for c in RTCRtpSender.getCapabilities("video").codecs
                     if c.mimeType.lower() in order),
                    key=lambda c: order.index(c.mimeType.lower()),
                )  # fmt: skip
                for transceiver in videos:
                    transceiver.setCodecPreferences(offered)
        else:
            for _ in range(receive_pairs):
                self.pc.addTransceiver("audio", direction="recvonly")
                self.pc.addTransceiver("video", direction="recvonly")
            for _ in range(receive_pairs if screen_slot else 0):
                self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        reply = await self.request({"type": "offer", "sdp": munge(sdp) if munge else sdp})
        if reply["type"] == "answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply

    @staticmethod
    async def _consume(track: MediaStreamTrack, received: Received, client=None) -> None:
        try:
            while True:
                frame = await track.recv()
                if client is not None and client.on_frame is not None:
                    client.on_frame(track.kind, frame)
                size = (getattr(frame, "width", 0), getattr(frame, "height", 0))
                received.frames.append((time.monotonic(), *size))
                received.first.set()
        except MediaStreamError:
            pass

    def by_kind(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
