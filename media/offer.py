"""Reading a participant's SDP offer: which m-lines it publishes on (and as what),
and which of its m-lines carry which slot's streams back to it."""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.sdp import MediaDescription, SessionDescription

from .aiortc_internals import keep_codecs_off, label_sender, mline_index
from .errors import MediaError
from .sdp_checks import check_offer

KINDS = ("audio", "video")
SENDING = {"sendrecv", "sendonly"}

Outgoing = list[tuple[str, str, RTCRtpTransceiver]]  # (slot, role, m-line)


def parse_offer(sdp: str) -> SessionDescription:
    """The offer, parsed and checked (media.sdp_checks): MediaError if unusable."""
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception:  # noqa: BLE001 - aiortc raises anything on bad SDP
        raise MediaError("bad_sdp", "the offer is not valid SDP") from None
    if not parsed.media:
        raise MediaError("bad_sdp", "the offer has no media section")
    for media in parsed.media:
        if media.kind not in KINDS:
            raise MediaError("bad_sdp", f"unsupported media kind {media.kind!r}")
    check_offer(parsed)
    return parsed


def sends_media(parsed: SessionDescription) -> bool:
    return any(m.direction in SENDING for m in parsed.media)


def publisher_ssrcs(media: MediaDescription) -> tuple[int | None, set[int]]:
    """(media SSRC, RTX SSRCs) an offer's m-line announces."""
    rtx = {int(g.items[1]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1}
    primary = next((s.ssrc for s in media.ssrc if s.ssrc not in rtx), None)
    return primary, rtx


def published_mlines(
    pc: RTCPeerConnection, parsed: SessionDescription
) -> list[tuple[RTCRtpTransceiver, MediaDescription, str]]:
    """The m-lines the offer sends media on, each with its role: "audio", or for
    video "video" (the first video m-line, the camera) or "screen"."""
    found = []
    videos = 0
    for transceiver in pc.getTransceivers():
        media = parsed.media[mline_index(transceiver)]
        role = media.kind
        if media.kind == "video":  # the first video m-line is the camera
            role = "video" if videos == 0 else "screen"
            videos += 1
        if media.direction in SENDING:
            found.append((transceiver, media, role))
    return found


def choose_outgoing(pc: RTCPeerConnection, publish: str | None, receive: list[str]) -> Outgoing:
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
