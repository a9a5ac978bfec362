"""The media side of one node: one aiortc peer per participant connection, and a
room per live session that forwards every published stream to every subscriber
at the RTP level."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from functools import partial

import structlog
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription

from .aiortc_internals import (
    Negotiated,
    Tap,
    gather_on_shared_port,
    guard_connection_task,
    host_addresses,
    negotiated,
)
from .bitrate import DEFAULT_MAX_BITRATE
from .codecs import codecs_of
from .errors import MediaError
from .events import LayerCallback
from .inbound import InStream
from .leg import Leg
from .loopwatch import LoopWatch
from .offer import (
    SENDING,
    Outgoing,
    choose_outgoing,
    parse_offer,
    published_mlines,
    publisher_ssrcs,
    sends_media,
)
from .outbound import OutStream
from .peer import Peer
from .room import SessionRoom
from .sdp_checks import parse_candidate
from .simulcast import SimulcastOffer, answer_simulcast, mline_sections, read_simulcast
from .sink import Sink, sink_stream
from .subscription import InternalSubscription, PacketCallback
from .udp_mux import UdpMux

log = structlog.get_logger("jisr.media")

REPORT_INTERVAL_S = 1.0

StateCallback = Callable[[str, str, str], None]  # (session_id, peer_id, state)


class MediaNode:
    """The media side of one node: every session it hosts.

    ``udp_port``: every peer's ICE shares one UDP socket per host address on this
    port (0: one the system picks; see media.udp_mux). None: each peer binds ports
    of its own, as aioice does by itself."""

    def __init__(
        self,
        *,
        ice_servers: list[RTCIceServer] | None = None,
        on_state: StateCallback | None = None,
        on_layers: LayerCallback | None = None,
        max_bitrate: int = DEFAULT_MAX_BITRATE,
        udp_port: int | None = None,
    ) -> None:
        if ice_servers and udp_port is not None:
            raise ValueError("on a shared UDP port the node gathers host candidates only")
        self._ice_servers = list(ice_servers or [])
        self._mux = UdpMux(udp_port) if udp_port is not None else None
        self._on_state = on_state or (lambda *_: None)
        self._on_layers = on_layers
        self._max_bitrate = max_bitrate
        self._rooms: dict[str, SessionRoom] = {}
        self._peers: dict[str, Peer] = {}
        self._reports: asyncio.Task | None = None
        self._watch = LoopWatch()
        self._watching: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # held until done: the loop keeps weak refs

    def stats(self) -> dict:
        return {"sessions": len(self._rooms), "peers": len(self._peers)}

    async def listen(self) -> None:
        """Bind the shared UDP port on the host addresses now (OSError if taken), not
        at the first call."""
        if self._mux is not None:
            await self._mux.listen(host_addresses())

    def udp_ports(self) -> dict[str, int]:
        """Host address -> the shared media port bound on it (empty without one)."""
        return self._mux.ports() if self._mux is not None else {}

    def udp_stats(self) -> dict | None:
        """The shared sockets: peers and addresses routed, datagrams dropped by reason."""
        return self._mux.stats() if self._mux is not None else None

    def peer_connection(self, peer_id: str) -> RTCPeerConnection | None:
        peer = self._peers.get(peer_id)
        return peer.pc if peer else None

    async def connect(
        self,
        session_id: str,
        peer_id: str,
        *,
        publish: str | None,
        receive: list[str],
        offer_sdp: str,
        max_bitrate: int | None = None,
    ) -> str:
        """Answer a client's offer. ``publish`` names the slot this peer sends as
        (None: receive-only observer); ``receive`` lists the slots it receives, each
        taking the next unused audio and video m-line of the offer in order.
        ``max_bitrate`` caps the video this leg sends and receives (bits/s)."""
        parsed = parse_offer(offer_sdp)
        if publish is None and sends_media(parsed):
            raise MediaError(
                "observer_cannot_send", "observers receive only; the offer sends media"
            )
        await self.disconnect(peer_id)
        simulcast = _camera_simulcast(parsed, offer_sdp) if publish is not None else None
        pc = self._new_peer_connection(session_id, peer_id)
        outgoing = await self._answer(pc, session_id, peer_id, offer_sdp, publish, receive)

        now = time.monotonic()
        room = self._rooms.setdefault(session_id, SessionRoom(session_id))
        leg = Leg(
            peer_id,
            publish,
            max_bitrate=min(self._max_bitrate, max_bitrate or self._max_bitrate),
            watch=self._watch,
        )
        leg.tap = Tap(pc, leg.on_rtp, leg.on_rtcp)
        if self._on_layers is not None:
            leg.on_layers = self._on_layers
        peer = Peer(peer_id, session_id, pc, leg)
        room.peers[peer_id] = peer
        self._peers[peer_id] = peer
        for slot, role, transceiver in outgoing:
            out = OutStream(leg, slot, negotiated(transceiver), role)
            leg.outbound[out.ssrc] = out
            room.subscribe(out, now)
        if publish is not None:
            self._publish(room, peer, parsed, publish, now, simulcast)
        if self._reports is None:
            self._reports = self._in_background(self._report_loop(), "media.reports_stopped")
            self._watching = self._in_background(self._watch.run(), "media.watch_stopped")
        if simulcast is not None:
            return answer_simulcast(pc.localDescription.sdp, simulcast)
        return pc.localDescription.sdp

    def set_view(self, peer_id: str, slot: str, role: str, height: int) -> bool:
        """The subscriber ``peer_id`` shows ``slot``'s ``role`` stream in a tile
        ``height`` pixels high (device pixels; 0: not known): it gets no larger a
        layer than that needs. False when no such stream goes to that peer."""
        peer = self._peers.get(peer_id)
        outs = [] if peer is None else list(peer.leg.outbound.values())
        found = [out for out in outs if out.slot == slot and out.role == role]
        for out in found:
            out.max_height = height
        return bool(found)

    def _new_peer_connection(self, session_id: str, peer_id: str) -> RTCPeerConnection:
        # max-bundle: every m-line on one transport (aiortc mis-bundles a second m-line
        # of one kind under "balanced"). ICE servers are explicit: aiortc's default
        # would reach out to a public STUN server.
        config = RTCConfiguration(
            iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        pc = RTCPeerConnection(config)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._on_state(session_id, peer_id, pc.connectionState)
            peer = self._peers.get(peer_id)
            if pc.connectionState == "connected" and peer is not None and peer.pc is pc:
                peer.leg.on_connected(time.monotonic())
            if pc.connectionState == "failed":
                self._in_background(self.disconnect(peer_id), "peer.disconnect_failed")

        def on_connect_failed(exc: Exception) -> None:
            log.warning(
                "peer.connect_failed", session_id=session_id, peer=peer_id,
                error=type(exc).__name__,
            )  # fmt: skip
            peer = self._peers.get(peer_id)
            if peer is not None and peer.pc is pc:
                self._in_background(self.disconnect(peer_id), "peer.disconnect_failed")

        guard_connection_task(pc, on_connect_failed)
        return pc

    def _in_background(self, coro: Coroutine, failure_event: str) -> asyncio.Task:
        """A task whose failure is logged as ``failure_event`` when it ends, rather than
        reported by the garbage collector as an exception nobody retrieved."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(partial(self._task_done, failure_event))
        return task

    def _task_done(self, failure_event: str, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(failure_event, error=type(exc).__name__, detail=str(exc)[:200])

    async def _answer(
        self, pc: RTCPeerConnection, session_id: str, peer_id: str, offer_sdp: str,
        publish: str | None, receive: list[str],
    ) -> Outgoing:  # fmt: skip
        """Negotiate: which of the offer's m-lines carry which slot's stream back."""
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if self._mux is not None:
                gather_on_shared_port(pc, self._mux)
            outgoing = choose_outgoing(pc, publish, receive)
            await pc.setLocalDescription(await pc.createAnswer())
        except MediaError:
            await _close_quietly(pc)
            raise
        except Exception as exc:  # noqa: BLE001 - negotiation fails in many ways
            await _close_quietly(pc)
            log.info(
                "peer.offer_refused", session_id=session_id, peer=peer_id,
                error=type(exc).__name__,
            )  # fmt: skip
            raise MediaError("bad_sdp", "the offer could not be negotiated") from None
        return outgoing

    @staticmethod
    def _publish(
        room: SessionRoom, peer: Peer, parsed: SessionDescription, slot: str, now: float,
        simulcast: SimulcastOffer | None = None,
    ) -> None:  # fmt: skip
        """A stream in the room for every m-line the peer sends on (one per layer for
        a simulcast camera)."""
        leg = peer.leg
        for transceiver, media, role in published_mlines(peer.pc, parsed):
            if simulcast is not None and role == "video" and media.rtp.muxId == simulcast.mid:
                agreed = negotiated(transceiver)
                _publish_layers(room, leg, slot, agreed, simulcast, now)
                continue
            ssrc, rtx = publisher_ssrcs(media)
            if ssrc is None:
                log.warning(
                    "peer.ssrc_missing", session_id=peer.session_id, peer=peer.peer_id,
                    kind=media.kind,
                )  # fmt: skip
                continue
            agreed = negotiated(transceiver)
            stream = InStream(
                leg, slot, media.kind, ssrc, codecs_of(agreed), agreed.send_ssrc,
                agreed.header_extensions, role,
            )  # fmt: skip
            leg.inbound[ssrc] = stream
            leg.streams.append(stream)
            for rtx_ssrc in rtx:
                leg.retransmissions[rtx_ssrc] = stream
            room.publish(stream, now)

    async def _report_loop(self) -> None:
        """RTCP for every leg of this node, about once a second (jittered, RFC 3550)."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S * (0.5 + random.random()))
            now, wall = time.monotonic(), time.time()
            peers = list(self._peers.values())
            for peer in peers:
                for stream in peer.leg.streams:
                    stream.measure(now)
            for peer in peers:
                try:
                    peer.leg.adapt(now)
                    peer.leg.send_reports(now, wall)
                except Exception:  # noqa: BLE001 - one leg's trouble must not stop the others
                    log.exception("peer.reports_failed", peer=peer.peer_id)
            for room in list(self._rooms.values()):
                for sink in room.sinks:
                    sink.adapt(now, 0.0)

    def add_sink(
        self, session_id: str, slot: str, role: str, on_packet: PacketCallback
    ) -> InternalSubscription:
        """An internal subscriber to ``slot``'s ``role`` stream ("audio", "video" for
        the camera, "screen") in a session (the recorder): ``on_packet(packet)`` gets
        every forwarded packet, rewritten onto one continuous stream across publisher
        reconnects, starting on a keyframe."""
        room = self._rooms.setdefault(session_id, SessionRoom(session_id))
        out = sink_stream(slot, role, on_packet)
        room.subscribe(out, time.monotonic())
        room.sinks.append(out)
        return Sink(out, partial(self._remove_sink, session_id))

    def _remove_sink(self, session_id: str, out: OutStream) -> None:
        room = self._rooms.get(session_id)
        out.bind(None, time.monotonic())
        if room is not None and out in room.outs:
            room.outs.remove(out)
            room.sinks.remove(out)
            if room.empty:
                del self._rooms[session_id]

    async def add_candidate(self, peer_id: str, candidate: dict | None) -> None:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise MediaError("not_joined", "no media connection to add a candidate to")
        if candidate is None or not candidate.get("candidate"):
            return  # end of candidates: aiortc needs nothing
        mids = [transceiver.mid for transceiver in peer.pc.getTransceivers()]
        await peer.pc.addIceCandidate(parse_candidate(candidate, mids))

    async def disconnect(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        room = self._rooms.get(peer.session_id)
        if room is not None:
            room.peers.pop(peer_id, None)
            room.remove(peer.leg, time.monotonic())
            if room.empty:
                del self._rooms[peer.session_id]
        peer.leg.tap.close()
        await _close_quietly(peer.pc)

    async def close(self) -> None:
        for peer_id in list(self._peers):
            await self.disconnect(peer_id)
        for task in (self._reports, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reports = self._watching = None
        if self._mux is not None:
            self._mux.close()


def _camera_simulcast(parsed: SessionDescription, offer_sdp: str) -> SimulcastOffer | None:
    """The simulcast the offer's camera m-line (its first video one) sends, if any."""
    sections = mline_sections(offer_sdp)
    videos = [i for i, media in enumerate(parsed.media) if media.kind == "video"]
    if not videos or len(sections) != len(parsed.media):
        return None
    media = parsed.media[videos[0]]
    if media.direction not in SENDING:
        return None
    return read_simulcast(sections[videos[0]], media)


