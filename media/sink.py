"""Internal subscribers (the recorder): an OutStream whose "transport" is a callback,
behind the InternalSubscription interface."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from .aiortc_internals import Negotiated
from .codecs import Codec
from .leg import Leg
from .outbound import OutStream
from .rtp import ntp_to_unix
from .subscription import PacketCallback, SenderClock


class SinkTap:
    """Stands in for a transport when the subscriber is inside the server (the
    recorder): forwarded packets are handed to a callback."""

    ready = True

    def __init__(self, on_packet: PacketCallback) -> None:
        self.on_packet = on_packet

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        if not rtcp:
            self.on_packet(packet)
        return True


def sink_stream(slot: str, role: str, on_packet: PacketCallback) -> OutStream:
    """An OutStream for an internal subscriber to ``slot``'s ``role`` stream: it takes
    whatever codecs the publisher sends and leaves header extensions as they are."""
    leg = Leg(f"sink:{slot}:{role}", None)
    leg.tap = SinkTap(on_packet)
    ssrc = random.getrandbits(32)
    kind = "audio" if role == "audio" else "video"
    out = OutStream(leg, slot, Negotiated(None, kind, [], {}, ssrc, ssrc ^ 1), role)
    out.mirror = True
    return out


class Sink:
    """An InternalSubscription over one sink OutStream."""

    __slots__ = ("_out", "_detach")

    def __init__(self, out: OutStream, detach: Callable[[OutStream], None]) -> None:
        self._out = out
        self._detach = detach

    @property
    def publishing(self) -> bool:
        return self._out.source is not None

    def codec(self, payload_type: int) -> Codec | None:
        source = self._out.source
        return None if source is None else source.codecs.get(payload_type)

    def sender_clock(self) -> SenderClock | None:
        source, rewriter = self._out.source, self._out.rewriter
        report = source.last_sr if source is not None else None
        if report is None or rewriter is None:
            return None
        ntp, report_ts, _ = report
        timestamp = rewriter.out_timestamp(report_ts)  # onto the timestamps we deliver
        if timestamp is None:
            return None
        return SenderClock(ntp_to_unix(ntp), timestamp)

    def request_keyframe(self, *, urgent: bool = False) -> None:
        if self._out.source is not None:
            self._out.source.ask_keyframe(time.monotonic(), urgent)

    def close(self) -> None:
        self._detach(self._out)
