"""Light publishers for the scale case, in the load generators: the clip's VP8 frames
cut into RTP packets once, then sent for every publisher of the process by one
paced loop, each packet protected and sent at once. aiortc's own sender (an
``av.Packet`` per frame, its payloader, a task per track) would cost the
generators more than the middles being measured once there are dozens of streams.

The same packets reach a WebRTC middle (Jisr, Janus) through a peer connection's
transport (``media.aiortc_internals.Tap``), and the bare relay (``bench.floor``)
through a plain UDP socket with SRTP under a fixed key.
"""

from __future__ import annotations

import asyncio
import heapq
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pylibsrtp

from . import clients  # Clip, Stream (clients imports this module)
from .floor import FLOOR_DOWN_KEY, FLOOR_UP_KEY, floor_ssrc, srtp_session

MAX_PAYLOAD = 1100  # bytes of VP8 per packet, the descriptor aside
VIDEO_CLOCK_PER_FRAME = 3000  # 90 kHz at 30 fps
FLOOR_PAYLOAD_TYPE = 96
GOLDEN = 0.6180339887  # spreads the outlets' phases evenly, however many


def vp8_frames(clip: clients.Clip) -> list[list[bytes]]:
    """Each frame of the clip as the VP8 payloads of its packets, descriptor not
    yet added (its PictureID changes with every frame sent)."""
    frames = []
    for _, data in clip.packets:
        count = -(-len(data) // MAX_PAYLOAD)
        size = -(-len(data) // count)  # equal parts, the last one shorter
        frames.append([data[i : i + size] for i in range(0, len(data), size)])
    return frames


@dataclass
class Outlet:
    """One publisher's video stream: its header fields and how a packet leaves."""

    send: Callable[[bytes], object]
    ssrc: int
    payload_type: int
    seq: int = 0
    sent: int = 0

    def send_frame(self, payloads: list[bytes], index: int) -> None:
        timestamp = (index * VIDEO_CLOCK_PER_FRAME) & 0xFFFFFFFF
        picture = 0x8000 | (index & 0x7FFF)  # 15-bit PictureID, as browsers send
        last = len(payloads) - 1
        for k, payload in enumerate(payloads):
            marker = 0x80 if k == last else 0
            start = 0x10 if k == 0 else 0  # S: the start of the frame's first partition
            header = struct.pack(
                "!BBHIIBBH", 0x80, marker | self.payload_type, self.seq, timestamp, self.ssrc,
                0x80 | start, 0x80, picture,
            )  # fmt: skip
            self.send(header + payload)
            self.seq = (self.seq + 1) & 0xFFFF
        self.sent += 1


@dataclass
class Pacer:
    """Sends the clip's next frame for every outlet, 30 times a second each, the
    outlets spread over the frame interval as independent cameras would be (all at
    once would hand every middle its datagrams in batches, fewer wake-ups than real
    publishers cause)."""

    frames: list[list[bytes]]
    fps: int = 30
    outlets: list[Outlet] = field(default_factory=list)
    task: asyncio.Task | None = None
    _due: list[tuple[float, int]] = field(default_factory=list)  # (time, outlet) heap

    def add(self, outlet: Outlet) -> None:
        loop = asyncio.get_running_loop()
        phase = (len(self.outlets) * GOLDEN) % 1.0 / self.fps
        heapq.heappush(self._due, (loop.time() + phase, len(self.outlets)))
        self.outlets.append(outlet)
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop, interval = asyncio.get_running_loop(), 1.0 / self.fps
        while True:
            due, n = self._due[0]
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            outlet = self.outlets[n]
            outlet.send_frame(self.frames[outlet.sent % len(self.frames)], outlet.sent)
            heapq.heapreplace(self._due, (due + interval, n))


class FloorReceiver(asyncio.DatagramProtocol):
    """A subscriber of the bare relay: asks for one stream (again every second, as
    a receiver report would), decrypts and counts its frames."""

    def __init__(self, relay: tuple[str, int], stream: int) -> None:
        self.relay, self.ssrc = relay, floor_ssrc(stream)
        self.streams: dict[int, clients.Stream] = {}
        self._srtp = srtp_session(FLOOR_DOWN_KEY, inbound=True)
        self.transport: asyncio.DatagramTransport | None = None
        self._ask: asyncio.Task | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._ask = asyncio.ensure_future(self._keep_asking())

    async def _keep_asking(self) -> None:
        while True:
            self.transport.sendto(b"SUB %d" % self.ssrc, self.relay)
            await asyncio.sleep(1.0)

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            packet = self._srtp.unprotect(data)
        except pylibsrtp.Error:
            return
        stream = self.streams.get(self.ssrc)
        if stream is None:
            stream = self.streams[self.ssrc] = clients.Stream("video")
        stream.seq = (packet[2] << 8) | packet[3]
        if packet[1] & 0x80:
            stream.frames += 1

    def close(self) -> None:
        if self._ask is not None:
            self._ask.cancel()
        if self.transport is not None:
            self.transport.close()


@dataclass(eq=False)
class FloorClient:
    """A publisher or subscriber of the bare relay, as ``clients.Client`` is of the
    WebRTC middles (``spec``: name, base ``udp://host:port``, stream, publish, expect)."""

    spec: dict
    pacer: Pacer
    receiver: FloorReceiver | None = None
    transport: asyncio.DatagramTransport | None = None
    pushed: list[str] = field(default_factory=list)

    async def start(self, _http) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.spec["base"].removeprefix("udp://").rsplit(":", 1)
        relay, stream = (host, int(port)), self.spec["stream"]
        if self.spec["publish"]:
            self.transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=relay
            )
            srtp, sendto = srtp_session(FLOOR_UP_KEY, inbound=False), self.transport.sendto
            send = lambda packet: sendto(srtp.protect(packet))  # noqa: E731
            self.pacer.add(Outlet(send, floor_ssrc(stream), FLOOR_PAYLOAD_TYPE))
        else:
            self.transport, self.receiver = await loop.create_datagram_endpoint(
                lambda: FloorReceiver(relay, stream), local_addr=(host, 0)
            )

    def state(self) -> str:
        return "connected" if self.transport is not None else "new"

    def streams(self) -> dict:
        found = self.receiver.streams if self.receiver else {}
        return {
            str(k): {"kind": s.kind, "frames": s.frames, "size": None} for k, s in found.items()
        }

    def missing(self) -> str | None:
        if self.receiver is not None and not any(s["frames"] for s in self.streams().values()):
            return "no video yet"
        return None

    async def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
        elif self.transport is not None:
            self.transport.close()
