"""Per-subscriber stream rewriting: one publisher stream after another onto one
subscriber's output stream, on a timeline that never jumps back.

The hot path (`StreamRewriter.rewrite`, an in-order packet of the current source)
is C (media/_wire.c, `RewriterCore`, which holds the state it reads and writes);
everything else, and the whole of the logic for any other packet, is here.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Mapping

from .._wire import RewriterCore
from .extensions import extension_tables, with_remapped_extensions
from .header import (
    HALF_SEQ,
    RTP_HEADER_SIZE,
    SEQ_MASK,
    SEQ_MOD,
    TS_MASK,
    Buffer,
    pack_fixed_header,
    rtp_seq,
    rtp_ssrc,
    unpack_fixed_header,
)


class StreamRewriter(RewriterCore):
    """Maps one publisher stream onto one subscriber leg's output stream.

    Output sequence numbers and timestamps run on one timeline that never jumps back,
    whatever happens upstream:

    - Within a source, the seq and ts offsets are constant, so reordered and late
      packets land in their own slots.
    - The first forwarded packet anchors the timeline: it gets the next output seq.
      Packets never forwarded before it (waiting for a keyframe) cost no seq number.
    - `switch_source()` re-anchors on the next forwarded packet: the new source may
      have a new SSRC and random seq/ts bases. Late packets of the old source (other
      SSRC, or the same SSRC but older than the anchor) are dropped.
    - `skip(packet)` (and packets with an unmapped payload type) close the output
      sequence over an in-order packet that is deliberately not sent, so subscribers
      see no gap to NACK.
    """

    # ssrc, pt_map, _ext_tables, _pending, _started, _in_ssrc, _max_in, _ext, _seq_off,
    # _ts_off, _last_seq and _last_ts are RewriterCore's.
    __slots__ = ("frame_ticks", "max_keep_ticks", "_ext_map", "_gap_ticks", "_seq_gap", "_steps")

    def __init__(
        self,
        ssrc: int,
        pt_map: Mapping[int, int],
        *,
        ext_map: Mapping[int, int] | None = None,
        clock_rate: int = 90000,
        frame_ticks: int | None = None,
        seq_start: int | None = None,
        ts_start: int | None = None,
    ) -> None:
        """`pt_map`: input PT -> output PT; packets with other PTs are dropped.
        `ext_map`: input -> output header extension ids (None: extensions untouched).
        `frame_ticks`: the least the output ts advances across a source switch
        (default one 30 fps frame at 90 kHz, 20 ms otherwise, i.e. one Opus frame).
        `seq_start`/`ts_start`: first output values; random by default (RFC 3550)."""
        self.ssrc = ssrc
        self.pt_map = pt_map
        self.set_ext_map(ext_map)
        if frame_ticks is None:
            frame_ticks = clock_rate // 30 if clock_rate >= 90000 else clock_rate // 50
        self.frame_ticks = max(1, frame_ticks)
        # Re-anchoring on the same SSRC keeps the ts offset when the source's own
        # clock moved forward plausibly (a keyframe wait, not a restart).
        self.max_keep_ticks = 300 * clock_rate
        self._pending = True
        self._started = False
        self._gap_ticks = self.frame_ticks
        self._seq_gap = 0
        self._in_ssrc = -1
        self._max_in = 0  # highest input seq of the current source (16 bits)
        self._ext = 0  # the same, extended (never wraps) for late-packet lookups
        self._seq_off = 0
        self._ts_off = 0
        # (first skipped ext seq, first ext seq using off, off), oldest first.
        # Packets below steps[0] are from before the anchor and are dropped.
        self._steps: list[tuple[int, int, int]] = []
        self._last_seq = random.getrandbits(16) if seq_start is None else seq_start & SEQ_MASK
        self._last_seq = (self._last_seq - 1) & SEQ_MASK
        self._last_ts = random.getrandbits(32) if ts_start is None else ts_start & TS_MASK

    def set_ext_map(self, ext_map: Mapping[int, int] | None) -> None:
        """Input -> output header extension ids; None leaves extensions untouched."""
        self._ext_map = ext_map
        self._ext_tables = None if ext_map is None else extension_tables(ext_map)

    @property
    def ext_map(self) -> Mapping[int, int] | None:
        return self._ext_map

    @ext_map.setter
    def ext_map(self, ext_map: Mapping[int, int] | None) -> None:
        self.set_ext_map(ext_map)

    @property
    def last_sequence_number(self) -> int | None:
        """Output seq of the newest packet sent, None before the first."""
        return self._last_seq if self._started else None

    @property
    def last_timestamp(self) -> int | None:
        return self._last_ts if self._started else None

    def switch_source(self, elapsed_ticks: int | None = None, seq_gap: int = 0) -> None:
        """The input stream changes (publisher reconnected, new SSRC, new bases).

        The next forwarded packet continues the output timeline: seq + 1 (+ `seq_gap`:
        sequence numbers deliberately left out), and ts + `elapsed_ticks` (clock ticks
        since the old source's last packet, as the caller measured it), but never less
        than `frame_ticks`.
        """
        self._pending = True
        self._gap_ticks = max(self.frame_ticks, elapsed_ticks or 0)
        self._seq_gap = seq_gap & SEQ_MASK

    def _anchor(self, seq: int, ts: int, ssrc: int) -> None:
        if not self._started:
            self._ts_off = (self._last_ts - ts) & TS_MASK
        elif not (
            ssrc == self._in_ssrc
            and (ts - (self._last_ts - self._ts_off)) & TS_MASK <= self.max_keep_ticks
        ):
            self._ts_off = (self._last_ts + self._gap_ticks - ts) & TS_MASK
        self._seq_off = (self._last_seq + 1 + self._seq_gap - seq) & SEQ_MASK
        self._seq_gap = 0
        self._in_ssrc = ssrc
        # Pretend the previous seq was the max so that this packet takes the in-order
        # path; a fresh extended space starts here, so older packets fall below it.
        self._max_in = (seq - 1) & SEQ_MASK
        self._ext = SEQ_MOD - 1
        self._steps = [(SEQ_MOD, SEQ_MOD, self._seq_off)]
        self._pending = False
        self._started = True

    # rewrite(packet) -> bytes | None: a new packet with SSRC, PT, seq and ts replaced,
    # or None to drop it. RewriterCore's, for an in-order packet of the current source;
    # it hands any other packet here.

    def _rewrite_other(self, packet: Buffer) -> bytes | None:
        """rewrite() for any packet (the common case included, for a packet that is not
        bytes)."""
        try:
            b0, b1, seq, ts, ssrc = unpack_fixed_header(packet)
        except struct.error:
            return None
        out_pt = self.pt_map.get(b1 & 0x7F)
        if out_pt is None:
            self.skip(packet)
            return None
        if self._pending or ssrc != self._in_ssrc:
            if not self._pending or b0 & 0xC0 != 0x80:
                return None
            self._anchor(seq, ts, ssrc)
        delta = (seq - self._max_in) & SEQ_MASK
        if 0 < delta < HALF_SEQ:
            # in order (or after a loss): the common case
            self._max_in = seq
            self._ext += delta
            seq = (seq + self._seq_off) & SEQ_MASK
            ts = (ts + self._ts_off) & TS_MASK
            self._last_seq = seq
            self._last_ts = ts
        else:
            off = self._late_offset(self._ext - ((SEQ_MOD - delta) & SEQ_MASK))
            if off is None:
                return None
            seq = (seq + off) & SEQ_MASK
            ts = (ts + self._ts_off) & TS_MASK
        head = pack_fixed_header(b0, (b1 & 0x80) | out_pt, seq, ts, self.ssrc)
        if self._ext_tables is not None and b0 & 0x10:
            return with_remapped_extensions(head, packet, b0, self._ext_tables)
        return head + packet[RTP_HEADER_SIZE:]

    def _late_offset(self, ext: int) -> int | None:
        """Seq offset for a late or duplicate packet; None if it must be dropped."""
        for first_skipped, start, off in reversed(self._steps):
            if ext >= start:
                return off
            if ext >= first_skipped:
                return None  # a duplicate of a skipped packet: its slot was reused
        return None  # from before the anchor

    def skip(self, packet: Buffer) -> None:
        """Declare an input packet deliberately not forwarded. When it is the newest so
        far (the usual case), later packets shift down so the output has no gap; a late
        packet cannot be skipped that way (its neighbours already went out)."""
        if self._pending or len(packet) < RTP_HEADER_SIZE:
            return  # not anchored yet: skipped packets cost nothing anyway
        seq = rtp_seq(packet)
        if rtp_ssrc(packet) != self._in_ssrc:
            return
        delta = (seq - self._max_in) & SEQ_MASK
        if not 0 < delta < HALF_SEQ:
            return
        self._max_in = seq
        self._ext += delta
        self._seq_off = (self._seq_off - 1) & SEQ_MASK
        steps = self._steps
        first_skipped, start, _ = steps[-1]
        if start == self._ext and first_skipped != start:
            # continues a run of skips: widen that run instead of adding a step
            steps[-1] = (first_skipped, self._ext + 1, self._seq_off)
        else:
            steps.append((self._ext, self._ext + 1, self._seq_off))
            if len(steps) > 64:
                del steps[0]  # packets that late are dropped anyway

    def out_timestamp(self, in_ts: int) -> int | None:
        """Map a timestamp of the current source (e.g. from its sender report)."""
        return None if self._pending else (in_ts + self._ts_off) & TS_MASK
