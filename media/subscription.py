"""What media offers a subscriber inside the server (the recorder): every packet of
one published stream, and the few facts about it that a subscriber needs and a
browser would learn from SDP and RTCP. The recorder knows media through these
types only; `MediaNode` implements them (see media.sink).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .codecs import Codec

PacketCallback = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class SenderClock:
    """The publisher's own clock, from its latest RTCP sender report: the packet this
    subscriber receives with RTP timestamp ``timestamp`` was sampled at ``wall``
    (Unix seconds on the publisher's clock, which may differ from ours)."""

    wall: float
    timestamp: int


class InternalSubscription(Protocol):
    """One internal subscriber's stream: packets arrive rewritten onto one continuous
    stream across publisher reconnects, starting on a keyframe."""

    @property
    def publishing(self) -> bool:
        """Whether a publisher currently sends this stream."""
        ...

    def codec(self, payload_type: int) -> Codec | None:
        """The codec of packets with this payload type; None for an unknown one or
        when nobody publishes."""
        ...

    def sender_clock(self) -> SenderClock | None:
        """None until the current publisher has sent a sender report."""
        ...

    def request_keyframe(self, *, urgent: bool = False) -> None:
        """Ask the publisher for a keyframe (rate-limited unless ``urgent``)."""
        ...

    def close(self) -> None:
        """Stop receiving; the subscription is detached from the session."""
        ...


class MediaSubscriptions(Protocol):
    """Where an internal subscriber subscribes: a node's media (`MediaNode`)."""

    def add_sink(
        self, session_id: str, slot: str, role: str, on_packet: PacketCallback
    ) -> InternalSubscription:
        """Subscribe to ``slot``'s ``role`` stream ("audio", "video" for the camera,
        "screen") in a session, whether or not it is published yet."""
        ...
