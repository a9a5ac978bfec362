"""One aiortc peer per participant connection, and a room per live session that
forwards every published stream to every subscriber at the RTP level."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .aiortc_internals import Negotiated, Tap, keep_codecs_off, label_sender, negotiated
from .bitrate import DEFAULT_MAX_BITRATE
from .codecs import codecs_of
from .inbound import InStream
from .leg import Leg
from .outbound import OutStream
from .sink import SinkTap

log = logging.getLogger("jisr.media")

KINDS = ("audio", "video")
SENDING = {"sendrecv", "sendonly"}
REPORT_INTERVAL_S = 1.0

StateCallback = Callable[[str, str, str], None]  # (session_id, peer_id, state)


class MediaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Peer:
    peer_id: str
    session_id: str
    pc: RTCPeerConnection
    leg: Leg


@dataclass(eq=False)
class SessionRoom:
    """Who publishes what in one session, and every subscriber m-line."""

    session_id: str
    peers: dict[str, Peer] = field(default_factory=dict)
    sources: dict[tuple[str, str], InStream] = field(default_factory=dict)  # (slot, role)
    outs: list[OutStream] = field(default_factory=list)
    sinks: list[OutStream] = field(default_factory=list)  # internal subscribers

    def publish(self, stream: InStream, now: float) -> None:
        self.sources[(stream.slot, stream.role)] = stream
        for out in self.outs:
            if out.slot == stream.slot and out.role == stream.role:
                out.bind(stream, now)

    def subscribe(self, out: OutStream, now: float) -> None:
        self.outs.append(out)
        source = self.sources.get((out.slot, out.role))
        if source is not None:
            out.bind(source, now)

    def remove(self, leg: Leg, now: float) -> None:
        for stream in leg.inbound.values():
            if self.sources.get((stream.slot, stream.role)) is stream:
                del self.sources[(stream.slot, stream.role)]
            for out in list(stream.outs):
                out.bind(None, now)
        for out in leg.outbound.values():
            out.bind(None, now)
            if out in self.outs:
                self.outs.remove(out)


def _parse_offer(sdp: str) -> SessionDescription:
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception:  # noqa: BLE001 - aiortc raises anything on bad SDP
        raise MediaError("bad_sdp", "the offer is not valid SDP") from None
    if not parsed.media:
        raise MediaError("bad_sdp", "the offer has no media section")
    for media in parsed.media:
        if media.kind not in KINDS:
            raise MediaError("bad_sdp", f"unsupported media kind {media.kind!r}")
    return parsed


def _publisher_ssrcs(media) -> tuple[int | None, set[int]]:
    """(media SSRC, RTX SSRCs) an offer's m-line announces."""
    rtx = {group.items[1] for group in media.ssrc_group if group.semantic == "FID"}
    rtx = {int(s) for s in rtx}
    primary = next((s.ssrc for s in media.ssrc if s.ssrc not in rtx), None)
    return primary, rtx