def _publish_layers(
    room: SessionRoom, leg: Leg, slot: str, agreed: Negotiated, simulcast: SimulcastOffer,
    now: float,
) -> None:  # fmt: skip
    """One stream per simulcast layer, their SSRCs learned from their first packets'
    RIDs (Leg._learn); the room sees the smallest, and subscribers choose among all."""
    layers: list[InStream] = []
    for index, rid in enumerate(simulcast.rids):
        stream = InStream(
            leg, slot, "video", 0, codecs_of(agreed), agreed.send_ssrc,
            agreed.header_extensions, "video",
        )  # fmt: skip
        stream.layers, stream.index, stream.rid, stream.watch_size = layers, index, rid, True
        layers.append(stream)
        leg.rids[rid.encode()] = stream
        leg.streams.append(stream)
    leg.rid_ext, leg.repaired_ext = simulcast.rid_ext, simulcast.repaired_ext or 0
    room.publish(layers[0], now)


async def _close_quietly(pc: RTCPeerConnection) -> None:
    """Close a peer connection; aiortc may trip over what it half set up, which must
    not stop the cleanup around it."""
    try:
        await pc.close()
    except Exception as exc:  # noqa: BLE001 - logged, and the peer is gone either way
        log.warning("peer.close_failed", error=type(exc).__name__)
