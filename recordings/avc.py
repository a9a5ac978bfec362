"""H.264 bitstream pieces the recorder needs to store a stream without decoding it:
the size a sequence parameter set declares (ITU-T H.264 7.3.2.1.1, exp-Golomb
coded), the ``avcC`` record (AVCDecoderConfigurationRecord, ISO/IEC 14496-15
5.3.3.1) a Matroska ``V_MPEG4/ISO/AVC`` track carries as its CodecPrivate, and
access units as length-prefixed NAL units (AVCC, 4-byte lengths) rather than
Annex B start codes.

Everything here takes untrusted bytes: malformed input gives None (or ValueError
where documented), never another exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
LENGTH_SIZE = 4  # bytes of each NAL unit's length prefix in an AVCC sample

# profile_idc values whose SPS carries chroma format, bit depths and scaling
# matrices (H.264 7.3.2.1.1), and those whose avcC carries the extra fields
# (ISO/IEC 14496-15 5.3.3.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def unescape(rbsp: bytes) -> bytes:
    """A NAL unit's payload without its emulation prevention bytes (00 00 03)."""
    if b"\x00\x00\x03" not in rbsp:
        return rbsp
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """Big-endian bit reader with exp-Golomb codes (H.264 9.1); ValueError past the end."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def bits(self, count: int) -> int:
        if count > self.left:
            raise ValueError("read past the end of the parameter set")
        self.left -= count
        return (self.value >> self.left) & ((1 << count) - 1)

    def flag(self) -> bool:
        return bool(self.bits(1))

    def ue(self) -> int:
        zeros = 0
        while not self.bits(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True, slots=True)
class Sps:
    profile_idc: int
    constraints: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


def _skip_scaling_lists(reader: BitReader, count: int) -> None:
    for index in range(count):
        if reader.flag():  # seq_scaling_list_present_flag
            last = next_scale = 8
            for _ in range(16 if index < 6 else 64):
                if next_scale:
                    next_scale = (last + reader.se() + 256) % 256
                last = next_scale or last


def _skip_poc(reader: BitReader) -> None:
    """log2_max_frame_num and the picture order count fields."""
    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.flag()  # delta_pic_order_always_zero_flag
        reader.se()  # offset_for_non_ref_pic
        reader.se()  # offset_for_top_to_bottom_field
        cycle = reader.ue()
        if cycle > 255:
            raise ValueError("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            reader.se()
    elif poc_type != 2:
        raise ValueError("pic_order_cnt_type out of range")


def parse_sps(nal: bytes) -> Sps | None:
    """The fields of a sequence parameter set NAL unit (header byte included) up to
    its frame size and cropping; None if it is not a well-formed SPS."""
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        return None
    try:
        return _read_sps(BitReader(unescape(nal[1:])))
    except ValueError:
        return None


def _read_sps(reader: BitReader) -> Sps:
    profile, constraints, level = reader.bits(8), reader.bits(8), reader.bits(8)
    sps_id = reader.ue()
    chroma, depth_luma, depth_chroma, separate_planes = 1, 8, 8, False
    if profile in _HIGH_PROFILES:
        chroma = reader.ue()
        if chroma > 3:
            raise ValueError("chroma_format_idc out of range")
        if chroma == 3:
            separate_planes = reader.flag()
        depth_luma, depth_chroma = reader.ue() + 8, reader.ue() + 8
        reader.flag()  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            _skip_scaling_lists(reader, 12 if chroma == 3 else 8)
    _skip_poc(reader)
    reader.ue()  # max_num_ref_frames
    reader.flag()  # gaps_in_frame_num_value_allowed_flag
    width_mbs, height_units = reader.ue() + 1, reader.ue() + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.flag()  # mb_adaptive_frame_field_flag
    reader.flag()  # direct_8x8_inference_flag
    crop = (reader.ue(), reader.ue(), reader.ue(), reader.ue()) if reader.flag() else (0,) * 4
    # Crop units (H.264 7-19 to 7-22): chroma samples, and fields count twice.
    field_factor = 1 if frame_mbs_only else 2
    if chroma == 0 or separate_planes:
        unit_x, unit_y = 1, field_factor
    else:
        unit_x, unit_y = (1 if chroma == 3 else 2), (2 if chroma == 1 else 1) * field_factor
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = height_units * 16 * field_factor - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise ValueError("frame size out of range")
    return Sps(profile, constraints, level, sps_id, chroma, depth_luma, depth_chroma, width, height)


def avcc_record(sps_list: list[bytes], pps_list: list[bytes]) -> bytes | None:
    """The AVCDecoderConfigurationRecord (``avcC``) for these parameter sets, with
    4-byte NAL unit lengths; None without a well-formed SPS and a PPS."""
    if not sps_list or not pps_list or len(sps_list) > 31 or len(pps_list) > 255:
        return None
    first = parse_sps(sps_list[0])
    if first is None or any(not 0 < len(n) < 0x10000 for n in (*sps_list, *pps_list)):
        return None
    out = bytearray(
        [1, first.profile_idc, first.constraints, first.level_idc, 0xFC | (LENGTH_SIZE - 1)]
    )
    out.append(0xE0 | len(sps_list))
    for sps in sps_list:
        out += len(sps).to_bytes(2, "big") + sps
    out.append(len(pps_list))
    for pps in pps_list:
        out += len(pps).to_bytes(2, "big") + pps
    if first.profile_idc in _AVCC_EXT_PROFILES:
        out += bytes([
            0xFC | first.chroma_format_idc,
            0xF8 | (first.bit_depth_luma - 8),
            0xF8 | (first.bit_depth_chroma - 8),
            0,  # numOfSequenceParameterSetExt
        ])  # fmt: skip
    return bytes(out)


def to_avcc(nals: Iterable[bytes]) -> bytes:
    """NAL units as one AVCC sample: each prefixed by its 4-byte length."""
    return b"".join(len(nal).to_bytes(LENGTH_SIZE, "big") + nal for nal in nals)


def avcc_nals(sample: bytes) -> list[bytes] | None:
    """The NAL units of an AVCC sample; None if a length runs past the end."""
    nals, pos = [], 0
    while pos < len(sample):
        if pos + LENGTH_SIZE > len(sample):
            return None
        size = int.from_bytes(sample[pos : pos + LENGTH_SIZE], "big")
        pos += LENGTH_SIZE
        if size == 0 or pos + size > len(sample):
            return None
        nals.append(sample[pos : pos + size])
        pos += size
    return nals


def annexb_nals(stream: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    nals = []
    for part in stream.split(b"\x00\x00\x01"):
        part = part.rstrip(b"\x00")  # a 4-byte start code's leading zero, trailing zeros
        if part:
            nals.append(part)
    return nals


def stream_config(sample: bytes) -> tuple[tuple[int, int], bytes] | None:
    """(width, height) and the ``avcC`` of an AVCC keyframe sample that carries its
    own SPS and PPS (the recorder keeps them in every keyframe); None otherwise."""
    nals = avcc_nals(sample)
    if nals is None:
        return None
    sps_list = list(dict.fromkeys(n for n in nals if nal_type(n) == NAL_SPS))
    pps_list = list(dict.fromkeys(n for n in nals if nal_type(n) == NAL_PPS))
    record = avcc_record(sps_list, pps_list)
    sps = parse_sps(sps_list[0]) if sps_list else None
    if record is None or sps is None:
        return None
    return (sps.width, sps.height), record
