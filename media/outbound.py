"""What one subscriber receives on one m-line: the current publisher stream's
packets, rewritten onto one continuous output stream, started on a keyframe,
kept for NACKs, reported on in sender reports."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from .aiortc_internals import Negotiated
from .bitrate import loss_estimate
from .codecs import codecs_of
from .keyframes import is_keyframe
from .rtp import (
    RTP_HEADER_SIZE,
    SEQ_MASK,
    SentHistory,
    StreamRewriter,
    build_rtx,
    build_sr,
    ntp_time,
    payload_offset,
    rtp_payload_type,
    rtp_seq_ts,
)

if TYPE_CHECKING:
    from .inbound import InStream
    from .leg import Leg

log = structlog.get_logger("jisr.media")


class OutStream:
    """What one subscriber receives on one m-line: the current source's packets,
    rewritten onto one continuous output stream."""

    def __init__(
        self, leg: Leg, slot: str, negotiated: Negotiated, role: str | None = None
    ) -> None:
        self.leg = leg
        self.slot = slot  # whose media this m-line carries
        self.kind = negotiated.kind
        self.role = role or negotiated.kind  # which of their streams: audio, video, screen
        self.ssrc = negotiated.send_ssrc
        self.rtx_ssrc = negotiated.send_rtx_ssrc
        self.codecs = codecs_of(negotiated)
        self.ext_ids = negotiated.header_extensions
        self.source: InStream | None = None
        self.rewriter: StreamRewriter | None = None
        self.rtx_pts: dict[int, int] = {}  # our payload type -> its RTX payload type
        self.waiting_keyframe = False
        self.history = SentHistory(512)
        self.rtx_seq = random.getrandbits(16)
        self.packets = 0
        self.octets = 0
        self.last_ts = 0
        self.last_sent_at = 0.0
        self.remb: int | None = None
        self.loss_estimate: int | None = None  # bit/s, while loss toward it limits it
        self._reported_at: float | None = None
        self._reported_octets = 0
        self.mirror = False

    def bind(self, source: InStream | None, now: float) -> None:
        """Follow ``source`` (None: the publisher left; send nothing until it returns)."""
        if self.source is not None and self in self.source.outs:
            self.source.outs.remove(self)
        self.source = source
        if source is None:
            return
        if self.mirror:  # an internal sink takes whatever the publisher sends
            self.codecs = list(source.codecs.values())
        pt_map: dict[int, int] = {}
        self.rtx_pts = {}
        for pt, codec in source.codecs.items():
            mine = next((c for c in self.codecs if c.matches(codec)), None)
            if mine is not None:
                pt_map[pt] = mine.payload_type
                if mine.rtx_payload_type is not None:
                    self.rtx_pts[mine.payload_type] = mine.rtx_payload_type
        if not pt_map:
            log.warning("forwarding.no_common_codec", publisher=source.slot, role=source.role)
        # Extensions both legs negotiated keep their meaning under the subscriber's ids;
        # the rest (notably the publisher's MID) are blanked so the subscriber demuxes
        # by SSRC, as its answer told it to.
        ext_map = {
            source.ext_ids[uri]: self.ext_ids[uri]
            for uri in source.ext_ids
            if uri in self.ext_ids and not uri.endswith("sdes:mid")
        }
        if self.mirror:
            ext_map = None  # an internal sink reads no extension: leave them as they are
        if self.rewriter is None:
            self.rewriter = StreamRewriter(
                self.ssrc, pt_map, ext_map=ext_map, clock_rate=source.clock_rate
            )
        else:
            self.rewriter.pt_map = pt_map
            self.rewriter.ext_map = ext_map
            elapsed = int((now - self.last_sent_at) * source.clock_rate) if self.packets else None
            self.rewriter.switch_source(elapsed)
        self.waiting_keyframe = self.kind == "video"
        source.outs.append(self)
        source.ask_keyframe(now)

    def restart(self, now: float) -> None:
        """Continue on the current source from its next keyframe, seamlessly."""
        if self.rewriter is not None and self.source is not None:
            elapsed = (
                int((now - self.last_sent_at) * self.source.clock_rate) if self.packets else None
            )
            self.rewriter.switch_source(elapsed)
            self.waiting_keyframe = self.kind == "video"

    def forward(self, packet: bytes, now: float) -> None:
        if self.leg.stalled(now):
            return
        rewriter = self.rewriter
        if self.waiting_keyframe:
            if not self.leg.tap.ready:
                return  # a keyframe sent now would be lost; wait until the leg is up
            if not self._starts_keyframe(packet):
                self.source.ask_keyframe(now)
                return
            self.waiting_keyframe = False
        out = rewriter.rewrite(packet)
        if out is None:
            return
        seq, ts = rtp_seq_ts(out)
        self.history.add(seq, out)
        if self.leg.tap.send(out):
            self.packets += 1
            self.octets += len(out) - RTP_HEADER_SIZE
            self.last_ts = ts
            self.last_sent_at = now

    def _starts_keyframe(self, packet: bytes) -> bool:
        """Whether a subscriber waiting for a keyframe may start on ``packet``."""
        codec = self.source.codecs.get(rtp_payload_type(packet))
        if codec is None:
            return False
        try:
            payload = packet[payload_offset(packet) :]
        except ValueError:
            return False  # a header cut short
        return is_keyframe(codec.name, payload)

    def on_receiver_report(self, loss: float, now: float) -> None:
        """The subscriber's report on this stream (``loss``: the fraction it lost since
        its previous report, 0 to 1). Its REMB sees only queueing delay,
        and a drop-tail queue that is already full adds none while it drops what
        overflows, so loss has to cap the rate as well."""
        if self._reported_at is None or now - self._reported_at < 0.2:
            if self._reported_at is None:
                self._reported_at, self._reported_octets = now, self.octets
            return
        sent = (self.octets - self._reported_octets) * 8 / (now - self._reported_at)
        self._reported_at, self._reported_octets = now, self.octets
        self.loss_estimate = loss_estimate(self.loss_estimate, sent, loss)

    def retransmit(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            packet = self.history.get(seq)
            if packet is None:
                continue
            rtx_pt = self.rtx_pts.get(rtp_payload_type(packet))
            if rtx_pt is not None:
                rtx_seq = (self.rtx_seq + 1) & SEQ_MASK
                try:
                    packet = build_rtx(packet, self.rtx_ssrc, rtx_pt, rtx_seq)
                except ValueError:
                    continue  # forwarded with a bad padding count, it cannot be wrapped
                self.rtx_seq = rtx_seq
            self.leg.tap.send(packet)

    def sender_report(self, now: float, wall: float) -> bytes | None:
        if not self.packets or self.source is None:
            return None
        # The RTP time of "now" on this stream's clock, extrapolated from the last packet.
        rtp_now = self.last_ts + int((now - self.last_sent_at) * self.source.clock_rate)
        return build_sr(self.ssrc, ntp_time(wall), rtp_now, self.packets, self.octets)
