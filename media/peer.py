"""One participant connection: its aiortc peer connection and its media leg."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCPeerConnection

from .leg import Leg


@dataclass(eq=False)
class Peer:
    peer_id: str
    session_id: str
    pc: RTCPeerConnection
    leg: Leg
