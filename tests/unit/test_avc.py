"""H.264 parameter sets as the recorder reads them: frame sizes out of real SPS from
libx264 (profiles, chroma formats, cropping, interlacing, scaling matrices) and from
aiortc's encoder, the avcC record against the one FFmpeg writes, AVCC framing, and
malformed input giving None rather than an exception."""

from __future__ import annotations

import fractions
import functools
import io

import av
import numpy as np
import pytest

from recordings.avc import (
    NAL_PPS,
    NAL_SPS,
    BitReader,
    annexb_nals,
    avcc_nals,
    avcc_record,
    nal_type,
    parse_sps,
    stream_config,
    to_avcc,
    unescape,
)
from tests.support.matroska import header


def _frame(width: int, height: int, pix_fmt: str) -> av.VideoFrame:
    image = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 30)
    return frame


@functools.cache
def x264_parameter_sets(width: int, height: int, pix_fmt: str = "yuv420p", **params: str):
    """(SPS, PPS) libx264 writes in-band for one frame of this size."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, pix_fmt
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"preset": "ultrafast", **params}
    packets = encoder.encode(_frame(width, height, pix_fmt)) + encoder.encode(None)
    nals = annexb_nals(b"".join(bytes(p) for p in packets))
    sps = next(n for n in nals if nal_type(n) == NAL_SPS)
    pps = next(n for n in nals if nal_type(n) == NAL_PPS)
    return sps, pps


HIGH = "8x8dct=1"  # the fastest preset leaves out what needs more than baseline
# (width, height, pix_fmt, x264 options, profile_idc, chroma_format_idc)
CASES = [
    (320, 240, "yuv420p", {}, 66, 1),
    (176, 144, "yuv420p", {"x264-params": "cabac=1"}, 77, 1),
    (642, 362, "yuv420p", {"x264-params": HIGH}, 100, 1),  # cropped right and bottom
    (1920, 1080, "yuv420p", {"x264-params": HIGH}, 100, 1),  # 1088 coded, 8 rows cropped
    (1920, 1080, "yuv420p", {"x264-params": f"{HIGH}:interlaced=1"}, 100, 1),  # fields
    (640, 360, "yuv420p", {"x264-params": "cqm=jvt"}, 100, 1),  # matrices (in the PPS)
    (352, 202, "yuv422p", {}, 122, 2),  # 4:2:2: crop rows one by one
    (321, 241, "yuv444p", {}, 244, 3),  # 4:4:4: odd sizes
]


@pytest.mark.parametrize(("width", "height", "pix_fmt", "options", "profile", "chroma"), CASES)
def test_sizes_of_real_parameter_sets(width, height, pix_fmt, options, profile, chroma):
    sps, _ = x264_parameter_sets(width, height, pix_fmt, **options)
    parsed = parse_sps(sps)
    assert parsed is not None
    assert (parsed.width, parsed.height) == (width, height)
    assert (parsed.profile_idc, parsed.chroma_format_idc) == (profile, chroma)


class BitWriter:
    def __init__(self) -> None:
        self.bits = ""

    def u(self, count: int, value: int) -> BitWriter:
        self.bits += format(value, f"0{count}b") if count else ""
        return self

    def ue(self, value: int) -> BitWriter:
        code = format(value + 1, "b")
        self.bits += "0" * (len(code) - 1) + code
        return self

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, header: int) -> bytes:
        bits = self.bits + "1"  # rbsp_stop_one_bit
        bits += "0" * (-len(bits) % 8)
        return bytes([header]) + int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_size_of_a_parameter_set_with_every_optional_part():
    """What x264 never writes: scaling lists in the SPS, picture order count type 1,
    field coding with cropping (and bytes that need emulation prevention)."""
    w = BitWriter().u(8, 100).u(8, 0).u(8, 40).ue(0)  # High, level 4.0, sps id 0
    w.ue(1).ue(0).ue(0).u(1, 0)  # 4:2:0, 8 bits, no transform bypass
    w.u(1, 1)  # seq_scaling_matrix_present_flag, then 8 lists:
    w.u(1, 1).se(-8)  # a 4x4 list that falls back to the default (next_scale 0)
    w.u(1, 1)  # a 4x4 list given in full
    for _ in range(16):
        w.se(1)
    w.u(1, 0).u(1, 0).u(1, 0).u(1, 0)  # 4x4 lists left out
    w.u(1, 1)  # an 8x8 list
    for _ in range(64):
        w.se(0)
    w.u(1, 0)
    w.ue(0).ue(1).u(1, 0).se(-(1 << 23)).se(2).ue(2).se(1).se(-1)  # frame num, POC type 1
    w.ue(4).u(1, 0).ue(39).ue(22)  # 4 refs, 40 x 23 macroblock pairs (640 x 736)
    w.u(1, 0).u(1, 1).u(1, 1)  # field coding, MBAFF, direct 8x8
    w.u(1, 1).ue(0).ue(0).ue(0).ue(4)  # crop 4 units (of 4 rows in fields) at the bottom
    w.u(1, 0)  # no VUI
    raw = w.nal(0x67)
    escaped = bytearray(raw[:1])  # emulation prevention, as an encoder would write it
    zeros = 0
    for byte in raw[1:]:
        if zeros >= 2 and byte <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    assert len(escaped) > len(raw)
    parsed = parse_sps(bytes(escaped))
    assert parsed is not None and (parsed.width, parsed.height) == (640, 720)


def test_size_of_aiortc_encoders_parameter_sets():
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000,
                                                payloadType=96))  # fmt: skip
    frame = _frame(640, 360, "yuv420p")
    frame.time_base = fractions.Fraction(1, 90000)
    payloads, _ = encoder.encode(frame)
    stap = payloads[0]
    assert stap[0] & 0x1F == 24  # SPS and PPS in a STAP-A, first
    sps = stap[3 : 3 + int.from_bytes(stap[1:3], "big")]
    parsed = parse_sps(sps)
    assert parsed is not None and (parsed.width, parsed.height) == (640, 360)
    assert parsed.profile_idc == 66  # constrained baseline, as WebRTC negotiates


@pytest.mark.parametrize(("width", "height", "pix_fmt", "options"), [
    (320, 240, "yuv420p", {}),
    (642, 362, "yuv420p", {"x264-params": HIGH}),
    (352, 202, "yuv422p", {}),
])  # fmt: skip
def test_avcc_record_is_the_one_ffmpeg_writes(width, height, pix_fmt, options):
    """FFmpeg's Matroska muxer turns libx264's global header into the avcC record
    itself (ff_isom_write_avcc): ours, from the same SPS and PPS, is byte for byte it."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"preset": "ultrafast", **options}
        for packet in stream.encode(_frame(width, height, pix_fmt)) + stream.encode(None):
            container.mux(packet)
        global_header = stream.codec_context.extradata
    nals = annexb_nals(global_header)
    sps = [n for n in nals if nal_type(n) == NAL_SPS]
    pps = [n for n in nals if nal_type(n) == NAL_PPS]
    [track] = header(buffer.getvalue())[1].values()
    assert track.codec_id == "V_MPEG4/ISO/AVC"
    assert avcc_record(sps, pps) == track.private


