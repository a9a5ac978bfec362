"""RTP-level forwarding: every published packet is rewritten for each subscriber
(SSRC, payload type, sequence number, timestamp, header extension ids) and sent on
that subscriber's transport. Nothing here decodes, re-encodes or re-packetises.

Per packet, the hot path reads the fixed header, updates receive statistics,
and for each subscriber rewrites and sends, all synchronously inside aioice's
datagram callback (see aiortc_internals.Tap). RTCP is answered here too:
receiver reports and a REMB ceiling toward publishers, sender reports toward
subscribers, PLI/FIR forwarded (rate-limited), NACKs answered from history.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .aiortc_internals import Negotiated, Tap
from .keyframes import is_keyframe
from .rtp import (
    PSFB_AFB,
    PSFB_FIR,
    PSFB_PLI,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SR,
    RTPFB_NACK,
    SentHistory,
    StreamRewriter,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_rtx,
    build_sr,
    ntp_middle,
    ntp_time,
    parse_fir,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtcp,
    parse_sr,
    payload_offset,
    vp8_layer,
)

log = logging.getLogger("jisr.media")

KEYFRAME_REQUEST_INTERVAL_S = 0.5
DEFAULT_MAX_BITRATE = 2_500_000  # REMB ceiling toward publishers when no subscriber says less
# Silence from a peer (no RTP, no RTCP) that means its path is down. Browsers report
# on received audio only every 2.5-7.5 s, so this must stay above that.
STALL_SECONDS = 8.0
PUBLISHER_STALL_SECONDS = 1.5
NACK_INTERVAL_S = 0.3  # ask again for what is still missing (about a round trip)
NACK_TRIES = 6
REPAIR_WINDOW_S = NACK_TRIES * NACK_INTERVAL_S  # a lost packet may come back until then
KEYFRAME_AFTER_NACKS = 3  # a packet still missing after this many asks: keyframe too
GAP_PACKETS = 40  # a jump larger than this in the publisher's sequence numbers: restart, not NACK
GAP_SECONDS = 0.5  # and a pause this long with packets missing, an outage
MIN_BITRATE = 150_000  # never ask a publisher for less: audio first, video at its floor
START_BITRATE = 300_000  # a new publisher's ceiling, growing by RAMP_PER_S each second
RAMP_PER_S = 1.25  # per second: 1 Mbit/s after 5.4 s, 2.5 Mbit/s after 9.5 s
# A subscriber's loss (its receiver reports) caps what it is sent, as a sender's loss
# controller would (GCC, draft-ietf-rmcat-gcc 6): above LOSS_HIGH back off to what
# got through, below LOSS_LOW grow 8 % per report, in between hold.
LOSS_HIGH = 0.10
LOSS_LOW = 0.02


@dataclass(frozen=True)
class Codec:
    name: str  # "VP8", "H264", "OPUS", ...
    clock_rate: int
    payload_type: int
    rtx_payload_type: int | None
    profile: str | None  # H264: profile-level-id's profile and constraints + packetization-mode

    def matches(self, other: Codec) -> bool:
        return (self.name, self.clock_rate, self.profile) == (
            other.name,
            other.clock_rate,
            other.profile,
        )


def codecs_of(negotiated: Negotiated) -> list[Codec]:
    """Media codecs of an m-line in preference order, each with its RTX payload type."""
    rtx_for = {
        c.parameters.get("apt"): c.payloadType
        for c in negotiated.codecs
        if c.mimeType.lower().endswith("/rtx")
    }
    result = []
    for c in negotiated.codecs:
        name = c.mimeType.split("/", 1)[1].upper()
        if name in ("RTX", "RED", "ULPFEC"):
            continue
        profile = None
        if name == "H264":
            level_id = str(c.parameters.get("profile-level-id", "42e01f"))
            profile = f"{level_id[:4].lower()}/{c.parameters.get('packetization-mode', 0)}"
        result.append(Codec(name, c.clockRate, c.payloadType, rtx_for.get(c.payloadType), profile))
    return result


class InStream:
    """One stream a publisher sends us (one media SSRC), with what a receiver report
    needs (RFC 3550 A.1, A.3, A.8)."""

    def __init__(
        self, leg: Leg, slot: str, kind: str, ssrc: int, codecs: list[Codec],
        feedback_ssrc: int, ext_ids: dict[str, int], role: str | None = None,
    ) -> None:  # fmt: skip
        self.leg = leg
        self.slot = slot
        self.kind = kind
        self.role = role or kind  # "audio", "video" (camera) or "screen"
        self.ssrc = ssrc
        self.codecs = {c.payload_type: c for c in codecs}
        self.feedback_ssrc = feedback_ssrc  # our SSRC on that m-line, for RTCP feedback
        self.ext_ids = ext_ids
        self.clock_rate = codecs[0].clock_rate if codecs else 90000
        self.outs: list[OutStream] = []
        self.received = 0
        self.base_seq = -1
        self.max_seq = 0
        self.cycles = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.transit: float | None = None
        self.lsr = 0
        self.lsr_at = 0.0
        self.last_sr: tuple[int, int, float] | None = None  # (ntp, rtp ts, arrival)
        self.keyframe_asked_at = float("-inf")
        self.keyframes_asked = 0
        self.last_arrival = 0.0
        self.first_arrival = 0.0
        self.missing: dict[int, int] = {}  # lost seq -> times asked for
        # Lost packets that only frames above the base temporal layer needed:
        # decoders go on without them, so they never bring a keyframe request.
        self.spare: set[int] = set()
        self.last_packet = b""  # the newest in sequence
        self.nacked_at = 0.0
        self.repaired = 0
        self.rtx_apt = {
            c.rtx_payload_type: pt for pt, c in self.codecs.items() if c.rtx_payload_type
        }

    def on_packet(self, packet: bytes, now: float) -> None:
        seq = (packet[2] << 8) | packet[3]
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self.last_packet = packet
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 0x10000
                self.max_seq = seq
                # After an outage or a burst, subscribers restart on the next keyframe
                # with no hole in their sequence numbers (a hole nobody can fill would
                # stall their jitter buffers), and the publisher is asked for it at
                # once. A few lost packets are asked for again instead (NACK).
                if delta > GAP_PACKETS or (delta > 1 and now - self.last_arrival > GAP_SECONDS):
                    self.missing.clear()
                    self.spare.clear()
                    for out in self.outs:
                        out.restart(now)
                    self.ask_keyframe(now)
                elif delta > 1:
                    spare = self._upper_layers_only(self.last_packet, packet)
                    for lost in range(delta - 1):
                        lost_seq = (seq - delta + 1 + lost) & 0xFFFF
                        self.missing[lost_seq] = 0
                        if spare:
                            self.spare.add(lost_seq)
                    self._nack(now)
                self.last_packet = packet  # the newest: a later hole starts after it
            elif self.missing.pop(seq, None) is not None:  # a late packet filled its hole
                self.spare.discard(seq)
        if self.missing and now - self.nacked_at > NACK_INTERVAL_S:
            self._nack(now)
        self.last_arrival = now
        if not self.received:
            self.first_arrival = now
        self.received += 1
        ts = int.from_bytes(packet[4:8], "big")
        transit = now * self.clock_rate - ts
        if self.transit is not None:
            self.jitter += (abs(transit - self.transit) - self.jitter) / 16
        self.transit = transit
        for out in self.outs:
            out.forward(packet, now)

    def _nack(self, now: float) -> None:
        """Ask the publisher again for packets still missing, a few times each."""
        self.nacked_at = now
        for seq in [s for s, tries in self.missing.items() if tries >= NACK_TRIES]:
            del self.missing[seq]
            self.spare.discard(seq)
        if not self.missing:
            return
        for seq in self.missing:
            self.missing[seq] += 1
        if any(
            tries == KEYFRAME_AFTER_NACKS and seq not in self.spare
            for seq, tries in self.missing.items()
        ):
            # Asked for about a second in vain: subscribers' decoders are stuck on it,
            # and a browser would wait some 3 s more before asking for a keyframe.
            self.ask_keyframe(now)
        self.leg.tap.send(
            build_nack(self.feedback_ssrc, self.ssrc, sorted(self.missing)), rtcp=True
        )

    def _upper_layers_only(self, before: bytes, after: bytes) -> bool:
        """Whether the packets lost between ``before`` and ``after`` (VP8 sent in
        temporal layers) can only have belonged to frames above the base layer: the
        frame each of them ends or starts is such a frame, and TL0PICIDX, which
        counts base-layer frames, says none was lost in between."""
        codec = self.codecs.get(after[1] & 0x7F)
        if not before or codec is None or codec.name.upper() != "VP8":
            return False
        a = vp8_layer(before[payload_offset(before) :])
        b = vp8_layer(after[payload_offset(after) :])
        if a is None or b is None or None in (a.temporal, a.tl0, b.temporal, b.tl0):
            return False
        if before[4:8] == after[4:8]:  # both in one frame: the hole is inside it
            return b.temporal > 0
        if a.temporal == 0 and not before[1] & 0x80:
            return False  # the rest of a base-layer frame (no marker bit yet) is lost
        if b.temporal == 0 and not b.starts_frame:
            return False  # the head of a base-layer frame is lost
        return b.tl0 == (a.tl0 + (b.temporal == 0)) & 0xFF

    def on_retransmission(self, packet: bytes, now: float) -> None:
        """An RTX packet (RFC 4588) answering our NACK: restored to the original
        packet and forwarded like a late arrival."""
        start = payload_offset(packet)
        end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
        media_pt = self.rtx_apt.get(packet[1] & 0x7F)
        if media_pt is None or end - start <= 2:
            return  # padding only (bandwidth probing), or not for this stream
        seq = (packet[start] << 8) | packet[start + 1]
        if self.missing.pop(seq, None) is None:
            return  # not asked for, or already here
        self.spare.discard(seq)
        header = bytearray(packet[:start])
        header[0] &= 0xDF  # no padding any more
        header[1] = (header[1] & 0x80) | media_pt
        header[2:4] = packet[start : start + 2]
        header[8:12] = self.ssrc.to_bytes(4, "big")
        restored = bytes(header) + packet[start + 2 : end]
        self.repaired += 1
        for out in self.outs:
            out.forward(restored, now)

    def report_block(self, now: float) -> tuple[int, int, int, int, int, int, int]:
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1
        lost = expected - self.received
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        dlsr = int((now - self.lsr_at) * 65536) if self.lsr else 0
        return (self.ssrc, fraction, lost, extended, int(self.jitter), self.lsr, dlsr)

    def ask_keyframe(self, now: float, urgent: bool = False) -> None:
        """Ask the publisher for a keyframe (PLI), at most every half second unless
        ``urgent`` (a subscriber just became able to receive)."""
        if self.kind != "video":
            return
        if not urgent and now - self.keyframe_asked_at < KEYFRAME_REQUEST_INTERVAL_S:
            return
        self.keyframe_asked_at = now
        self.keyframes_asked += 1
        self.leg.tap.send(build_pli(self.feedback_ssrc, self.ssrc), rtcp=True)

    def bitrate_ceiling(self, cap: int, now: float) -> int:
        """What the publisher may send: no subscriber can be given a smaller copy
        (nothing is transcoded), so the weakest subscriber (its estimate, or its
        facility's cap) sets the ceiling for all. A new stream starts low and may
        grow by a quarter every second, so a weak link is not flooded before anyone
        has measured it (faster, a 500 kbit/s link overshot at the start and froze)."""
        elapsed = min(max(0.0, now - self.first_arrival), 60.0)  # 1.25**60: past any cap
        limits = [cap, int(START_BITRATE * RAMP_PER_S**elapsed)]
        for out in self.outs:
            limits.append(out.leg.max_bitrate)
            if out.remb:
                limits.append(out.remb)
            if out.loss_estimate is not None:
                limits.append(out.loss_estimate)
        return max(MIN_BITRATE, min(limits))


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
            log.warning("no common codec between publisher %s and a subscriber", source.slot)
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
            codec = self.source.codecs.get(packet[1] & 0x7F)
            if codec is None or not is_keyframe(codec.name, packet[payload_offset(packet) :]):
                self.source.ask_keyframe(now)
                return
            self.waiting_keyframe = False
        out = rewriter.rewrite(packet)
        if out is None:
            return
        self.history.add((out[2] << 8) | out[3], out)
        if self.leg.tap.send(out):
            self.packets += 1
            self.octets += len(out) - 12
            self.last_ts = int.from_bytes(out[4:8], "big")
            self.last_sent_at = now

    def on_receiver_report(self, fraction_lost: int, now: float) -> None:
        """The subscriber's report on this stream. Its REMB sees only queueing delay,
        and a drop-tail queue that is already full adds none while it drops what
        overflows, so loss has to cap the rate as well."""
        if self._reported_at is None or now - self._reported_at < 0.2:
            if self._reported_at is None:
                self._reported_at, self._reported_octets = now, self.octets
            return
        sent = (self.octets - self._reported_octets) * 8 / (now - self._reported_at)
        self._reported_at, self._reported_octets = now, self.octets
        loss = fraction_lost / 256
        if loss > LOSS_HIGH:
            self.loss_estimate = int(sent * (1 - loss / 2))
        elif loss < LOSS_LOW and self.loss_estimate is not None:
            self.loss_estimate = int(self.loss_estimate * 1.08)
            if self.loss_estimate > DEFAULT_MAX_BITRATE:
                self.loss_estimate = None

    def retransmit(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            packet = self.history.get(seq)
            if packet is None:
                continue
            rtx_pt = self.rtx_pts.get(packet[1] & 0x7F)
            if rtx_pt is not None:
                self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
                packet = build_rtx(packet, self.rtx_ssrc, rtx_pt, self.rtx_seq)
            self.leg.tap.send(packet)

    def sender_report(self, now: float, wall: float) -> bytes | None:
        if not self.packets or self.source is None:
            return None
        # The RTP time of "now" on this stream's clock, extrapolated from the last packet.
        rtp_now = self.last_ts + int((now - self.last_sent_at) * self.source.clock_rate)
        return build_sr(self.ssrc, ntp_time(wall), rtp_now, self.packets, self.octets)


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
        ssrc = int.from_bytes(packet[8:12], "big")
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

    def _on_rtcp_item(self, item, packet: bytes, now: float) -> None:
        kind = item.packet_type
        if kind == RTCP_SR:
            stream = self.inbound.get(item.sender_ssrc)
            if stream is not None:
                info = parse_sr(packet)
                stream.lsr = ntp_middle(info.ntp_timestamp)
                stream.lsr_at = now
                stream.last_sr = (info.ntp_timestamp, info.rtp_timestamp, now)
        if kind in (RTCP_SR, RTCP_RR):  # a peer that also sends reports in its SRs
            for block in parse_report_blocks(packet):
                out = self.outbound.get(block.ssrc)
                if out is not None:
                    out.on_receiver_report(block.fraction_lost, now)
        if kind == RTCP_PSFB:
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
        elif kind == RTCP_RTPFB and item.fmt == RTPFB_NACK:
            self.nacks_received += 1
            out = self.outbound.get(item.media_ssrc)
            if out is not None:
                out.retransmit(parse_nack(packet))

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


class SinkTap:
    """Stands in for a transport when the subscriber is inside the server (the
    recorder): forwarded packets are handed to a callback."""

    ready = True

    def __init__(self, on_packet) -> None:
        self.on_packet = on_packet

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        if not rtcp:
            self.on_packet(packet)
        return True
