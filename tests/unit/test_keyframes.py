"""Keyframe detection, on payloads from aiortc's own encoders and on hand-built ones."""

from __future__ import annotations

import fractions
import struct
import time

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.keyframes import is_keyframe
from media.rtp import Vp8Layer, is_h264_keyframe, is_vp8_keyframe, vp8_layer

FORCED = 4  # index of the frame encoded with force_keyframe=True


def _frames(count: int, width: int = 320, height: int = 240):
    # noise that moves: delta frames stay non-trivial but far smaller than keyframes
    base = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
        frame.pts = 3000 * i
        frame.time_base = fractions.Fraction(1, 90000)
        yield frame


def _encode(mime: str, count: int = 7) -> list[list[bytes]]:
    """RTP payloads per frame; frame 0 and frame FORCED are keyframes."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96))
    return [
        encoder.encode(frame, force_keyframe=i == FORCED)[0]
        for i, frame in enumerate(_frames(count))
    ]


@pytest.fixture(scope="module")
def vp8_frames() -> list[list[bytes]]:
    return _encode("video/VP8")


@pytest.fixture(scope="module")
def h264_frames() -> list[list[bytes]]:
    return _encode("video/H264")


# --- VP8 ------------------------------------------------------------------------------


def test_vp8_first_packet_of_keyframes_only(vp8_frames):
    for i, payloads in enumerate(vp8_frames):
        flags = [is_vp8_keyframe(p) for p in payloads]
        if i in (0, FORCED):
            assert len(payloads) > 1  # a keyframe spans packets: the rest must not match
            assert flags == [True] + [False] * (len(payloads) - 1), i
        else:
            assert not any(flags), i


def test_vp8_dispatch_and_memoryview(vp8_frames):
    key = vp8_frames[0][0]
    delta = vp8_frames[1][0]
    assert is_keyframe("VP8", key) and is_keyframe("vp8", memoryview(key))
    assert is_keyframe("video/VP8", key)
    assert not is_keyframe("Vp8", delta)


def _vp8(descriptor: VpxPayloadDescriptor, first_byte: int) -> bytes:
    return bytes(descriptor) + bytes([first_byte, 0x02, 0x00, 0x9D, 0x01, 0x2A])


@pytest.mark.parametrize(
    "descriptor",
    [
        VpxPayloadDescriptor(partition_start=1, partition_id=0),  # no X byte
        VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=5),  # 7-bit id
        VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=300),
        VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=300, tl0picidx=9),
        VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=3, tid=(1, 1)),
        VpxPayloadDescriptor(partition_start=1, partition_id=0, keyidx=4),
        VpxPayloadDescriptor(
            partition_start=1, partition_id=0, picture_id=0x7FFF, tl0picidx=1, tid=(2, 0), keyidx=3
        ),
    ],
)
def test_vp8_descriptor_variants(descriptor):
    assert is_vp8_keyframe(_vp8(descriptor, 0x10))  # P bit clear
    assert not is_vp8_keyframe(_vp8(descriptor, 0x11))  # P bit set: interframe


def test_vp8_7bit_picture_id_is_one_byte():
    # aiortc always writes 15-bit ids; a one-byte id must not shift the header read
    payload = bytes([0x90, 0x80, 0x05, 0x11])  # id 5, then a P=1 header
    assert not is_vp8_keyframe(payload)
    assert is_vp8_keyframe(bytes([0x90, 0x80, 0x05, 0x10]))


def test_vp8_not_start_or_other_partition():
    assert not is_vp8_keyframe(bytes([0x00, 0x10]))  # S=0
    assert not is_vp8_keyframe(bytes([0x11, 0x10]))  # partition 1
    assert not is_vp8_keyframe(bytes([0x08 | 0x10 | 0x02, 0x10]))
    assert is_vp8_keyframe(bytes([0x20 | 0x10, 0x10]))  # N (non-reference) does not matter


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        (VpxPayloadDescriptor(partition_start=1, partition_id=0), Vp8Layer(True, None, None)),
        (
            VpxPayloadDescriptor(
                partition_start=0, partition_id=0, picture_id=300, tl0picidx=7, tid=(2, 1)
            ),
            Vp8Layer(False, 2, 7),
        ),  # fmt: skip
        (
            VpxPayloadDescriptor(
                partition_start=1, partition_id=0, picture_id=5, tl0picidx=255, tid=(0, 1), keyidx=3
            ),
            Vp8Layer(True, 0, 255),
        ),  # fmt: skip
        (
            VpxPayloadDescriptor(partition_start=1, partition_id=1, tid=(1, 0)),
            Vp8Layer(False, 1, None),
        ),
    ],
)
def test_vp8_temporal_layer_fields(descriptor, expected):
    assert vp8_layer(_vp8(descriptor, 0x11)) == expected
    assert vp8_layer(bytes(descriptor)) is None  # no VP8 data after the descriptor


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x10", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\x80\x81\x00", b"\x90\xf0\x01\x02"],
)
def test_vp8_truncated(payload):
    assert not is_vp8_keyframe(payload)


# --- H264 -----------------------------------------------------------------------------


def _nal_types(payload: bytes) -> list[tuple[int, bool]]:
    """(NAL type, starts here) for what a packet carries: an independent reading."""
    kind = payload[0] & 0x1F
    if kind == 24:
        found, pos = [], 1
        while pos < len(payload):
            size = struct.unpack_from("!H", payload, pos)[0]
            found.append((payload[pos + 2] & 0x1F, True))
            pos += 2 + size
        return found
    if kind == 28:
        return [(payload[1] & 0x1F, bool(payload[1] & 0x80))]
    return [(kind, True)]


def test_h264_sps_and_idr_starts_detected_p_slices_not(h264_frames):
    for i, payloads in enumerate(h264_frames):
        for payload in payloads:
            starts = {kind for kind, start in _nal_types(payload) if start}
            assert is_h264_keyframe(payload) == bool(starts & {5, 7}), (i, _nal_types(payload))
        flags = [is_h264_keyframe(p) for p in payloads]
        if i in (0, FORCED):
            assert flags[0], i  # SPS+PPS(+SEI) STAP-A leads every IDR
            assert not all(flags)  # middle FU-A fragments of the IDR slices
        else:
            assert not any(flags), i
            assert all(k == 1 for p in payloads for k, _ in _nal_types(p))  # P slices


def test_h264_encoder_packetisation_is_as_expected(h264_frames):
    # what the tests above lean on: SPS/PPS aggregated first, IDR slices in FU-A
    first = _nal_types(h264_frames[0][0])
    assert [k for k, _ in first][:2] == [7, 8]
    assert any(p[0] & 0x1F == 28 and p[1] & 0x1F == 5 for p in h264_frames[0])
    assert [k for k, _ in _nal_types(h264_frames[FORCED][0])][:2] == [7, 8]


def _stap_a(*nals: bytes) -> bytes:
    return bytes([0x78]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
SEI = bytes([0x06, 0x05, 0x01, 0x00])
IDR = bytes([0x65, 0x88, 0x84, 0x00])
P_SLICE = bytes([0x41, 0x9A, 0x02, 0x00])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (SPS, True),
        (IDR, True),
        (PPS, False),
        (SEI, False),
        (P_SLICE, False),
        (_stap_a(SPS, PPS), True),
        (_stap_a(PPS, IDR), True),  # IDR found past the first aggregated NAL
        (_stap_a(SEI, PPS, IDR), True),
        (_stap_a(P_SLICE, P_SLICE), False),
        (_stap_a(PPS, SEI), False),
        (bytes([0x7C, 0x85]) + IDR[1:], True),  # FU-A start of IDR
        (bytes([0x7C, 0x05]) + IDR[1:], False),  # FU-A middle of IDR
        (bytes([0x7C, 0x45]) + IDR[1:], False),  # FU-A end of IDR
        (bytes([0x7C, 0x81]) + P_SLICE[1:], False),  # FU-A start of a P slice
        (bytes([0x7C, 0x87]) + SPS[1:], True),  # FU-A start of an SPS
        (b"", False),
        (bytes([0x7C]), False),  # truncated FU-A
        (bytes([0x78, 0x00]), False),  # truncated STAP-A
        (bytes([0x78, 0x00, 0x00, 0x00, 0x04]) + IDR, False),  # zero-length NAL: malformed
        (bytes([0x78, 0x00, 0x40, 0x41]) + P_SLICE, False),  # length runs past the end
    ],
)
def test_h264_hand_built(payload, expected):
    assert is_h264_keyframe(payload) is expected
    assert is_keyframe("H264", payload) is expected
    assert is_keyframe("video/h264", memoryview(payload)) is expected


@pytest.mark.parametrize("codec", ["opus", "audio/opus", "PCMU", "G722", "VP9"])
def test_other_codecs_never_block(codec):
    assert is_keyframe(codec, b"\x11\x22")
    assert is_keyframe(codec, b"")


def test_detection_speed(vp8_frames, h264_frames, capsys):
    samples = [("VP8", p) for p in vp8_frames[FORCED]] + [("H264", p) for p in h264_frames[1]]
    n = 20_000
    start = time.perf_counter()
    for _ in range(n // len(samples) + 1):
        for codec, payload in samples:
            is_keyframe(codec, payload)
    per = (time.perf_counter() - start) / ((n // len(samples) + 1) * len(samples)) * 1e6
    with capsys.disabled():
        print(f"\nis_keyframe: {per:.2f} us/packet")
    assert per < 20
