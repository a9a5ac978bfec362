"""What one subscriber receives on one m-line: the current publisher stream's
packets, rewritten onto one continuous output stream, started on a keyframe,
kept for NACKs, reported on in sender reports."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from ._wire import OutCore
from .aiortc_internals import Negotiated
from .bitrate import LOSS_HIGH, loss_estimate
from .codecs import codecs_of
from .inbound import FLOWING_S
from .keyframes import is_keyframe
from .layers import LayerChoice, ladder, link_view, tile_layer
from .rtp import (
    RTP_HEADER_SIZE,
    SEQ_MASK,
    SentHistory,
    StreamRewriter,
    Vp8Munger,
    build_padding,
    build_rtx,
    build_sr,
    extension_value,
    ntp_middle,
    ntp_time,
    payload_offset,
    rtp_payload_type,
    rtp_seq_ts,
)

if TYPE_CHECKING:
    from .inbound import InStream
    from .leg import Leg

log = structlog.get_logger("jisr.media")

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
PADDING_SIZE = 255  # bytes of one probe packet's padding
MAX_PADDING_PER_PACKET = 4
MAX_PROBE_RATIO = 3.0  # padding bytes per media byte
# Sequence numbers a video stream skips when it resumes after its subscriber's path was
# down: past the 512-packet window of aiortc's video jitter buffer, within the 1,000
# missing packets WebRTC's NACK list holds before it just asks for a keyframe.
RESUME_SEQ_GAP = 600
# Receiver reports this soon after such a resume count what was lost while the path
# was down: they would cut its (and its publisher's) rate for nothing.
RESUME_AFTERMATH_S = 3.0
REMB_RISING_S = 1.5  # a REMB that went up this recently is growing
DEFAULT_RTT_S = 0.1  # until a receiver report tells the round trip (as WebRTC assumes)
MIN_RESEND_S = 0.01  # a packet is resent at most this often, however short the round trip
# Retransmissions may take this share of the subscriber's estimate, a second's worth
# of it at once (a burst lost together): enough for the loss of a sound link many
# times over, while on a link that overflows they would only add to what is lost.
RTX_SHARE = 0.25
RTX_BURST_S = 1.0
SINK_FLOWING_S = 4.0  # an internal subscriber leaves a layer only after this long without it


class OutStream(OutCore):
    """What one subscriber receives on one m-line: the current source's packets,
    rewritten onto one continuous output stream.

    ``forward(packet, now)``, once per packet and subscriber, is OutCore's
    (media/_wire.c) while nothing special goes on, on the attributes it holds (leg,
    rewriter, munger, history, waiting_keyframe, probe_ratio, packets, octets, last_ts,
    last_sent_at); ``_forward_other`` is the whole of the logic, for any packet."""

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
        self.rtx_octets = 0  # resent for NACKs
        self._rtx_allowance = 0.0  # bytes retransmissions may still take (RTX_SHARE)
        self._rtx_allowed_at = float("-inf")
        self.rtt: float | None = None  # seconds, from the latest receiver report
        self._sr_sent_at: dict[int, float] = {}  # the LSR of our recent SRs -> when sent
        self.last_ts = 0
        self.last_sent_at = 0.0
        self.remb: int | None = None
        self.remb_rose_at = float("-inf")  # when its REMB last went up
        self.loss_estimate: int | None = None  # bit/s, while loss toward it limits it
        self._reported_at: float | None = None
        self._reported_octets = 0
        self.mirror = False
        # Layers (media.layers): chosen for a simulcast source or a screen share.
        self.choice: LayerChoice | None = None
        self.munger: Vp8Munger | None = None  # VP8: temporal layers, PictureID, TL0PICIDX
        self.pending: InStream | None = None  # the layer waited for (its keyframe)
        self.max_height = 0  # of the subscriber's tile, in pixels (0: not said)
        self.loss = 0.0  # in its latest receiver report
        self.loss_peak: float | None = None  # the most any report said since the last choice
        self.resumed_at = float("-inf")  # when its path last came back (restart)
        self.sent_bps = 0.0
        self.padding_bps = 0.0
        self._sent = (0.0, 0, 0)
        # A probe (media.layers): padding on the RTX stream after each media packet,
        # ``probe_ratio`` bytes of it per media byte, with that packet's abs-send-time.
        self.probe_ratio = 0.0
        self._probe_credit = 0.0
        self.padding_octets = 0
        self._ast_id = self.ext_ids.get(ABS_SEND_TIME, 0)

    def bind(self, source: InStream | None, now: float) -> None:
        """Follow ``source`` (None: the publisher left; send nothing until it returns)."""
        if self.source is not None and self in self.source.outs:
            self.source.outs.remove(self)
        self._cancel_pending()
        self.source = source
        if source is None:
            return
        source = self.source = self._start_layer(source, now)
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
        if self.munger is not None:
            self.munger.switch_source()
        self.waiting_keyframe = self.kind == "video"
        source.outs.append(self)
        source.ask_keyframe(now)

    def _start_layer(self, source: InStream, now: float) -> InStream:
        """The layer a subscriber starts on: the largest its tile needs (its link then
        takes it down if it must). A single stream's subscribers choose only for a
        screen share (temporal layers, for weak links)."""
        layers = source.layers
        if len(layers) == 1 and self.role != "screen":
            self.choice = None
            return source
        steps = ladder(len(layers))
        top = self._top_step(steps, layers, now)
        self.choice = LayerChoice(steps, top)
        vp8 = [pt for pt, c in source.codecs.items() if c.name.upper() == "VP8"]
        if vp8 and self.munger is None:
            self.munger = Vp8Munger(vp8)
        return layers[steps[top][0]]

    def _top_step(self, steps: list, layers: list[InStream], now: float) -> int:
        """The highest step the subscriber's tile needs among the layers that flow now
        (all of them before any does): the largest flowing layer no larger than the
        tile needs, else the smallest flowing one."""
        within = SINK_FLOWING_S if self.mirror else FLOWING_S  # a recording keeps its size
        # Stopped means behind the newest layer, so that a pause of the whole publisher
        # (or of this process) stops none of them.
        newest = max(layer.last_arrival for layer in layers)
        flowing = [i for i, layer in enumerate(layers) if layer.flowing(newest, within)]
        flowing = flowing or list(range(len(layers)))
        wanted = tile_layer([layer.height for layer in layers], self.max_height)
        top_layer = max((i for i in flowing if i <= wanted), default=flowing[0])
        return max(i for i, (spatial, _) in enumerate(steps) if spatial <= top_layer)

    def _cancel_pending(self) -> None:
        if self.pending is not None:
            if self in self.pending.joining:
                self.pending.joining.remove(self)
            self.pending = None

    def restart(self, now: float, path_was_down: bool = False) -> None:
        """Continue on the current source from its next keyframe: seamlessly after a
        hole upstream (the subscriber got all that was sent). ``path_was_down``: the
        subscriber's own path was, so video skips ``RESUME_SEQ_GAP`` sequence numbers:
        what was sent into the dead path is abandoned, and a receiver that would wait
        for it (a jitter buffer holding its oldest hole until a window's worth of
        packets has passed, as aiortc's does) sees a jump past its window instead;
        the keyframe needs nothing before it."""
        if self.rewriter is not None and self.source is not None:
            elapsed = (
                int((now - self.last_sent_at) * self.source.clock_rate) if self.packets else None
            )
            gap = RESUME_SEQ_GAP if path_was_down and self.kind == "video" else 0
            if path_was_down:
                self.resumed_at = now
            self.rewriter.switch_source(elapsed, seq_gap=gap)
            if self.munger is not None:
                self.munger.switch_source()
            self.waiting_keyframe = self.kind == "video"

    def _forward_other(self, packet: bytes, now: float) -> None:
        if self.leg.stalled(now):
            return
        rewriter = self.rewriter
        if self.waiting_keyframe:
            if not self.leg.tap.ready:
                return  # a keyframe sent now would be lost; wait until the leg is up
            if not self._starts_keyframe(self.source, packet):
                self.source.ask_keyframe(now)
                return
            self.waiting_keyframe = False
            if self.munger is not None:
                self.munger.keyframe()
        munger = self.munger
        if munger is not None and not munger.admit(packet):
            rewriter.skip(packet)  # a temporal layer this subscriber does not get
            return
        out = rewriter.rewrite(packet)
        if out is None:
            return
        if munger is not None:
            out = munger.rewrite(out)
        seq, ts = rtp_seq_ts(out)
        self.history.add(seq, out)
        if self.leg.tap.send(out):
            self.packets += 1
            self.octets += len(out) - RTP_HEADER_SIZE
            self.last_ts = ts
            self.last_sent_at = now
            if self.probe_ratio:
                self._pad(out)

    def _pad(self, media: bytes) -> None:
        """Probe padding after a media packet: padding-only RTX packets, as many as the
        probe's ratio has earned, each with the media packet's abs-send-time (the
        subscriber's estimator counts only packets that carry one)."""
        self._probe_credit += len(media) * self.probe_ratio
        rtx_pt = self.rtx_pts.get(rtp_payload_type(media))
        if rtx_pt is None or self._probe_credit < PADDING_SIZE:
            return
        ast = extension_value(media, self._ast_id) if self._ast_id else None
        for _ in range(MAX_PADDING_PER_PACKET):
            if self._probe_credit < PADDING_SIZE:
                break
            self._probe_credit -= PADDING_SIZE
            self.rtx_seq = (self.rtx_seq + 1) & SEQ_MASK
            padding = build_padding(
                self.rtx_ssrc, rtx_pt, self.rtx_seq, self.last_ts, self._ast_id, ast, PADDING_SIZE
            )
            if self.leg.tap.send(padding):
                self.padding_octets += len(padding)
        self._probe_credit = min(self._probe_credit, PADDING_SIZE)

    def join_on(self, layer: InStream, packet: bytes, now: float) -> None:
        """A packet of the layer this subscriber waits to move to: on its keyframe the
        subscriber leaves its current layer, and its stream goes on from there with
        no jump in seq, timestamp, PictureID or TL0PICIDX."""
        if self.leg.stalled(now) or not self._starts_keyframe(layer, packet):
            return
        self._cancel_pending()
        old = self.source
        if old is not None and self in old.outs:
            old.outs.remove(self)
        self.source = layer
        layer.outs.append(self)
        if self.rewriter is not None:
            elapsed = int((now - self.last_sent_at) * layer.clock_rate) if self.packets else None
            self.rewriter.switch_source(elapsed)
        if self.munger is not None:
            self.munger.switch_source()
        self.waiting_keyframe = False
        if self.munger is not None and self.choice is not None:  # a keyframe: the chosen
            self.munger.target = self.choice.current[1]  # temporal layers at once
            self.munger.keyframe()
        self.forward(packet, now)

    def want_layer(self, index: int, now: float) -> None:
        """Move to spatial layer ``index`` at its next keyframe (asked for at once)."""
        source = self.source
        if source is None:
            return
        target = source.layers[min(index, len(source.layers) - 1)]
        if self.pending is target:
            return
        self._cancel_pending()
        if target is source:
            return
        self.pending = target
        target.joining.append(self)
        target.ask_keyframe(now, urgent=True)

    def adapt(self, now: float, leg_sent: float) -> None:
        """Choose this subscriber's layers (about once a second): ``leg_sent`` is what its
        whole leg was sent (bits/s), which its REMB is about."""
        choice, source = self.choice, self.source
        if choice is None or source is None:
            return
        if self.waiting_keyframe:  # on a layer that stopped (or never started)? another
            if not source.flowing(now) and any(x.flowing(now) for x in source.layers):
                self.bind(source.layers[0], now)
            return
        if self.pending is not None:
            self.pending.ask_keyframe(now)  # in case the one asked for was lost
        layers = source.layers
        hard = [self.leg.max_bitrate] if not self.mirror else []
        soft = [self.loss_estimate] if self.loss_estimate is not None else []
        rising = now - self.remb_rose_at < REMB_RISING_S
        loss = self.reported_loss()
        link = link_view(self.remb, leg_sent, self.sent_bps, hard, loss, rising, soft, self.rtt)
        rates = [layer.bitrate for layer in layers]
        before = choice.current
        top = self._top_step(choice.steps, layers, now)
        spatial, temporal = choice.decide(now, link, rates, top)
        media = self.sent_bps - self.padding_bps
        extra = choice.probe_rate(rates)
        self.probe_ratio = min(MAX_PROBE_RATIO, extra / media) if extra > 0 and media > 0 else 0.0
        if self.munger is not None:
            # Until the smaller layer's keyframe, the larger one sends its base frames only:
            # a step down has to cut the rate now, not once the switch is made.
            self.munger.target = 0 if spatial < source.index else temporal
        self.want_layer(spatial, now)
        if (spatial, temporal) != before:
            log.info(
                "layers.switched", peer=self.leg.peer_id, slot=self.slot, role=self.role,
                spatial=spatial, temporal=temporal, budget=int(link.budget or 0),
                remb=self.remb or 0, leg_sent=int(leg_sent), loss=round(loss, 3),
                congested=link.congested, probed=int(extra),
            )  # fmt: skip

    def reported_loss(self) -> float:
        """The loss to choose layers by, once per choice: the most any report said since
        the last choice (the loss a probe's padding causes may show in one report only).
        A report counts once: with none since, nothing new was lost, and the last one
        still says whether the link is clean (loss at LOSS_HIGH is neither lossy nor
        clean)."""
        fresh, self.loss_peak = self.loss_peak, None
        return fresh if fresh is not None else min(self.loss, LOSS_HIGH)

    def measure_sent(self, now: float) -> float:
        """Update and return ``sent_bps``, what this stream was sent since the last call
        (probe padding and retransmissions included; ``padding_bps`` of it is padding)."""
        at, octets, padding = self._sent
        if at and now > at:
            self.sent_bps = (self._all_octets() - octets) * 8 / (now - at)
            self.padding_bps = (self.padding_octets - padding) * 8 / (now - at)
        self._sent = (now, self._all_octets(), self.padding_octets)
        return self.sent_bps

    def _all_octets(self) -> int:
        return self.octets + self.padding_octets + self.rtx_octets

    def reduced(self, now: float) -> bool:
        """Whether the subscriber gets less than the largest layer its tile needs (or
        fewer frames than are sent), for the page to say so."""
        choice = self.choice
        if choice is None or self.source is None:
            return False
        return choice.step < self._top_step(choice.steps, self.source.layers, now)

    def _starts_keyframe(self, source: InStream, packet: bytes) -> bool:
        """Whether a subscriber waiting for a keyframe may start on ``packet``."""
        codec = source.codecs.get(rtp_payload_type(packet))
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
        if now - self.resumed_at < RESUME_AFTERMATH_S:
            # the loss of the outage and the skipped sequence numbers, not the link's
            self._reported_at, self._reported_octets = now, self.octets
            return
        self.loss = loss
        self.loss_peak = loss if self.loss_peak is None else max(self.loss_peak, loss)
        if self._reported_at is None or now - self._reported_at < 0.2:
            if self._reported_at is None:
                self._reported_at, self._reported_octets = now, self.octets
            return
        sent = (self.octets - self._reported_octets) * 8 / (now - self._reported_at)
        self._reported_at, self._reported_octets = now, self.octets
        if self.choice is not None and self.choice.probe_aftermath(now):
            return  # the probe's padding lost it, and the probe stops: no limit for media
        if self.choice is not None and self.choice.down_aftermath(now):
            return  # the larger step just left lost it; what is sent now is less
        self.loss_estimate = loss_estimate(self.loss_estimate, sent, loss)

    def on_round_trip(self, lsr: int, dlsr: int, now: float) -> None:
        """A receiver report's echo of one of our sender reports (RFC 3550 6.4.1): the
        round trip is the time since we sent it less the time the subscriber held it."""
        sent_at = self._sr_sent_at.get(lsr) if lsr else None
        if sent_at is not None:
            self.rtt = max(0.0, now - sent_at - dlsr / 65536)

    def retransmit(self, seqs: Iterable[int], now: float) -> None:
        """Resend what a NACK asks for, each packet at most once a round trip: a
        subscriber asks again before the first copy could have reached it when the
        path queues, and copies of copies would only fill that queue further."""
        interval = max(MIN_RESEND_S, DEFAULT_RTT_S if self.rtt is None else self.rtt)
        limited = self._refill_rtx_allowance(now)
        for seq in seqs:
            if limited and self._rtx_allowance <= 0:
                break  # the rest waits for the next NACK
            packet = self.history.take_for_resend(seq, now, interval)
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
            if self.leg.tap.send(packet):
                self.rtx_octets += len(packet)
                self._rtx_allowance -= len(packet)

    def _refill_rtx_allowance(self, now: float) -> bool:
        """Refill what retransmissions may take; False: no estimate yet, no limit."""
        if self.remb is None:
            return False
        rate = self.remb * RTX_SHARE / 8  # bytes/s
        elapsed = min(now - self._rtx_allowed_at, RTX_BURST_S)
        self._rtx_allowance = min(self._rtx_allowance + rate * elapsed, rate * RTX_BURST_S)
        self._rtx_allowed_at = now
        return True

    def sender_report(self, now: float, wall: float) -> bytes | None:
        if not self.packets or self.source is None:
            return None
        # The RTP time of "now" on this stream's clock, extrapolated from the last packet.
        rtp_now = self.last_ts + int((now - self.last_sent_at) * self.source.clock_rate)
        ntp = ntp_time(wall)
        if len(self._sr_sent_at) >= 8:  # reports are echoed within seconds, or never
            del self._sr_sent_at[next(iter(self._sr_sent_at))]
        self._sr_sent_at[ntp_middle(ntp)] = now
        return build_sr(self.ssrc, ntp, rtp_now, self.packets, self.octets)
