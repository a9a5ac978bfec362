"""One aiortc peer per participant connection, and a router per live session that
forwards every published track to every subscriber.

This first router relays decoded frames with aiortc's MediaRelay (each subscriber
leg re-encodes). It is replaced by RTP-level forwarding behind the same interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .tracks import SlotTrack

log = logging.getLogger("jisr.media")

KINDS = ("audio", "video")
SENDING = {"sendrecv", "sendonly"}

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
    publish: str | None
    pc: RTCPeerConnection
    outgoing: list[tuple[str, SlotTrack]] = field(default_factory=list)  # (slot, track)
    published: dict[str, MediaStreamTrack] = field(default_factory=dict)  # kind -> remote track
    drains: list[asyncio.Task] = field(default_factory=list)


class SessionRoom:
    """The peers of one session and what each publishes."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.relay = MediaRelay()
        self.peers: dict[str, Peer] = {}

    def publisher(self, slot: str) -> Peer | None:
        for peer in self.peers.values():
            if peer.publish == slot:
                return peer
        return None

    def source_for(self, slot: str, kind: str) -> MediaStreamTrack | None:
        peer = self.publisher(slot)
        track = peer.published.get(kind) if peer else None
        return self.relay.subscribe(track, buffered=False) if track is not None else None

    def publish(self, peer: Peer, track: MediaStreamTrack) -> None:
        peer.published[track.kind] = track
        # Keep the source read even with no subscriber, so its queue never grows.
        peer.drains.append(asyncio.ensure_future(_drain(self.relay.subscribe(track, False))))
        for other in self.peers.values():
            for slot, slot_track in other.outgoing:
                if slot == peer.publish and slot_track.kind == track.kind:
                    slot_track.attach(self.relay.subscribe(track, buffered=False))


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()


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


class MediaNode:
    """The media side of one node: every session it hosts."""

    def __init__(
        self,
        *,
        ice_servers: list[RTCIceServer] | None = None,
        on_state: StateCallback | None = None,
    ) -> None:
        self._ice_servers = list(ice_servers or [])
        self._on_state = on_state or (lambda *_: None)
        self._rooms: dict[str, SessionRoom] = {}
        self._peers: dict[str, Peer] = {}

    def stats(self) -> dict:
        return {"sessions": len(self._rooms), "peers": len(self._peers)}

    def hosts(self, session_id: str) -> bool:
        return session_id in self._rooms

    async def connect(
        self,
        session_id: str,
        peer_id: str,
        *,
        publish: str | None,
        receive: list[str],
        offer_sdp: str,
    ) -> str:
        """Answer a client's offer. ``publish`` names the slot this peer sends as
        (None: receive-only observer); ``receive`` lists the slots it receives, each
        taking the next unused audio and video m-line of the offer in order."""
        parsed = _parse_offer(offer_sdp)
        if publish is None and any(m.direction in SENDING for m in parsed.media):
            raise MediaError(
                "observer_cannot_send", "observers receive only; the offer sends media"
            )
        await self.disconnect(peer_id)

        room = self._rooms.setdefault(session_id, SessionRoom(session_id))
        # ICE servers are explicit: aiortc's default would reach out to a public STUN.
        # max-bundle: aiortc mis-bundles a second m-line of one kind under "balanced".
        config = RTCConfiguration(
            iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        pc = RTCPeerConnection(config)
        peer = Peer(peer_id=peer_id, session_id=session_id, publish=publish, pc=pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if peer.publish is None or self._peers.get(peer_id) is not peer:
                track.stop()  # an observer never publishes, whatever its SDP says
                return
            room.publish(peer, track)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._on_state(session_id, peer_id, pc.connectionState)
            if pc.connectionState == "failed":
                asyncio.ensure_future(self.disconnect(peer_id))

        room.peers[peer_id] = peer
        self._peers[peer_id] = peer
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self._attach_outgoing(room, peer, receive)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except MediaError:
            await self.disconnect(peer_id)
            raise
        except Exception as exc:  # noqa: BLE001 - negotiation fails in many ways
            await self.disconnect(peer_id)
            log.info("offer refused: %s", type(exc).__name__)
            raise MediaError("bad_sdp", "the offer could not be negotiated") from None
        return pc.localDescription.sdp

    def _attach_outgoing(self, room: SessionRoom, peer: Peer, receive: list[str]) -> None:
        free = {kind: [t for t in peer.pc.getTransceivers() if t.kind == kind] for kind in KINDS}
        for slot in receive:
            for kind in KINDS:
                if not free[kind]:
                    continue
                transceiver = free[kind].pop(0)
                track = SlotTrack(kind)
                track.attach(room.source_for(slot, kind))
                transceiver.sender.replaceTrack(track)
                transceiver.direction = "sendrecv" if peer.publish else "sendonly"
                peer.outgoing.append((slot, track))
        if peer.publish is None:
            return
        for kind in KINDS:  # m-lines left over carry nothing to this peer
            for transceiver in free[kind]:
                transceiver.direction = "recvonly"

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
            if not room.peers:
                del self._rooms[peer.session_id]
        for _, track in peer.outgoing:
            track.stop()
        for track in peer.published.values():
            track.stop()
        for task in peer.drains:
            task.cancel()
        await peer.pc.close()

    async def close_session(self, session_id: str) -> None:
        room = self._rooms.get(session_id)
        if room is not None:
            for peer_id in list(room.peers):
                await self.disconnect(peer_id)

    async def close(self) -> None:
        for peer_id in list(self._peers):
            await self.disconnect(peer_id)