def test_avcc_record_layout():
    sps, pps = x264_parameter_sets(320, 240)
    record = avcc_record([sps], [pps])
    assert record[:4] == bytes([1, sps[1], sps[2], sps[3]])  # version, profile, compat, level
    assert record[4] == 0xFF  # 4-byte NAL lengths
    assert record[5] == 0xE1 and record[6:8] == len(sps).to_bytes(2, "big")
    assert record[8 : 8 + len(sps)] == sps
    rest = record[8 + len(sps) :]
    assert rest == bytes([1]) + len(pps).to_bytes(2, "big") + pps  # baseline: no extension
    assert avcc_record([], [pps]) is None and avcc_record([sps], []) is None
    assert avcc_record([pps], [pps]) is None  # not an SPS


def test_stream_config_of_a_keyframe_sample():
    sps, pps = x264_parameter_sets(642, 362)
    sample = to_avcc([sps, pps, b"\x65\x88\x84\x00"])
    assert avcc_nals(sample) == [sps, pps, b"\x65\x88\x84\x00"]
    size, record = stream_config(sample)
    assert size == (642, 362) and record == avcc_record([sps], [pps])
    assert stream_config(to_avcc([pps, b"\x65\x88"])) is None  # no SPS
    assert stream_config(sample[:-1]) is None  # a length past the end


def test_exp_golomb_and_emulation_prevention():
    reader = BitReader(bytes([0b1_010_011_0, 0b0100_011_0]))  # 1 010 011 00100 011
    assert [reader.ue(), reader.ue(), reader.ue(), reader.ue(), reader.se()] == [0, 1, 2, 3, -1]
    with pytest.raises(ValueError):
        BitReader(b"\x00\x00").ue()  # runs past the end
    assert unescape(b"\x00\x00\x03\x01\x00\x00\x03\x00\x00\x03") == b"\x00\x00\x01\x00\x00\x00\x00"
    assert unescape(b"\x01\x02") == b"\x01\x02"


def test_malformed_parameter_sets_give_none():
    sps, _ = x264_parameter_sets(1920, 1080)
    rng = np.random.default_rng(3)
    for cut in range(len(sps)):
        parse_sps(sps[:cut])  # truncated anywhere: None or a size, never an exception
    for _ in range(300):
        parse_sps(b"\x67" + rng.integers(0, 256, rng.integers(0, 40), np.uint8).tobytes())
    assert parse_sps(b"\x67\x42\x00\x1e" + b"\x00" * 8) is None  # exp-Golomb of zeros
    assert parse_sps(b"\x68" + sps[1:]) is None  # a PPS header
    assert parse_sps(b"") is None
    assert avcc_nals(b"\x00\x00\x00\x00") is None  # a zero length
    two = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce"
    assert annexb_nals(two) == [b"\x67\x42", b"\x68\xce"]
