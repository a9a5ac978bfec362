"""One peer connection's media: the streams it publishes and those it receives,
and the RTCP it sends and answers. Packets arrive here synchronously from the
transport (see aiortc_internals.Tap), inside aioice's datagram callback.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .aiortc_internals import Tap
from .bitrate import DEFAULT_MAX_BITRATE
from .rtp import (
    PSFB_AFB,
    PSFB_FIR,
    PSFB_PLI,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SR,
    RTPFB_NACK,
    RtcpItem,
    build_remb,
    build_rr,
    ntp_middle,
    parse_fir,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
    rtp_ssrc,
)

if TYPE_CHECKING:
    from .inbound import InStream
    from .outbound import OutStream

# Silence from a peer (no RTP, no RTCP) that means its path is down. Browsers report
# on received audio only every 2.5-7.5 s, so this must stay above that.
STALL_SECONDS = 8.0
PUBLISHER_STALL_SECONDS = 1.5


@dataclass(eq=False)
class Leg:
    """One peer connection's media: the streams it publishes and those it receives."""

    peer_id: str
    publish: str | None
    tap: Tap = field(init=False)
    inbound: dict[int, InStream] = field(default_factory=dict)  # publisher SSRC -> stream
    retransmissions: dict[int, InStream] = field(default_factory=dict)  # publisher RTX SSRC
    outbound: dict[int, OutStream] = field(default_factory=dict)  # our SSRC -> stream
    max_bitrate: int = DEFAULT_MAX_BITRATE
    nacks_received: int = 0
    keyframe_requests_received: int = 0
    last_heard: float = field(default_factory=time.monotonic)
    talking: bool = False  # has sent us anything yet
    stall_after: float = STALL_SECONDS

    def heard(self, now: float) -> None:
        """Anything arrived from this peer. After a silence its path was down:
        everything it receives restarts cleanly from the next keyframe."""
        if self.stalled(now):
            for out in self.outbound.values():
                out.restart(now)
                if out.source is not None:
                    out.source.ask_keyframe(now, urgent=True)
        self.last_heard = now
        self.talking = True

    def on_rtp(self, packet: bytes) -> None:
        now = time.monotonic()
        if now - self.last_heard > 0.1:  # the silence check, at most ten times a second
            self.heard(now)
        try:
            ssrc = rtp_ssrc(packet)
        except struct.error:
            return  # shorter than an RTP header
        stream = self.inbound.get(ssrc)
        if stream is not None:
            # A publisher sends continuously, so a short silence already means a dead
            # path; a receive-only peer only reports now and then.
            self.stall_after = PUBLISHER_STALL_SECONDS
            stream.on_packet(packet, now)
        elif (stream := self.retransmissions.get(ssrc)) is not None:
            stream.on_retransmission(packet, now)

    def on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        self.heard(now)
        try:
            items = parse_rtcp(data)
        except ValueError:
            return
        for item in items:
            packet = data[item.offset : item.offset + item.length]
            try:
                self._on_rtcp_item(item, packet, now)
            except ValueError:
                continue  # one malformed item spoils nothing else

    def _on_rtcp_item(self, item: RtcpItem, packet: bytes, now: float) -> None:
        kind = item.packet_type
        if kind == RTCP_SR:
            self._on_sender_report(item, packet, now)
        if kind in (RTCP_SR, RTCP_RR):  # a peer that also sends reports in its SRs
            for block in parse_report_blocks(packet):
                out = self.outbound.get(block.ssrc)
                if out is not None:
                    out.on_receiver_report(block.loss, now)
        if kind == RTCP_PSFB:
            self._on_payload_feedback(item, packet, now)
        elif kind == RTCP_RTPFB and item.fmt == RTPFB_NACK:
            self.nacks_received += 1
            out = self.outbound.get(item.media_ssrc)
            if out is not None:
                out.retransmit(parse_nack(packet))

    def _on_sender_report(self, item: RtcpItem, packet: bytes, now: float) -> None:
        stream = self.inbound.get(item.sender_ssrc)
        if stream is not None:
            info = parse_sr(packet)
            stream.lsr = ntp_middle(info.ntp_timestamp)
            stream.lsr_at = now
            stream.last_sr = (info.ntp_timestamp, info.rtp_timestamp, now)

    def _on_payload_feedback(self, item: RtcpItem, packet: bytes, now: float) -> None:
        if item.fmt == PSFB_PLI:
            self._keyframe_wanted(item.media_ssrc, now)
        elif item.fmt == PSFB_FIR:
            for ssrc, _ in parse_fir(packet):
                self._keyframe_wanted(ssrc, now)
        elif item.fmt == PSFB_AFB:
            remb = parse_remb(packet)
            if remb is not None:
                bitrate, ssrcs = remb
                for ssrc in ssrcs:
                    out = self.outbound.get(ssrc)
                    if out is not None:
                        out.remb = bitrate

    def _keyframe_wanted(self, ssrc: int, now: float) -> None:
        self.keyframe_requests_received += 1
        out = self.outbound.get(ssrc)
        if out is not None and out.source is not None:
            out.source.ask_keyframe(now)

    def stalled(self, now: float) -> bool:
        """Nothing heard from this peer for a while, after it had been talking:
        sending to it would only punch holes into its sequence numbers. (A peer
        that receives nothing yet sends no reports, so silence before the first
        report means nothing.)"""
        return self.talking and now - self.last_heard > self.stall_after

    def on_connected(self, now: float) -> None:
        """Media can flow: whoever waits for a keyframe on this leg gets one now."""
        self.last_heard = now
        for out in self.outbound.values():
            if out.waiting_keyframe and out.source is not None:
                out.source.ask_keyframe(now, urgent=True)

    def send_reports(self, now: float, wall: float) -> None:
        """One compound RTCP packet: sender reports for what we send on this leg,
        receiver reports and a REMB ceiling for what it publishes."""
        parts = [sr for out in self.outbound.values() if (sr := out.sender_report(now, wall))]
        for stream in self.inbound.values():
            if stream.received:
                parts.append(build_rr(stream.feedback_ssrc, *stream.report_block(now)))
                if stream.kind == "video":
                    ceiling = stream.bitrate_ceiling(self.max_bitrate, now)
                    parts.append(build_remb(stream.feedback_ssrc, ceiling, [stream.ssrc]))
        if parts:
            self.tap.send(b"".join(parts), rtcp=True)
