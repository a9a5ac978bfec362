"""One peer connection's media: the streams it publishes and those it receives,
and the RTCP it sends and answers. Packets arrive here synchronously from the
transport (see aiortc_internals.Tap), inside aioice's datagram callback.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from ._wire import leg_kind
from .aiortc_internals import Tap
from .bitrate import DEFAULT_MAX_BITRATE
from .events import LayerCallback, PublishedLayers, ReceivedLayers
from .layers import tile_layer
from .loopwatch import UNWATCHED, LoopWatch
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
    extension_value,
    ntp_middle,
    parse_fir,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
    rtp_payload_type,
    rtp_ssrc,
)

if TYPE_CHECKING:
    from .inbound import InStream
    from .outbound import OutStream

log = structlog.get_logger("jisr.media")

# Silence from a peer (no RTP, no RTCP) that means its path is down. Browsers report
# on received audio only every 2.5-7.5 s, so this must stay above that.
STALL_SECONDS = 8.0
PUBLISHER_STALL_SECONDS = 1.5
PAUSE_AFTER_S = 5.0  # a simulcast layer nobody needed for this long is paused
HEARD_EVERY_S = 0.1  # how often a packet goes through heard() (silence checks)


def _ignore(_event: object) -> None:
    """Where layer events go when nobody listens."""


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
    watch: LoopWatch = UNWATCHED  # this worker's loop: its own hold-ups are no silence
    held_when_heard: float = 0.0  # the loop's hold-ups in total when it was last heard
    # Simulcast: each layer by its RID, told by the RID header extensions (media.simulcast).
    rids: dict[bytes, InStream] = field(default_factory=dict)
    rid_ext: int = 0
    repaired_ext: int = 0
    streams: list[InStream] = field(default_factory=list)  # published, SSRC known or not
    on_layers: LayerCallback = _ignore
    _active: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> RIDs sent
    _needed_at: dict[str, float] = field(default_factory=dict)  # role -> last need of all
    _reduced: dict[int, bool] = field(default_factory=dict)  # our SSRC -> told reduced

    def heard(self, now: float) -> None:
        """Anything arrived from this peer. After a silence its path was down:
        everything it receives restarts cleanly from the next keyframe."""
        if self.stalled(now):
            log.info("peer.path_back", peer=self.peer_id, silent_s=round(self._silent(now), 1))
            for out in self.outbound.values():
                out.restart(now, path_was_down=True)
                if out.source is not None:
                    out.source.ask_keyframe(now, urgent=True)
        self.last_heard = now
        self.held_when_heard = self.watch.held(now)
        self.talking = True

    def on_rtp(self, packet: bytes) -> None:
        """An RTP packet from the peer, unprotected. Its tap's receive() (C) does
        what this does for a packet of a known stream heard from lately, and calls
        this for any other."""
        now = time.monotonic()
        # The silence check, at most ten times a second; and its first packet, which
        # may come within 0.1 s of the connection (a path that dies right after it
        # would otherwise never count as down).
        if now - self.last_heard > HEARD_EVERY_S or not self.talking:
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
        elif self.rids:
            self._learn(ssrc, packet, now)

    def _learn(self, ssrc: int, packet: bytes, now: float) -> None:
        """A packet of an SSRC not seen yet, from a simulcast publisher: its RID header
        extension says which layer it is, its repaired RID whose retransmissions."""
        rid = extension_value(packet, self.rid_ext)
        stream = self.rids.get(rid) if rid is not None else None
        if stream is not None and rtp_payload_type(packet) not in stream.rtx_apt:
            if stream.ssrc:
                self.inbound.pop(stream.ssrc, None)
            stream.ssrc = ssrc
            self.inbound[ssrc] = stream
            self.stall_after = PUBLISHER_STALL_SECONDS
            stream.on_packet(packet, now)
            return
        rid = extension_value(packet, self.repaired_ext) if self.repaired_ext else rid
        stream = self.rids.get(rid) if rid is not None else None
        if stream is not None and rtp_payload_type(packet) in stream.rtx_apt:
            if stream.rtx_ssrc:
                self.retransmissions.pop(stream.rtx_ssrc, None)
            stream.rtx_ssrc = ssrc
            self.retransmissions[ssrc] = stream
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
                    out.on_round_trip(block.lsr, block.dlsr, now)
        if kind == RTCP_PSFB:
            self._on_payload_feedback(item, packet, now)
        elif kind == RTCP_RTPFB and item.fmt == RTPFB_NACK:
            self.nacks_received += 1
            out = self.outbound.get(item.media_ssrc)
            if out is not None:
                out.retransmit(parse_nack(packet), now)

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
                        # The first estimate counts as risen: WebRTC's starts from the
                        # little that has arrived so far and grows from there.
                        if out.remb is None or bitrate > out.remb:
                            out.remb_rose_at = now
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
        return (
            self.talking
            and now - self.last_heard > self.stall_after
            and self._silent(now) > self.stall_after
        )

    def _silent(self, now: float) -> float:
        """Seconds since it was last heard that the loop was running to hear it."""
        return now - self.last_heard - (self.watch.held(now) - self.held_when_heard)

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
                if stream.kind == "video" and stream is _first_flowing(stream.layers):
                    ceiling = stream.bitrate_ceiling(self.max_bitrate, now)
                    ssrcs = [layer.ssrc for layer in stream.layers if layer.received]
                    parts.append(build_remb(stream.feedback_ssrc, ceiling, ssrcs))
        if parts:
            self.tap.send(b"".join(parts), rtcp=True)

    def adapt(self, now: float) -> None:
        """About once a second: measure what flows, choose each subscriber's layers
        (telling the page when its picture is reduced), and tell the publisher which
        of its simulcast layers anyone needs. (The node measures every published
        stream first.)"""
        outs = list(self.outbound.values())
        leg_sent = sum(out.measure_sent(now) for out in outs)
        for out in outs:
            out.adapt(now, leg_sent)
            reduced = out.reduced(now)
            if self._reduced.get(out.ssrc, False) != reduced:
                self._reduced[out.ssrc] = reduced
                self.on_layers(ReceivedLayers(self.peer_id, out.slot, out.role, reduced))
        for stream in self.streams:
            if len(stream.layers) > 1 and stream.index == 0:
                self._keep_needed_layers(stream.layers, now)

    def _keep_needed_layers(self, layers: list[InStream], now: float) -> None:
        """Pause the layers above the largest any subscriber's tile needs (after
        PAUSE_AFTER_S of not needing them), resume them at once when needed again."""
        heights = [layer.height for layer in layers]
        subscribers = [out for layer in layers for out in (*layer.outs, *layer.joining)]
        needed = max((tile_layer(heights, out.max_height) for out in subscribers), default=0)
        role = layers[0].role
        if needed == len(layers) - 1 or role not in self._needed_at:
            self._needed_at[role] = now
        if needed < len(layers) - 1 and now - self._needed_at[role] < PAUSE_AFTER_S:
            needed = len(layers) - 1
        active = tuple(layer.rid for layer in layers[: needed + 1])
        if self._active.get(role, tuple(layer.rid for layer in layers)) != active:
            self._active[role] = active
            self.on_layers(PublishedLayers(self.peer_id, role, active))


def _first_flowing(layers: list[InStream]) -> InStream | None:
    """The layer whose report carries the REMB for all of them."""
    return next((layer for layer in layers if layer.received), None)


# Tap.receive (media/_wire.c) does what Leg.on_rtp does for most packets.
leg_kind(Leg, PUBLISHER_STALL_SECONDS, HEARD_EVERY_S)
