"""Load generators: aiortc clients of Jisr and of the stock server, run in worker
processes (worker_main), one asyncio loop each.

Publishers stream the pre-encoded clip without an encoder. Subscribers count what
arrives without decoding: a Tap on the client's transport counts RTP packets per
SSRC, and a video frame is complete when its marker-bit packet arrives. A client
with ``decode`` on receives normally instead (aiortc jitter buffer and decoder),
which proves the picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import random
import signal
import time
from dataclasses import dataclass, field

import av
from aiohttp import ClientSession, WSMsgType
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket
from aiortc.sdp import SessionDescription

from media.aiortc_internals import Tap, keep_codecs_off, restrict_host_addresses

from . import janus
from .common import die_with_parent
from .isolation import place_generator
from .paced import FloorClient, Outlet, Pacer, vp8_frames
from .simulcast_sender import SimulcastSender, simulcast_offer

READY_TIMEOUT_S = 30


# -- the source --------------------------------------------------------------------------


@dataclass
class Clip:
    packets: list[tuple[float, bytes]]  # (seconds from the start, encoded frame)
    period: float  # seconds, one pass of the clip
    clock: int  # RTP clock rate


def load_clip(path: str) -> dict[str, Clip]:
    """Demux the clip once into memory: every publisher of the process shares it."""
    container = av.open(path)
    found: dict[str, list] = {"video": [], "audio": []}
    for packet in container.demux():
        if packet.size and packet.pts is not None and packet.stream.type in found:
            found[packet.stream.type].append(
                (
                    float(packet.pts * packet.time_base),
                    float(packet.duration * packet.time_base),
                    bytes(packet),
                )
            )
    container.close()
    clips = {}
    for kind, items in found.items():
        first = items[0][0]
        period = items[-1][0] - first + items[-1][1]
        clips[kind] = Clip(
            [(t - first, data) for t, _, data in items], period, 90000 if kind == "video" else 48000
        )
    return clips


class ClipTrack(MediaStreamTrack):
    """Encoded frames of the clip, looped at its own pace with timestamps that keep
    increasing. aiortc packetises an ``av.Packet`` as it is, with no encoder.

    aiortc's MediaPlayer(decode=False, loop=True) cannot do this: after the first
    pass it sends as fast as it can read, and its timestamps jump back to zero.
    """

    def __init__(self, kind: str, clip: Clip) -> None:
        super().__init__()
        self.kind = kind
        self._clip = clip
        self._time_base = fractions.Fraction(1, clip.clock)
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        passes, i = divmod(self._index, len(self._clip.packets))
        offset, data = self._clip.packets[i]
        at = passes * self._clip.period + offset
        delay = self._start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # media pacing
        self._index += 1
        packet = av.Packet(data)
        packet.pts = round(at * self._clip.clock)
        packet.time_base = self._time_base
        return packet


# -- counting what arrives ---------------------------------------------------------------


@dataclass
class Stream:
    kind: str
    frames: int = 0  # video: complete frames (marker bit); audio: packets
    size: tuple[int, int] | None = None  # decoded frames only
    seq: int = 0  # the last sequence number seen
    octets: int = 0  # RTP bytes received


class CountingTap(Tap):
    """Counts incoming RTP per SSRC; RTCP still takes aiortc's own path, so this
    client's senders keep hearing NACKs and receiver reports.

    It also sends receiver reports as aiortc's receiver would (every 0.5-1.5 s): the
    server stops forwarding to a peer it has not heard from for a few seconds.
    """

    def __init__(self, pc: RTCPeerConnection, kinds: dict[int, str]) -> None:
        self.streams: dict[int, Stream] = {}
        self._kinds = kinds  # payload type -> kind (RTX and the like left out)
        self._ssrc = pc.getTransceivers()[0].sender._ssrc  # as aiortc's RTCP would use
        super().__init__(pc, self._count, lambda _data: None)
        self._reports = asyncio.ensure_future(self._send_reports())

    async def _send_reports(self) -> None:
        while True:
            await asyncio.sleep(0.5 + random.random())
            if self.streams:
                report = RtcpRrPacket(
                    ssrc=self._ssrc,
                    reports=[
                        RtcpReceiverInfo(ssrc, 0, 0, s.seq, 0, 0, 0)
                        for ssrc, s in list(self.streams.items())[:31]
                    ],
                )
                self.send(bytes(report), rtcp=True)

    def close(self) -> None:
        self._reports.cancel()
        super().close()

    def _data_received(self, data: bytes, component: int) -> None:
        if len(data) > 1 and 191 < data[1] < 224:  # RTCP (RFC 5761)
            self._original(data, component)
        else:
            super()._data_received(data, component)

    def _count(self, packet: bytes) -> None:
        ssrc = int.from_bytes(packet[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            kind = self._kinds.get(packet[1] & 0x7F)
            if kind is None:
                return
            stream = self.streams[ssrc] = Stream(kind)
        stream.seq = (packet[2] << 8) | packet[3]
        stream.octets += len(packet)
        if stream.kind == "audio" or packet[1] & 0x80:
            stream.frames += 1


def media_payload_types(sdp: str) -> dict[int, str]:
    kinds = {}
    for media in SessionDescription.parse(sdp).media:
        for codec in media.rtp.codecs:
            if codec.mimeType.split("/")[1].lower() not in ("rtx", "red", "ulpfec"):
                kinds[codec.payloadType] = media.kind
    return kinds


def codec_names(sdp: str, kind: str) -> dict[int, str]:
    """Payload type -> codec name (lower case) of the first m-line of ``kind``."""
    media = next(m for m in SessionDescription.parse(sdp).media if m.kind == kind)
    return {c.payloadType: c.mimeType.split("/")[1].lower() for c in media.rtp.codecs}


def receive_without_decoding(transceiver) -> None:
    """keep_codecs_off, except that a publisher's sender still runs."""
    send = transceiver.sender.send
    keep_codecs_off(transceiver)
    transceiver.sender.send = send


