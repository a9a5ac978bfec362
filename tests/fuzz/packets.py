"""Real RTP/RTCP packets (VP8, H.264, Opus, RTX; reports and feedback) as
Hypothesis strategies, and mutations of them: bits flipped, cut short, extended,
and the fields that say how long things are (CSRC count, extension length,
padding, RTCP length and counts) set to anything."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from media.rtp import build_nack, build_pli, build_remb, build_rr, build_rtx, build_sr
from tests.support.rtp import build_fir

VP8_PT, VP8_RTX_PT, H264_PT, H264_RTX_PT, OPUS_PT = 96, 97, 102, 103, 111
VP8_SSRC, H264_SSRC, OPUS_SSRC = 1000, 2000, 3000
RTX_OF = {VP8_SSRC: VP8_SSRC + 1, H264_SSRC: H264_SSRC + 1}
PUBLISHER_EXTENSIONS = {
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 1,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 2,
    "urn:ietf:params:rtp-hdrext:sdes:mid": 4,
    "urn:3gpp:video-orientation": 13,
}

SEQS = st.integers(0, 0xFFFF)
BODY = st.binary(min_size=0, max_size=40)


def rtp(
    seq: int, ts: int, ssrc: int, pt: int, payload: bytes, *, marker: bool = False,
    csrcs: tuple[int, ...] = (), extension: bytes | None = None, profile: int = 0xBEDE,
    padding: int = 0,
) -> bytes:  # fmt: skip
    b0 = 0x80 | len(csrcs) | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    b1 = (0x80 if marker else 0) | pt
    head = struct.pack("!BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        extension += bytes(-len(extension) % 4)
        head += struct.pack("!HH", profile, len(extension) // 4) + extension
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return head + payload + pad


@st.composite
def extensions(draw) -> tuple[bytes, int] | None:
    """A header extension block in one-byte or two-byte form, or none."""
    ids = sorted(PUBLISHER_EXTENSIONS.values()) + [3, 14, 15]
    elements = draw(
        st.lists(st.tuples(st.sampled_from(ids), st.binary(min_size=0, max_size=4)), max_size=3)
    )
    if not elements:
        return None
    if draw(st.booleans()):
        block = b"".join(
            bytes([(i << 4) | (len(v) - 1 if v else 0)]) + (v or b"\0") for i, v in elements
        )
        return block, 0xBEDE
    block = b"".join(bytes([i, len(v)]) + v for i, v in elements)
    return block, 0x1000


@st.composite
def vp8_payload(draw) -> bytes:
    """RFC 7741 descriptor (picture id, TL0PICIDX, TID as drawn), then VP8 data whose
    first frame header is a key frame's or an inter frame's."""
    start, key = draw(st.booleans()), draw(st.booleans())
    picture_id = draw(st.none() | st.integers(0, 0x7FFF))
    tl0, tid = draw(st.none() | st.integers(0, 255)), draw(st.none() | st.integers(0, 3))
    x = picture_id is not None or tl0 is not None or tid is not None
    descriptor = bytes([(0x80 if x else 0) | (0x10 if start else 0)])
    if x:
        flags = (0x80 if picture_id is not None else 0) | (0x40 if tl0 is not None else 0)
        descriptor += bytes([flags | (0x20 if tid is not None else 0)])
        if picture_id is not None:
            descriptor += (
                struct.pack("!H", 0x8000 | picture_id) if picture_id > 127 else bytes([picture_id])
            )
        if tl0 is not None:
            descriptor += bytes([tl0])
        if tid is not None:
            descriptor += bytes([tid << 6 | 0x20])
    frame = b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00" if key else b"\x31\x02\x00"
    return descriptor + frame + draw(BODY)


@st.composite
def h264_payload(draw) -> bytes:
    """A single NAL unit, a STAP-A of a few, or an FU-A fragment (RFC 6184)."""
    nal_types = st.sampled_from([1, 5, 6, 7, 8, 9])
    shape = draw(st.sampled_from(["single", "stap-a", "fu-a"]))
    if shape == "single":
        return bytes([0x60 | draw(nal_types)]) + draw(BODY)
    if shape == "stap-a":
        nals = draw(
            st.lists(
                st.tuples(nal_types, st.binary(min_size=0, max_size=12)), min_size=1, max_size=3
            )
        )
        units = [bytes([0x60 | t]) + body for t, body in nals]
        return b"\x78" + b"".join(struct.pack("!H", len(u)) + u for u in units)
    start, end = draw(st.booleans()), draw(st.booleans())
    header = (0x80 if start else 0) | (0x40 if end else 0) | draw(nal_types)
    return bytes([0x7C, header]) + draw(BODY)


@st.composite
def media_packet(draw, seq=SEQS) -> bytes:
    """A real RTP packet of one of the publisher's streams (or an unknown SSRC)."""
    kind = draw(st.sampled_from(["vp8", "h264", "opus", "other"]))
    ssrc, pt, payload = {
        "vp8": (VP8_SSRC, VP8_PT, vp8_payload()),
        "h264": (H264_SSRC, H264_PT, h264_payload()),
        "opus": (OPUS_SSRC, OPUS_PT, BODY),
        "other": (draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 127)), BODY),
    }[kind]
    extension = draw(extensions())
    packet = rtp(
        draw(seq), draw(st.integers(0, 0xFFFFFFFF)), ssrc, pt, draw(payload),
        marker=draw(st.booleans()), csrcs=tuple(draw(st.lists(st.integers(0, 99), max_size=2))),
        extension=extension[0] if extension else None,
        profile=extension[1] if extension else 0xBEDE, padding=draw(st.integers(0, 3)),
    )  # fmt: skip
    if kind in ("vp8", "h264") and draw(st.integers(0, 4)) == 0:  # a retransmission of it
        rtx_pt = VP8_RTX_PT if kind == "vp8" else H264_RTX_PT
        packet = build_rtx(packet, RTX_OF[ssrc], rtx_pt, draw(SEQS))
    return packet


