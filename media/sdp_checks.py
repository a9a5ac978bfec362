"""What an offer and a trickled candidate must hold before aiortc is handed them.

aiortc asserts on some of it only after the answer went out (an offer without a DTLS
fingerprint is answered, then its connection task dies), chokes on inconsistent
bundling (it stops the one transport every m-line shares), and a candidate with a
port past 65535 closes the ICE socket for good. Each is refused here instead, with
a message saying what is missing or wrong.
"""

from __future__ import annotations

import ipaddress
import re

from aiortc import RTCIceCandidate
from aiortc.sdp import MediaDescription, SessionDescription, candidate_from_sdp

from .aiortc_internals import FINGERPRINT_ALGORITHMS, answerable_codecs, offerable_codec_names
from .errors import MediaError

# An RFC 5888 token, no longer than the protocol lets a candidate's sdpMid be.
MID = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]{1,32}")
ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")  # RFC 8839 5.4: ice-char
ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+")
FOUNDATION = re.compile(r"[A-Za-z0-9+/]{1,32}")
MDNS_NAME = re.compile(r"[A-Za-z0-9-]{1,63}\.local")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
MAX_SSRC = (1 << 32) - 1


def check_offer(parsed: SessionDescription) -> None:
    """Raise MediaError("bad_sdp") naming the first thing that makes the offer unusable."""
    for index, media in enumerate(parsed.media):
        problem = mline_problem(media)
        if problem is not None:
            raise MediaError("bad_sdp", f"m-line {index} ({media.kind}) {problem}")
    if not any(media.port for media in parsed.media):
        raise MediaError("bad_sdp", "every m-line of the offer is disabled (port 0)")
    problem = bundle_problem(parsed)
    if problem is not None:
        raise MediaError("bad_sdp", problem)


def mline_problem(media: MediaDescription) -> str | None:
    """What keeps one m-line from being answered, or None."""
    for check in (_transport_problem, _ice_problem, _dtls_problem, _format_problem):
        problem = check(media)
        if problem is not None:
            return problem
    return None


def _transport_problem(media: MediaDescription) -> str | None:
    if not media.rtp.muxId:
        return "has no a=mid"
    if not MID.fullmatch(media.rtp.muxId):
        return "has an a=mid that is not a token of 1 to 32 characters"
    if media.direction not in DIRECTIONS:
        return "states no direction (a=sendrecv, a=sendonly, a=recvonly or a=inactive)"
    if not media.rtcp_mux:
        return "does not multiplex RTCP with RTP (a=rtcp-mux)"
    return None


def _ice_problem(media: MediaDescription) -> str | None:
    ice = media.ice
    if not ice.usernameFragment:
        return "has no ICE username fragment (a=ice-ufrag)"
    if not ICE_UFRAG.fullmatch(ice.usernameFragment):
        return "has an ICE username fragment (a=ice-ufrag) that is not 4 to 256 ice-chars"
    if not ice.password:
        return "has no ICE password (a=ice-pwd)"
    if not ICE_PWD.fullmatch(ice.password):
        return "has an ICE password (a=ice-pwd) that is not 22 to 256 ice-chars"
    for candidate in media.ice_candidates:
        problem = candidate_problem(candidate)
        if problem is not None:
            return f"holds an ICE candidate that {problem}"
    return None


def _dtls_problem(media: MediaDescription) -> str | None:
    if media.dtls is None:  # aiortc leaves it out when a=setup is missing
        return "has no DTLS role (a=setup)"
    if not media.dtls.fingerprints:
        return "has no DTLS fingerprint (a=fingerprint), at session or media level"
    for fingerprint in media.dtls.fingerprints:
        if fingerprint.algorithm.lower() in FINGERPRINT_ALGORITHMS and FINGERPRINT.fullmatch(
            fingerprint.value
        ):
            return None
    return "has no DTLS fingerprint (a=fingerprint) by " + ", ".join(FINGERPRINT_ALGORITHMS)


