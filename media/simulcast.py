"""Simulcast from a browser (RFC 8853 with RIDs, RFC 8851): the offer's ``a=rid`` and
``a=simulcast`` lines, which aiortc neither reads nor answers, and the lines the
answer needs to accept them. The offer announces no SSRC for the layers: their
packets are told apart by the RID and repaired-RID header extensions (RFC 8852),
which is why both must be offered too.

The pages list the layers from the smallest picture to the largest; that order is
the layers' order here (their sizes are learned from their keyframes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc.sdp import MediaDescription

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_LAYERS = 3  # more offered are left out of the answer, so the browser stops them
RID = re.compile(r"[A-Za-z0-9_-]{1,16}")


@dataclass(frozen=True)
class SimulcastOffer:
    """One m-line's simulcast as offered, and as far as it is accepted."""

    mid: str
    rids: tuple[str, ...]  # smallest picture first
    rid_ext: int  # header extension ids (the answer keeps the offer's)
    repaired_ext: int | None


def mline_sections(sdp: str) -> list[list[str]]:
    """The lines of each m-section of an SDP text, in order."""
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        if sections:
            sections[-1].append(line)
    return sections


def read_simulcast(lines: list[str], media: MediaDescription) -> SimulcastOffer | None:
    """The simulcast an offered m-section sends (``lines``: its SDP lines, ``media``: as
    aiortc parsed it); None when it sends one stream, or when its RIDs cannot be told
    apart (no RID header extension), which leaves the browser sending one."""
    sends: dict[str, None] = {}
    listed: list[str] = []
    for line in lines:
        if line.startswith("a=rid:"):
            rid, _, rest = line[6:].partition(" ")
            if rest.split(" ", 1)[0] == "send" and RID.fullmatch(rid):
                sends[rid] = None
        elif line.startswith("a=simulcast:"):
            listed = _send_list(line[12:])
    rids = tuple(rid for rid in listed if rid in sends)[:MAX_LAYERS]
    exts = {e.uri: e.id for e in media.rtp.headerExtensions}
    if len(rids) < 2 or RID_URI not in exts or not media.rtp.muxId:
        return None
    return SimulcastOffer(media.rtp.muxId, rids, exts[RID_URI], exts.get(REPAIRED_RID_URI))


def _send_list(value: str) -> list[str]:
    """The first alternative of each stream of an a=simulcast send list, paused ones
    (``~``) included: the answer may resume them."""
    words = value.split()
    for direction, streams in zip(words[::2], words[1::2], strict=False):
        if direction == "send":
            return [s.split(",")[0].lstrip("~") for s in streams.split(";")]
    return []


def answer_simulcast(answer: str, offer: SimulcastOffer) -> str:
    """``answer`` (aiortc's) with the lines that accept ``offer``'s layers in its
    m-section: the RID header extensions, each RID to receive, and a=simulcast."""
    lines = [f"a=extmap:{offer.rid_ext} {RID_URI}"]
    if offer.repaired_ext is not None:
        lines.append(f"a=extmap:{offer.repaired_ext} {REPAIRED_RID_URI}")
    lines += [f"a=rid:{rid} recv" for rid in offer.rids]
    lines.append("a=simulcast:recv " + ";".join(offer.rids))
    out: list[str] = []
    in_section = False
    for line in answer.splitlines():
        if line.startswith("m=") and in_section:
            out += lines
            in_section = False
        out.append(line)
        if line == f"a=mid:{offer.mid}":
            in_section = True
    if in_section:
        out += lines
    return "\r\n".join(out) + "\r\n"
