"""One stream a publisher sends us: receive statistics for its receiver reports,
repair of what it lost on the way in (NACK, RTX), keyframe requests, and the
bitrate ceiling it is told. Every packet goes on to each subscriber's OutStream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._wire import InCore
from .bitrate import MIN_BITRATE, start_ceiling
from .codecs import Codec
from .keyframes import keyframe_height
from .rtp import (
    HALF_SEQ,
    SEQ_MASK,
    SEQ_MOD,
    build_nack,
    build_pli,
    delay_since,
    fraction_lost,
    payload_offset,
    restore_rtx,
    rtp_marker,
    rtp_payload_type,
    rtp_seq_ts,
    rtp_timestamp,
    rtx_payload,
    vp8_base_frames_between,
    vp8_layer,
)

if TYPE_CHECKING:
    from .leg import Leg
    from .outbound import OutStream

KEYFRAME_REQUEST_INTERVAL_S = 0.5
NACK_INTERVAL_S = 0.3  # ask again for what is still missing (about a round trip)
NACK_TRIES = 6
REPAIR_WINDOW_S = NACK_TRIES * NACK_INTERVAL_S  # a lost packet may come back until then
KEYFRAME_AFTER_NACKS = 3  # a packet still missing after this many asks: keyframe too
GAP_PACKETS = 40  # a jump larger than this in the publisher's sequence numbers: restart, not NACK
GAP_SECONDS = 0.5  # and a pause this long with packets missing, an outage
FLOWING_S = 1.5  # a layer whose last packet is older than this is not sent (paused)


class InStream(InCore):
    """One stream a publisher sends us (one media SSRC), with what a receiver report
    needs (RFC 3550 A.1, A.3, A.8).

    ``on_packet(packet, now)``, once per packet, is InCore's (media/_wire.c) for the
    next packet in sequence while nothing else goes on, on the attributes it holds
    (base_seq, max_seq, cycles, received, octets, clock_rate, last_arrival,
    first_arrival, jitter, transit, last_packet, missing, outs, joining, watch_size);
    ``_on_packet_other`` is the whole of the logic, for any packet."""

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
        # Simulcast: every layer of one published stream, smallest first ([self] for a
        # stream sent once), this one's place among them, and its RID.
        self.layers: list[InStream] = [self]
        self.index = 0
        self.rid = ""
        self.rtx_ssrc = 0
        self.joining: list[OutStream] = []  # subscribers waiting to move onto this layer
        self.octets = 0
        self.bitrate = 0.0  # bits/s, measured (see measure)
        self._measured = (0.0, 0)
        self.height = 0  # of its latest keyframe, watched for simulcast layers only
        self.watch_size = False

    def _on_packet_other(self, packet: bytes, now: float) -> None:
        seq, ts = rtp_seq_ts(packet)
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self.last_packet = packet
        else:
            delta = (seq - self.max_seq) & SEQ_MASK
            if delta < HALF_SEQ:
                if seq < self.max_seq:
                    self.cycles += SEQ_MOD
                self.max_seq = seq
                if delta > 1:
                    self._on_gap(packet, seq, delta, now)
                self.last_packet = packet  # the newest: a later hole starts after it
            elif self.missing.pop(seq, None) is not None:  # a late packet filled its hole
                self.spare.discard(seq)
        if self.missing and now - self.nacked_at > NACK_INTERVAL_S:
            self._nack(now)
        self.last_arrival = now
        if not self.received:
            self.first_arrival = now
        self.received += 1
        transit = now * self.clock_rate - ts
        if self.transit is not None:
            self.jitter += (abs(transit - self.transit) - self.jitter) / 16
        self.transit = transit
        self.octets += len(packet)
        if self.watch_size:
            self._watch_size(packet)
        for out in self.outs:
            out.forward(packet, now)
        if self.joining:  # after the loop: a subscriber moving here forwards it itself
            for out in list(self.joining):
                out.join_on(self, packet, now)

    def _watch_size(self, packet: bytes) -> None:
        codec = self.codecs.get(rtp_payload_type(packet))
        if codec is not None:
            try:
                payload = packet[payload_offset(packet) :]
            except ValueError:
                return
            height = keyframe_height(codec.name, payload)
            if height:
                self.height = height

    def flowing(self, now: float, within: float = FLOWING_S) -> bool:
        """Whether packets arrived within ``within`` seconds before ``now`` (a paused or
        dropped layer's do not)."""
        return self.received > 0 and now - self.last_arrival < within

    def measure(self, now: float) -> None:
        """Update ``bitrate`` from what arrived since the last call (about a second)."""
        at, octets = self._measured
        if at and now > at:
            rate = (self.octets - octets) * 8 / (now - at)
            self.bitrate = rate if not self.bitrate else 0.5 * (self.bitrate + rate)
        self._measured = (now, self.octets)

    def _on_gap(self, packet: bytes, seq: int, delta: int, now: float) -> None:
        """Packets are missing before ``packet``. After an outage or a burst,
        subscribers restart on the next keyframe with no hole in their sequence
        numbers (a hole nobody can fill would stall their jitter buffers), and the
        publisher is asked for it at once. A few lost packets are asked for again
        instead (NACK)."""
        if delta > GAP_PACKETS or now - self.last_arrival > GAP_SECONDS:
            self.missing.clear()
            self.spare.clear()
            for out in self.outs:
                out.restart(now)
            self.ask_keyframe(now)
            return
        spare = self._upper_layers_only(self.last_packet, packet)
        for lost in range(delta - 1):
            lost_seq = (seq - delta + 1 + lost) & SEQ_MASK
            self.missing[lost_seq] = 0
            if spare:
                self.spare.add(lost_seq)
        self._nack(now)

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
        codec = self.codecs.get(rtp_payload_type(after))
        if not before or codec is None or codec.name.upper() != "VP8":
            return False
        try:
            a = vp8_layer(before[payload_offset(before) :])
            b = vp8_layer(after[payload_offset(after) :])
        except ValueError:  # a header cut short: nothing can be said of what was lost
            return False
        if a is None or b is None or None in (a.temporal, a.tl0, b.temporal, b.tl0):
            return False
        if rtp_timestamp(before) == rtp_timestamp(after):  # one frame: the hole is inside it
            return b.temporal > 0
        if a.temporal == 0 and not rtp_marker(before):
            return False  # the rest of a base-layer frame (no marker bit yet) is lost
        if b.temporal == 0 and not b.starts_frame:
            return False  # the head of a base-layer frame is lost
        return vp8_base_frames_between(a, b) == (b.temporal == 0)

    def on_retransmission(self, packet: bytes, now: float) -> None:
        """An RTX packet (RFC 4588) answering our NACK: restored to the original
        packet and forwarded like a late arrival."""
        try:
            rtx = rtx_payload(packet)
        except ValueError:
            return  # its header is cut short
        media_pt = self.rtx_apt.get(rtp_payload_type(packet))
        if media_pt is None or rtx is None:
            return  # padding only (bandwidth probing), or not for this stream
        if self.missing.pop(rtx.original_seq, None) is None:
            return  # not asked for, or already here
        self.spare.discard(rtx.original_seq)
        restored = restore_rtx(packet, rtx, media_pt, self.ssrc)
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
        fraction = fraction_lost(expected_interval - received_interval, expected_interval)
        dlsr = delay_since(now - self.lsr_at) if self.lsr else 0
        return (self.ssrc, fraction, lost, extended, int(self.jitter), self.lsr, dlsr)

    def ask_keyframe(self, now: float, urgent: bool = False) -> None:
        """Ask the publisher for a keyframe (PLI), at most every half second unless
        ``urgent`` (a subscriber just became able to receive)."""
        if self.kind != "video" or not self.ssrc:
            return
        if not urgent and now - self.keyframe_asked_at < KEYFRAME_REQUEST_INTERVAL_S:
            return
        self.keyframe_asked_at = now
        self.keyframes_asked += 1
        self.leg.tap.send(build_pli(self.feedback_ssrc, self.ssrc), rtcp=True)

    def bitrate_ceiling(self, cap: int, now: float) -> int:
        """What the publisher may send: the smallest of ``cap``, the start-up ramp,
        and what its subscribers can take (see media.bitrate). A stream sent once is
        held to its weakest subscriber's cap, REMB estimate and loss-based limit.
        Subscribers who can choose (media.layers) do not hold it down: with simulcast
        each takes the layer its link carries (and layers nobody needs are paused
        instead), and a screen share is held only to its best subscriber's link,
        the others dropping temporal layers."""
        limits = [cap, start_ceiling(now - self.first_arrival)]
        if len(self.layers) == 1:
            links = [_link_limit(out) for out in self.outs]
            if self.role == "screen" and links:
                limits.append(max(links))
            else:
                limits += links
        return max(MIN_BITRATE, min(limits))


def _link_limit(out: OutStream) -> int:
    """What one subscriber's link takes: its cap, REMB estimate and loss-based limit."""
    limits = [out.leg.max_bitrate]
    if out.remb:
        limits.append(out.remb)
    if out.loss_estimate is not None:
        limits.append(out.loss_estimate)
    return min(limits)
