"""The codecs one m-line agreed on, as the forwarder matches them between legs."""

from __future__ import annotations

from dataclasses import dataclass

from .aiortc_internals import Negotiated


@dataclass(frozen=True)
class Codec:
    name: str  # "VP8", "H264", "OPUS", ...
    clock_rate: int
    payload_type: int
    rtx_payload_type: int | None
    profile: str | None  # H264: profile-level-id's profile and constraints + packetization-mode

    def matches(self, other: Codec) -> bool:
        return (self.name, self.clock_rate, self.profile) == (
            other.name,
            other.clock_rate,
            other.profile,
        )


def codecs_of(negotiated: Negotiated) -> list[Codec]:
    """Media codecs of an m-line in preference order, each with its RTX payload type."""
    rtx_for = {
        c.parameters.get("apt"): c.payloadType
        for c in negotiated.codecs
        if c.mimeType.lower().endswith("/rtx")
    }
    result = []
    for c in negotiated.codecs:
        name = c.mimeType.split("/", 1)[1].upper()
        if name in ("RTX", "RED", "ULPFEC"):
            continue
        profile = None
        if name == "H264":
            level_id = str(c.parameters.get("profile-level-id", "42e01f"))
            profile = f"{level_id[:4].lower()}/{c.parameters.get('packetization-mode', 0)}"
        result.append(Codec(name, c.clockRate, c.payloadType, rtx_for.get(c.payloadType), profile))
    return result