class MediaNode:
    """The media side of one node: every session it hosts."""

    def __init__(
        self,
        *,
        ice_servers: list[RTCIceServer] | None = None,
        on_state: StateCallback | None = None,
        max_bitrate: int = DEFAULT_MAX_BITRATE,
    ) -> None:
        self._ice_servers = list(ice_servers or [])
        self._on_state = on_state or (lambda *_: None)
        self._max_bitrate = max_bitrate
        self._rooms: dict[str, SessionRoom] = {}
        self._peers: dict[str, Peer] = {}
        self._reports: asyncio.Task | None = None

    def stats(self) -> dict:
        return {"sessions": len(self._rooms), "peers": len(self._peers)}

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
        parsed = _parse_offer(offer_sdp)
        if publish is None and any(m.direction in SENDING for m in parsed.media):
            raise MediaError(
                "observer_cannot_send", "observers receive only; the offer sends media"
            )
        await self.disconnect(peer_id)

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
                asyncio.ensure_future(self.disconnect(peer_id))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            outgoing = self._choose_outgoing(pc, publish, receive)
            await pc.setLocalDescription(await pc.createAnswer())
        except MediaError:
            await pc.close()
            raise
        except Exception as exc:  # noqa: BLE001 - negotiation fails in many ways
            await pc.close()
            log.info("offer refused: %s", type(exc).__name__)
            raise MediaError("bad_sdp", "the offer could not be negotiated") from None

        now = time.monotonic()
        room = self._rooms.setdefault(session_id, SessionRoom(session_id))
        leg = Leg(
            peer_id, publish, max_bitrate=min(self._max_bitrate, max_bitrate or self._max_bitrate)
        )
        leg.tap = Tap(pc, leg.on_rtp, leg.on_rtcp)
        peer = Peer(peer_id, session_id, pc, leg)
        room.peers[peer_id] = peer
        self._peers[peer_id] = peer
        for slot, role, transceiver in outgoing:
            out = OutStream(leg, slot, negotiated(transceiver), role)
            leg.outbound[out.ssrc] = out
            room.subscribe(out, now)
        if publish is not None:
            videos = 0
            for transceiver in pc.getTransceivers():
                media = parsed.media[transceiver._get_mline_index()]
                role = media.kind
                if media.kind == "video":  # the first video m-line is the camera
                    role = "video" if videos == 0 else "screen"
                    videos += 1
                if media.direction not in SENDING:
                    continue
                ssrc, rtx = _publisher_ssrcs(media)
                if ssrc is None:
                    log.warning("offer sends %s without announcing its SSRC", media.kind)
                    continue
                agreed = negotiated(transceiver)
                stream = InStream(
                    leg, publish, media.kind, ssrc, codecs_of(agreed), agreed.send_ssrc,
                    agreed.header_extensions, role,
                )  # fmt: skip
                leg.inbound[ssrc] = stream
                for rtx_ssrc in rtx:
                    leg.retransmissions[rtx_ssrc] = stream
                room.publish(stream, now)
        if self._reports is None:
            self._reports = asyncio.ensure_future(self._report_loop())
        return pc.localDescription.sdp

    @staticmethod
    def _choose_outgoing(pc: RTCPeerConnection, publish: str | None, receive: list[str]):
        """Which m-line carries which slot's stream to this peer: each receive slot
        takes the next free audio and video m-line in order; video m-lines left
        after that carry the slots' screen shares, in the same slot order."""
        transceivers = pc.getTransceivers()
        for transceiver in transceivers:
            keep_codecs_off(transceiver)
        free = {kind: [t for t in transceivers if t.kind == kind] for kind in KINDS}
        wanted = [(slot, role) for slot in receive for role in ("audio", "video")]
        wanted += [(slot, "screen") for slot in receive]
        chosen = []
        for slot, role in wanted:
            kind = "audio" if role == "audio" else "video"
            if not free[kind]:
                continue
            transceiver = free[kind].pop(0)
            transceiver.direction = "sendrecv" if publish else "sendonly"
            label_sender(transceiver, slot if role != "screen" else f"{slot}-screen")
            chosen.append((slot, role, transceiver))
        if publish is not None:
            for kind in KINDS:  # m-lines left over carry nothing to this peer
                for transceiver in free[kind]:
                    transceiver.direction = "recvonly"
        return chosen

    async def _report_loop(self) -> None:
        """RTCP for every leg of this node, about once a second (jittered, RFC 3550)."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S * (0.5 + random.random()))
            now, wall = time.monotonic(), time.time()
            for peer in list(self._peers.values()):
                try:
                    peer.leg.send_reports(now, wall)
                except Exception:  # noqa: BLE001 - one leg's trouble must not stop the others
                    log.exception("rtcp reports failed for %s", peer.peer_id)

    def add_sink(self, session_id: str, slot: str, role: str, on_packet) -> OutStream:
        """An internal subscriber to ``slot``'s ``role`` stream ("audio", "video" for
        the camera, "screen") in a session (the recorder): ``on_packet(packet)`` gets
        every forwarded packet, rewritten onto one continuous stream across publisher
        reconnects, starting on a keyframe. ``out.source`` describes the current
        publisher stream (codecs, sender reports)."""
        room = self._rooms.setdefault(session_id, SessionRoom(session_id))
        leg = Leg(f"sink:{slot}:{role}", None)
        leg.tap = SinkTap(on_packet)
        ssrc = random.getrandbits(32)
        kind = "audio" if role == "audio" else "video"
        out = OutStream(leg, slot, Negotiated(None, kind, [], {}, ssrc, ssrc ^ 1), role)
        out.mirror = True
        room.subscribe(out, time.monotonic())
        room.sinks.append(out)
        return out

    def remove_sink(self, session_id: str, out: OutStream) -> None:
        room = self._rooms.get(session_id)
        out.bind(None, time.monotonic())
        if room is not None and out in room.outs:
            room.outs.remove(out)
            room.sinks.remove(out)
            if not room.peers and not room.sinks:
                del self._rooms[session_id]

    async def add_candidate(self, peer_id: str, candidate: dict | None) -> None:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise MediaError("not_joined", "no media connection to add a candidate to")
        if candidate is None or not candidate.get("candidate"):
            return  # end of candidates: aiortc needs nothing
        try:
            parsed = candidate_from_sdp(candidate["candidate"].removeprefix("candidate:"))
        except Exception:  # noqa: BLE001 - aioice raises anything on bad input
            raise MediaError("bad_candidate", "the ICE candidate cannot be parsed") from None
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await peer.pc.addIceCandidate(parsed)

    async def disconnect(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        room = self._rooms.get(peer.session_id)
        if room is not None:
            room.peers.pop(peer_id, None)
            room.remove(peer.leg, time.monotonic())
            if not room.peers and not room.sinks:
                del self._rooms[peer.session_id]
        peer.leg.tap.close()
        await peer.pc.close()

    async def close(self) -> None:
        for peer_id in list(self._peers):
            await self.disconnect(peer_id)
        if self._reports is not None:
            self._reports.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reports
            self._reports = None