def _format_problem(media: MediaDescription) -> str | None:
    """Payload types, codecs, SSRCs and header extension ids."""
    formats = set(media.fmt)
    if any(pt > 127 for pt in formats):
        return "lists a payload type above 127"
    mapped: set[int] = set()
    for codec in media.rtp.codecs:
        if codec.payloadType not in formats:
            return f"maps payload type {codec.payloadType}, which its m= line does not list"
        if codec.payloadType in mapped:
            return f"maps payload type {codec.payloadType} twice"
        mapped.add(codec.payloadType)
    if not answerable_codecs(media):
        names = ", ".join(offerable_codec_names(media.kind))
        return f"offers no codec this server can answer ({names})"
    ssrcs = [s.ssrc for s in media.ssrc] + [s for g in media.ssrc_group for s in g.items]
    if any(not 0 <= ssrc <= MAX_SSRC for ssrc in ssrcs):
        return "announces an SSRC outside 0 to 2^32-1"
    if any(g.semantic == "FID" and len(g.items) != 2 for g in media.ssrc_group):
        return "has an a=ssrc-group:FID that does not pair one SSRC with its RTX SSRC"
    ids: dict[int, str] = {}
    for extension in media.rtp.headerExtensions:
        if not 1 <= extension.id <= 255:
            return f"uses header extension id {extension.id}, outside 1 to 255"
        if ids.setdefault(extension.id, extension.uri) != extension.uri:
            return f"maps header extension id {extension.id} twice"
    return None


def bundle_problem(parsed: SessionDescription) -> str | None:
    """Every m-line rides one transport here (max-bundle), so the offer must bundle
    them all, tagged by the first m-line: aiortc stops the shared transport when the
    group starts elsewhere or names an m-line twice."""
    mids = [media.rtp.muxId for media in parsed.media]
    if len(set(mids)) != len(mids):
        return "two m-lines of the offer share one a=mid"
    groups = [group for group in parsed.group if group.semantic == "BUNDLE"]
    if len(groups) > 1:
        return "the offer has more than one BUNDLE group"
    if not groups:
        if len(mids) > 1:
            return "the offer does not bundle its m-lines (a=group:BUNDLE)"
        return None
    items = [str(item) for item in groups[0].items]
    if len(set(items)) != len(items):
        return "the BUNDLE group names one m-line twice"
    unknown = next((item for item in items if item not in mids), None)
    if unknown is not None:
        return f"the BUNDLE group names mid {unknown!r}, which no m-line has"
    if set(items) != set(mids):
        return "the BUNDLE group leaves out some of the offer's m-lines"
    if items[0] != mids[0]:
        return "the BUNDLE group does not start with the first m-line's mid"
    return None


def parse_candidate(candidate: dict, mids: list[str | None]) -> RTCIceCandidate:
    """A trickled candidate (``candidate``, ``sdpMid``, ``sdpMLineIndex``) for a peer
    whose m-lines have ``mids``, in order; MediaError("bad_candidate") if it names no
    m-line or cannot be used. An sdpMid, when given, decides which m-line (JSEP)."""
    mid, index = candidate.get("sdpMid") or None, candidate.get("sdpMLineIndex")
    if mid is None and index is None:
        raise MediaError("bad_candidate", "the candidate names no m-line (sdpMid, sdpMLineIndex)")
    if mid is not None and mid not in mids:
        raise MediaError("bad_candidate", f"the candidate's sdpMid {mid!r} names no m-line")
    if mid is None and not 0 <= index < len(mids):
        raise MediaError("bad_candidate", f"the candidate's sdpMLineIndex {index} names no m-line")
    try:
        parsed = candidate_from_sdp(candidate["candidate"].removeprefix("candidate:"))
    except Exception:  # noqa: BLE001 - aiortc raises anything on bad input
        raise MediaError("bad_candidate", "the ICE candidate cannot be parsed") from None
    problem = candidate_problem(parsed)
    if problem is not None:
        raise MediaError("bad_candidate", f"the ICE candidate {problem}")
    parsed.sdpMid, parsed.sdpMLineIndex = mid, index
    return parsed


def candidate_problem(candidate: RTCIceCandidate) -> str | None:
    """What makes an ICE candidate unusable (aioice would act on it unchecked), or None."""
    if not FOUNDATION.fullmatch(candidate.foundation):
        return "has a foundation that is not 1 to 32 ice-chars"
    if not 1 <= candidate.component <= 256:
        return "has a component outside 1 to 256"
    if candidate.protocol.lower() not in ("udp", "tcp"):
        return "has a transport other than UDP or TCP"
    if not 0 <= candidate.priority <= MAX_SSRC:
        return "has a priority outside 0 to 2^32-1"
    if not _address(candidate.ip):
        return "has an address that is neither an IP address nor an mDNS name"
    if not 0 <= candidate.port <= 65535:
        return "has a port outside 0 to 65535"
    if candidate.type not in CANDIDATE_TYPES:
        return "has a type other than host, srflx, prflx or relay"
    port = candidate.relatedPort
    if port is not None and not 0 <= port <= 65535:
        return "has a related port outside 0 to 65535"
    return None


def _address(host: str) -> bool:
    if MDNS_NAME.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