SSRC_SEEN = st.sampled_from([VP8_SSRC, H264_SSRC, OPUS_SSRC, 5, 7000, 7002, 7004, 0])


@st.composite
def rtcp_packet(draw, media_ssrcs=SSRC_SEEN) -> bytes:
    """A compound RTCP packet of reports and feedback about the streams in play."""
    parts = []
    kinds = st.sampled_from(["sr", "rr", "nack", "pli", "fir", "remb", "sdes", "bye"])
    for kind in draw(st.lists(kinds, min_size=1, max_size=3)):
        sender, media = draw(SSRC_SEEN), draw(media_ssrcs)
        if kind == "sr":
            parts.append(build_sr(sender, draw(st.integers(0, 2**64 - 1)), 9, 10, 1000))
        elif kind == "rr":
            lost, ext, jitter = draw(st.integers(-(2**23), 2**23 - 1)), draw(SEQS), draw(SEQS)
            parts.append(
                build_rr(sender, media, draw(st.integers(0, 255)), lost, ext, jitter, 0, 0)
            )
        elif kind == "nack":
            parts.append(build_nack(sender, media, draw(st.lists(SEQS, min_size=1, max_size=20))))
        elif kind == "pli":
            parts.append(build_pli(sender, media))
        elif kind == "fir":
            parts.append(build_fir(sender, media, draw(st.integers(0, 255))))
        elif kind == "remb":
            bitrate = draw(st.integers(0, 2**40))
            parts.append(build_remb(sender, bitrate, draw(st.lists(media_ssrcs, max_size=3))))
        elif kind == "sdes":
            cname = draw(st.binary(min_size=0, max_size=12))
            item = struct.pack("!IBB", sender, 1, len(cname)) + cname + b"\0"
            item += bytes(-len(item) % 4)
            parts.append(struct.pack("!BBH", 0x81, 202, len(item) // 4) + item)
        else:
            parts.append(struct.pack("!BBHI", 0x81, 203, 1, sender))
    return b"".join(parts)


# Offsets where a length, a count or a flag lives: the fixed header's first bytes,
# the extension header after zero to two CSRCs, an RTCP packet's count and length.
BOUNDARY_BYTES = st.sampled_from([0, 1, 0x0F, 0x10, 0x1F, 0x20, 0x7F, 0x80, 0x9F, 0xBF, 0xFF])
FIELD_OFFSETS = [0, 1, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 2, 3, 8]


@st.composite
def mutated(draw, packets: st.SearchStrategy[bytes]) -> bytes:
    """A real packet, then a few mutations."""
    data = bytearray(draw(packets))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "truncate", "extend", "field", "length", "padding"]))
        if how == "flip" and data:
            bit = draw(st.integers(0, len(data) * 8 - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        elif how == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif how == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        elif how == "field":
            offset = draw(st.sampled_from(FIELD_OFFSETS))
            if offset < len(data):
                data[offset] = draw(BOUNDARY_BYTES | st.integers(0, 255))
        elif how == "length" and len(data) >= 4:  # an RTCP length, or an extension length
            offset = draw(st.sampled_from([2, 14, 18, 22]))
            if offset + 2 <= len(data):
                data[offset : offset + 2] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        elif how == "padding" and data:
            data[0] |= 0x20
            data[-1] = draw(st.integers(0, 255))
    return bytes(data)


def datagrams(real: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """What arrives: mostly real packets, many of them damaged, and some noise."""
    return st.one_of(
        real,
        mutated(real),
        mutated(real),
        st.binary(max_size=64),
        st.binary(min_size=2, max_size=64).map(lambda b: bytes([0x80 | b[0] & 0x3F]) + b[1:]),
    )
