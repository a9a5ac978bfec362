"""Internal subscribers (the recorder): an OutStream whose "transport" is a callback."""

from __future__ import annotations

from collections.abc import Callable


class SinkTap:
    """Stands in for a transport when the subscriber is inside the server (the
    recorder): forwarded packets are handed to a callback."""

    ready = True

    def __init__(self, on_packet: Callable[[bytes], None]) -> None:
        self.on_packet = on_packet

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        if not rtcp:
            self.on_packet(packet)
        return True