# -- clients -----------------------------------------------------------------------------


@dataclass(eq=False)
class Client:
    """One peer connection to a server. ``spec`` (from the orchestrator):

    name, server ("jisr" | "stock" | "janus"), base; publish: kinds sent ("", "video",
    "audio+video"); decode: bool; expect: {"audio": n, "video": n} streams that must arrive;
    Jisr: token, session_id, part ("participant" | "observer"); stock: slot; Janus:
    stream (its room and publisher).
    """

    spec: dict
    clips: dict[str, Clip]
    pacer: Pacer  # sends for light ("paced") publishers
    pc: RTCPeerConnection | None = None
    tap: CountingTap | None = None
    decoded: dict[str, Stream] = field(default_factory=dict)
    tasks: list[asyncio.Task] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)  # the last few pushed messages, for a failure
    sender: SimulcastSender | None = None
    ws = None
    janus: janus.JanusHandle | None = None

    async def start(self, http: ClientSession) -> None:
        spec = self.spec
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pc.on("track", self._on_track)
        publish = spec["publish"]
        if spec["server"] == "janus" and not publish:
            await self._janus_subscriber(http)  # Janus offers to its subscribers
            return
        if publish == "simulcast":  # jisr only: three layers, sent by SimulcastSender
            for kind in ("audio", "video"):
                keep_codecs_off(self.pc.addTransceiver(kind, "sendrecv"))
        elif spec["server"] == "jisr" and spec["part"] == "participant":
            for kind in ("audio", "video"):  # the protocol's layout, whatever is sent
                self.pc.addTransceiver(
                    ClipTrack(kind, self.clips[kind]) if kind in publish else kind, "sendrecv"
                )
        elif spec["server"] == "jisr":
            for kind in ("audio", "video", "audio", "video"):
                self.pc.addTransceiver(kind, "recvonly")
        elif publish:
            for kind in ("audio", "video"):
                if kind in publish:
                    self.pc.addTransceiver(ClipTrack(kind, self.clips[kind]), "sendonly")
        else:
            for kind in ("audio", "video"):
                if spec["expect"].get(kind):
                    self.pc.addTransceiver(kind, "recvonly")
        if spec.get("paced"):  # the process's Pacer sends instead of aiortc's senders
            for transceiver in self.pc.getTransceivers():
                keep_codecs_off(transceiver)
        elif not spec["decode"] and publish != "simulcast":
            for transceiver in self.pc.getTransceivers():
                receive_without_decoding(transceiver)

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if publish == "simulcast":
            offer = simulcast_offer(offer)
        if spec["server"] == "jisr":
            answer = await self._jisr_signaling(http, offer)
        elif spec["server"] == "janus":
            self.janus = janus.JanusHandle(http, spec["base"])
            answer = await janus.publish(self.janus, spec["stream"], offer)
            self.tasks.append(asyncio.ensure_future(self.janus.keep_alive()))
        else:
            role = "publish" if publish else "subscribe"
            async with http.post(
                spec["base"] + "/offer", json={"sdp": offer, "role": role, "slot": spec["slot"]}
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"{spec['name']}: offer refused: {await response.text()}")
                answer = (await response.json())["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        if spec.get("paced"):
            self._paced_video(answer)
        elif publish == "simulcast":
            layers = [load_clip(path)["video"] for path in spec["layers"]] + [self.clips["video"]]
            self.sender = SimulcastSender(self.pc, answer, layers)
        elif not spec["decode"]:  # installed before the connection starts: no packet missed
            self.tap = CountingTap(self.pc, media_payload_types(answer))
        if spec.get("view"):  # the height of this subscriber's tile (docs/protocol.md)
            view = {"type": "view", "slot": "referrer", "role": "video", "height": spec["view"]}
            await self.ws.send_json(view)

    def _paced_video(self, answer: str) -> None:
        tap = Tap(self.pc, lambda _packet: None, lambda _packet: None)
        video = next(t for t in self.pc.getTransceivers() if t.kind == "video")
        payload_type = next(
            pt for pt, name in codec_names(answer, "video").items() if name == "vp8"
        )
        self.pacer.add(Outlet(tap.send, video.sender._ssrc, payload_type))

    async def _janus_subscriber(self, http: ClientSession) -> None:
        self.janus = janus.JanusHandle(http, self.spec["base"])
        offer = await janus.subscribe(self.janus, self.spec["stream"])
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        if not self.spec["decode"]:
            for transceiver in self.pc.getTransceivers():
                receive_without_decoding(transceiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        if not self.spec["decode"]:  # before the connection starts: no packet missed
            self.tap = CountingTap(self.pc, media_payload_types(offer))
        await janus.start_subscription(self.janus, self.pc.localDescription.sdp)
        self.tasks.append(asyncio.ensure_future(self.janus.keep_alive()))

    async def _jisr_signaling(self, http: ClientSession, offer: str) -> str:
        spec = self.spec
        self.ws = await http.ws_connect(spec["base"].replace("http", "ws", 1) + "/ws")
        reply = await self._request("auth", token=spec["token"])
        if reply["type"] == "welcome":
            reply = await self._request("join", session_id=spec["session_id"])
        if reply["type"] != "joined":
            raise RuntimeError(f"{spec['name']}: join refused: {reply}")
        reply = await self._request("offer", sdp=offer)
        if reply["type"] != "answer":
            raise RuntimeError(f"{spec['name']}: offer refused: {reply}")
        # Pushed messages are of no interest from now on; keep the socket drained.
        self.tasks.append(asyncio.ensure_future(self._drain()))
        return reply["sdp"]

    async def _request(self, kind: str, **fields) -> dict:
        ref = f"{kind}-{time.monotonic_ns()}"
        await self.ws.send_json({"type": kind, "ref": ref, **fields})
        while True:
            message = await asyncio.wait_for(self.ws.receive(), READY_TIMEOUT_S)
            if message.type != WSMsgType.TEXT:
                raise RuntimeError(
                    f"{self.spec['name']}: signaling socket: {message.type.name} {message.data}"
                )
            reply = message.json()
            if reply.get("ref") == ref:
                return reply

    async def _drain(self) -> None:
        async for message in self.ws:
            with contextlib.suppress(ValueError):
                pushed = message.json()
                self.pushed.append(pushed.get("code") or pushed.get("state") or pushed["type"])
                del self.pushed[:-8]

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self.spec["decode"]:
            stream = self.decoded[f"track{len(self.decoded)}"] = Stream(track.kind)
            self.tasks.append(asyncio.ensure_future(self._consume(track, stream)))

    @staticmethod
    async def _consume(track: MediaStreamTrack, stream: Stream) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                stream.frames += 1
                if stream.kind == "video":
                    stream.size = (frame.width, frame.height)

    def streams(self) -> dict:
        found = self.tap.streams if self.tap else self.decoded
        return {
            str(key): {"kind": s.kind, "frames": s.frames, "size": s.size, "octets": s.octets}
            for key, s in found.items()
        }

    def state(self) -> str:
        return self.pc.connectionState

    def missing(self) -> str | None:
        """What this client still waits for before it counts as ready, or None."""
        if self.pc.connectionState != "connected":
            return f"connection {self.pc.connectionState}"
        for kind, n in self.spec["expect"].items():
            flowing = [s for s in self.streams().values() if s["kind"] == kind and s["frames"]]
            if len(flowing) < n:
                return f"{len(flowing)}/{n} {kind} streams"
        return None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.sender is not None:
            self.sender.close()
        if self.tap is not None:
            self.tap.close()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()


# -- the worker process ------------------------------------------------------------------


def worker_main(
    conn,
    clip_path: str,
    deadline: float,
    address: str = "127.0.0.1",
    netns_path: str | None = None,
    cpus: set[int] | None = None,
) -> None:
    """Commands from the orchestrator, one at a time, each answered with
    ("ok", value) or ("error", message):

    ("add", [spec, ...]): connect these clients and wait until their media flows;
    ("snap",): {"t": monotonic, "clients": {name: {key: {"kind","frames","size"}}}};
    ("pause",): the light publishers stop sending (their peers stay connected);
    ("stop",): close everything and exit.

    ``address``: the one address its peers gather candidates on (no STUN server);
    ``netns_path``, ``cpus``: where it runs (bench.isolation.place_generator).
    """
    place_generator(netns_path, cpus)
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when to stop
    restrict_host_addresses([address])
    asyncio.run(_serve(conn, load_clip(clip_path), deadline))


async def _serve(conn, clips: dict[str, Clip], deadline: float) -> None:
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + max(0.0, deadline - time.time()), os._exit, 3)  # hard bound
    clients: dict[str, Client | FloorClient] = {}
    pacer = Pacer(vp8_frames(clips["video"]))  # one paced loop for every light publisher
    async with ClientSession() as http:
        try:
            while True:
                command, *args = await asyncio.to_thread(conn.recv)
                if command == "stop":
                    break
                try:
                    if command == "add":
                        conn.send(("ok", await _add(http, clients, clips, pacer, args[0])))
                    elif command == "pause":  # the light publishers stop sending
                        if pacer.task is not None:
                            pacer.task.cancel()
                            pacer.task = None
                        conn.send(("ok", None))
                    elif command == "snap":
                        snapshot = {n: c.streams() for n, c in clients.items()}
                        status = {n: [c.state(), *c.pushed] for n, c in clients.items()}
                        conn.send(
                            ("ok", {"t": time.monotonic(), "clients": snapshot, "status": status})
                        )
                    else:
                        conn.send(("error", f"unknown command {command!r}"))
                except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients.values())), 10)
    with contextlib.suppress(OSError):
        conn.send(("ok", None))


async def _add(
    http: ClientSession, clients: dict, clips: dict, pacer: Pacer, specs: list[dict]
) -> int:
    new = [
        FloorClient(spec, pacer) if spec["server"] == "floor" else Client(spec, clips, pacer)
        for spec in specs
    ]
    for client in new:
        clients[client.spec["name"]] = client
    await asyncio.wait_for(asyncio.gather(*(c.start(http) for c in new)), READY_TIMEOUT_S)
    until = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < until:
        waiting = {c.spec["name"]: m for c in new if (m := c.missing())}
        if not waiting:
            return len(new)
        await asyncio.sleep(0.1)  # polling the counters
    raise RuntimeError(f"media did not start: {waiting}")
