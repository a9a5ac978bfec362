"""H.264 access units out of forwarded RTP (RFC 6184, packetization-mode 0 or 1),
for the recorder: NAL units from single NAL unit packets, STAP-A aggregates and
FU-A fragments, joined per RTP timestamp (one access unit) and given out as AVCC
samples (4-byte lengths), in order and decodable, as `VideoFrames` does for VP8.

An access unit starts with the earliest packet whose first NAL unit may begin one:
an access unit delimiter, SEI, SPS or PPS, or the slice with ``first_mb_in_slice``
0 (a frame's first). A keyframe is an access unit with an IDR slice; it always
leaves here with the SPS and PPS it needs in front of its slices (from the stream
when the publisher sent them, as WebRTC encoders do before each IDR, else the last
ones seen), so a segment or an export can start on any keyframe and follow a
change of parameters in the stream.

Interleaved-mode packets (STAP-B, MTAP, FU-B) never come in the modes WebRTC
negotiates: an access unit holding one is dropped, as is one with a broken
fragment or aggregate. NAL unit types 0, 30 and 31 are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from .avc import LENGTH_SIZE, NAL_IDR, NAL_PPS, NAL_SPS, avcc_nals, stream_config, to_avcc
from .reassembly import VideoFrames

_STAP_A = 24
_FU_A = 28
_INTERLEAVED = frozenset({25, 26, 27, 29})  # STAP-B, MTAP16, MTAP24, FU-B
_IGNORED = frozenset({0, 30, 31})
_STARTS_AU = frozenset({6, 7, 8, 9})  # SEI, SPS, PPS, access unit delimiter
_SLICES = frozenset({1, 5})
_AUD = 9

# What each packet's data starts with, for `_join`.
_WHOLE = 0  # then whole NAL units, AVCC
_FU_START, _FU_MIDDLE, _FU_END = 1, 2, 3  # then (on the start: the NAL header and) bytes
_BROKEN = 4  # a packet that makes its access unit undecodable
_NOTHING = bytes([_WHOLE])
_BROKEN_PART = (bytes([_BROKEN]), False, False)


def _starts_au(nal_type: int, first_payload_byte: int) -> bool:
    if nal_type in _STARTS_AU:
        return True
    return nal_type in _SLICES and bool(first_payload_byte & 0x80)  # first_mb_in_slice 0


def _stap_a(payload: bytes) -> tuple[bytes, bool, bool]:
    """The NAL units of a STAP-A (RFC 6184 5.7.1), each 16-bit length prefixed."""
    nals, pos, size = [], 1, len(payload)
    while pos < size:
        if pos + 2 > size:
            return _BROKEN_PART
        length = (payload[pos] << 8) | payload[pos + 1]
        pos += 2
        if length == 0 or pos + length > size:
            return _BROKEN_PART
        nal = payload[pos : pos + length]
        pos += length
        kind = nal[0] & 0x1F
        if nal[0] & 0x80 or kind in _INTERLEAVED or kind in (_STAP_A, _FU_A):
            return _BROKEN_PART
        if kind not in _IGNORED:
            nals.append(nal)
    if not nals:
        return _NOTHING, False, False
    first = nals[0]
    starts = _starts_au(first[0] & 0x1F, first[1] if len(first) > 1 else 0)
    keyframe = any(n[0] & 0x1F == NAL_IDR for n in nals)
    return bytes([_WHOLE]) + to_avcc(nals), starts, keyframe


def _fu_a(payload: bytes) -> tuple[bytes, bool, bool]:
    """One fragment of a NAL unit (RFC 6184 5.8)."""
    if len(payload) < 3:
        return _BROKEN_PART
    indicator, header = payload[0], payload[1]
    kind = header & 0x1F
    start, end = bool(header & 0x80), bool(header & 0x40)
    if (start and end) or kind in _IGNORED or kind in _INTERLEAVED or kind in (_STAP_A, _FU_A):
        return _BROKEN_PART
    keyframe = kind == NAL_IDR
    if start:
        nal_header = (indicator & 0xE0) | kind
        return bytes([_FU_START, nal_header]) + payload[2:], _starts_au(kind, payload[2]), keyframe
    return bytes([_FU_END if end else _FU_MIDDLE]) + payload[2:], False, keyframe


def describe(payload: bytes) -> tuple[bytes, bool, bool]:
    """What an RTP payload holds: (its data for `nal_units`, whether it may start an
    access unit, whether it holds an IDR slice)."""
    if not payload or payload[0] & 0x80:  # forbidden_zero_bit: a damaged packet
        return _BROKEN_PART
    kind = payload[0] & 0x1F
    if kind == _STAP_A:
        return _stap_a(payload)
    if kind == _FU_A:
        return _fu_a(payload)
    if kind in _INTERLEAVED:
        return _BROKEN_PART
    if kind in _IGNORED:
        return _NOTHING, False, False
    starts = _starts_au(kind, payload[1] if len(payload) > 1 else 0)
    whole = bytes([_WHOLE]) + len(payload).to_bytes(LENGTH_SIZE, "big") + payload
    return whole, starts, kind == NAL_IDR


def nal_units(parts: list[bytes]) -> list[bytes] | None:
    """The NAL units of one access unit's packets (as `describe` left them), in
    order; None if a fragment is missing its start or end or a packet is broken."""
    nals: list[bytes] = []
    fragment: bytearray | None = None
    for part in parts:
        tag = part[0]
        if tag == _WHOLE:
            whole = avcc_nals(part[1:])
            if fragment is not None or whole is None:
                return None
            nals += whole
        elif tag == _FU_START:
            if fragment is not None:
                return None
            fragment = bytearray(part[1:])
        elif tag in (_FU_MIDDLE, _FU_END):
            if fragment is None:
                return None
            fragment += part[1:]
            if tag == _FU_END:
                nals.append(bytes(fragment))
                fragment = None
        else:
            return None
    return None if fragment is not None else nals


class H264Frames(VideoFrames):
    """H.264 packets in, AVCC access units out (see the module)."""

    codec = "H264"

    def __init__(self, ask_keyframe: Callable[[], None], **kwargs) -> None:
        super().__init__(ask_keyframe, **kwargs)
        # The last SPS and PPS seen (a list each: a stream may use several ids).
        self.parameter_sets: dict[int, list[bytes]] = {NAL_SPS: [], NAL_PPS: []}

    def _describe(self, payload: bytes) -> tuple[bytes, bool, bool]:
        return describe(payload)

    def _join(self, parts: list[bytes], keyframe: bool) -> bytes | None:
        nals = nal_units(parts)
        if not nals:
            return None
        kinds = {n[0] & 0x1F for n in nals}
        if keyframe:  # parameter sets it lacks, from earlier in the stream
            lead = 1 if nals[0][0] & 0x1F == _AUD else 0  # a delimiter stays first
            for kind in (NAL_PPS, NAL_SPS):
                if kind not in kinds:
                    nals[lead:lead] = self.parameter_sets[kind]
        for kind in (NAL_SPS, NAL_PPS):
            sets = [n for n in nals if n[0] & 0x1F == kind]
            if sets:
                self.parameter_sets[kind] = sets
        sample = to_avcc(nals)
        if keyframe and stream_config(sample) is None:
            return None  # no usable SPS and PPS: it could not be decoded
        return sample
