"""One live session's media: who publishes what, and every subscriber m-line,
each following the publisher stream of its slot and role."""

from __future__ import annotations

from dataclasses import dataclass, field

from .inbound import InStream
from .leg import Leg
from .outbound import OutStream
from .peer import Peer


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
        for stream in leg.streams:
            if self.sources.get((stream.slot, stream.role)) is stream:
                del self.sources[(stream.slot, stream.role)]
            for out in [*stream.outs, *stream.joining]:
                out.bind(None, now)
        for out in leg.outbound.values():
            out.bind(None, now)
            if out in self.outs:
                self.outs.remove(out)

    @property
    def empty(self) -> bool:
        """No peer and no internal subscriber: nothing left to keep the room for."""
        return not self.peers and not self.sinks
