"""RTP/RTCP building blocks for header-rewriting forwarding: bytes in, bytes out.

Every read or write of an RTP/RTCP header field, payload descriptor bit or header
extension in the media and recording code goes through here. Nothing here decodes
media or does I/O.

- `header`: the fixed header's fields, the payload's bounds, RTX packets;
- `extensions`: header extension ids renumbered for a subscriber;
- `rewriter`: one subscriber's output stream across publisher streams;
- `history`: what was sent, for NACKs;
- `rtcp`: reports and feedback;
- `vp8`, `h264`: the payload bits that tell where frames and keyframes start;
- `vp8_layers`: one subscriber's VP8 temporal layers and PictureID/TL0PICIDX.

References: RFC 3550 (RTP/RTCP), RFC 8285 (header extensions), RFC 4585 (feedback),
RFC 5104 (FIR), RFC 4588 (RTX), RFC 5761 (RTP/RTCP mux), RFC 7741 (VP8),
RFC 6184 (H.264), draft-alvestrand-rmcat-remb, RFC 8852 (RID header extensions).
"""

from .extensions import extension_value
from .h264 import is_h264_keyframe
from .header import (
    HALF_SEQ,
    HALF_TS,
    RTCP_PACKET_TYPES,
    RTP_FIRST_BYTES,
    RTP_HEADER_SIZE,
    SEQ_MASK,
    SEQ_MOD,
    TS_MASK,
    TS_MOD,
    Buffer,
    PacketFields,
    RtpHeaderView,
    RtxPayload,
    build_padding,
    build_rtx,
    is_rtcp,
    packet_fields,
    parse_header,
    payload_offset,
    restore_rtx,
    rtp_marker,
    rtp_payload_type,
    rtp_seq,
    rtp_seq_ts,
    rtp_ssrc,
    rtp_timestamp,
    rtx_payload,
    ts_delta,
    ts_distance,
    ts_newer,
)
from .history import SentHistory
from .rewriter import StreamRewriter
from .rtcp import (
    PSFB_AFB,
    PSFB_FIR,
    PSFB_PLI,
    RTCP_APP,
    RTCP_BYE,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SDES,
    RTCP_SR,
    RTPFB_NACK,
    ReportBlock,
    RtcpItem,
    SenderInfo,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    delay_since,
    fraction_lost,
    ntp_middle,
    ntp_time,
    ntp_to_unix,
    parse_fir,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
)
from .vp8 import (
    Vp8Layer,
    is_vp8_keyframe,
    vp8_base_frames_between,
    vp8_descriptor_size,
    vp8_key_data,
    vp8_keyframe_size,
    vp8_layer,
    vp8_starts_frame,
)
from .vp8_layers import MAX_TEMPORAL, Vp8Munger

__all__ = [
    "Buffer", "build_padding", "HALF_SEQ", "MAX_TEMPORAL", "Vp8Munger", "extension_value",
    "HALF_TS", "PSFB_AFB", "PSFB_FIR", "PSFB_PLI", "PacketFields",
    "RTCP_APP", "RTCP_BYE", "RTCP_PACKET_TYPES", "RTCP_PSFB", "RTCP_RR", "RTCP_RTPFB",
    "RTCP_SDES", "RTCP_SR", "RTPFB_NACK", "RTP_FIRST_BYTES", "RTP_HEADER_SIZE", "ReportBlock",
    "RtcpItem", "RtpHeaderView", "RtxPayload", "SEQ_MASK", "SEQ_MOD", "SenderInfo",
    "SentHistory", "StreamRewriter", "TS_MASK", "TS_MOD", "Vp8Layer", "build_nack", "build_pli",
    "build_remb", "build_rr", "build_rtx", "build_sr", "delay_since", "fraction_lost",
    "is_h264_keyframe", "is_rtcp", "is_vp8_keyframe", "ntp_middle", "ntp_time", "ntp_to_unix",
    "packet_fields", "parse_fir", "parse_header", "parse_nack", "parse_remb",
    "parse_report_blocks", "parse_rtcp", "parse_sr", "payload_offset", "restore_rtx",
    "rtp_marker", "rtp_payload_type", "rtp_seq", "rtp_seq_ts", "rtp_ssrc", "rtp_timestamp",
    "rtx_payload", "ts_delta", "ts_distance", "ts_newer", "vp8_base_frames_between",
    "vp8_descriptor_size", "vp8_key_data", "vp8_keyframe_size", "vp8_layer", "vp8_starts_frame",
]  # fmt: skip
