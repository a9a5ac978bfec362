"""One subscriber's VP8 stream across simulcast layers and temporal layers (RFC 7741
4.2): which frames it gets, and its PictureID and TL0PICIDX kept running on.

A temporal layer is added only at a layer-sync frame of that layer (Y bit: it refers
to the base layer alone), one layer at a time, and dropped from the next frame on.
When frames are dropped, or the stream moves to another simulcast layer (another
encoder, with PictureIDs and TL0PICIDX of its own), the fields are rewritten so the
subscriber's decoder sees no jump: a gap in PictureIDs reads as lost frames.
Seven-bit PictureIDs are left alone (browsers send fifteen-bit ones).
"""

from __future__ import annotations

from collections.abc import Iterable

from .header import Buffer, payload_offset

MAX_TEMPORAL = 2  # three temporal layers (L1T3): TID 0, 1, 2
PID_MASK = 0x7FFF


class Vp8Munger:
    """Temporal-layer choice and PictureID/TL0PICIDX rewriting for one output stream.
    Per packet: `admit(input packet)`, then, if admitted, `rewrite(rewritten packet)`
    (the header rewriting keeps every offset, so the positions found hold)."""

    __slots__ = (
        "payload_types", "target", "temporal", "_pid_pos", "_tl0_pos", "_pid_off", "_tl0_off",
        "_last_pid", "_last_tl0", "_anchor", "_dropped",
    )  # fmt: skip

    def __init__(self, payload_types: Iterable[int] = (), target: int = MAX_TEMPORAL) -> None:
        self.payload_types = frozenset(payload_types)  # VP8's: other packets pass untouched
        self.target = target  # the highest temporal layer wanted
        self.temporal = target  # the highest forwarded now
        self._pid_pos = -1
        self._tl0_pos = -1
        self._pid_off = 0
        self._tl0_off = 0
        self._last_pid = -1
        self._last_tl0 = -1
        self._anchor = True
        self._dropped = -1

    def switch_source(self) -> None:
        """The next admitted packet starts another encoder's stream (on a keyframe)."""
        self._anchor = True

    def keyframe(self) -> None:
        """A keyframe resets every reference: every wanted layer may follow at once."""
        self.temporal = self.target

    def admit(self, packet: Buffer) -> bool:
        """Whether the subscriber gets ``packet`` (an input packet)."""
        self._pid_pos = self._tl0_pos = -1
        if packet[1] & 0x7F not in self.payload_types:
            return True
        try:
            off = payload_offset(packet)
        except ValueError:
            return True
        size = len(packet)
        if size < off + 3 or not packet[off] & 0x80:
            return True  # no extension byte: no layers, nothing to rewrite
        x = packet[off + 1]
        pos = off + 2
        if x & 0x80:
            if packet[pos] & 0x80:
                self._pid_pos = pos
                pos += 2
            else:
                pos += 1
        if x & 0x40:
            self._tl0_pos = pos
            pos += 1
        if pos > size:  # the descriptor is cut short: nothing to read or rewrite
            self._pid_pos = self._tl0_pos = -1
            return True
        if not x & 0x20 or pos >= size:
            return True
        tid = packet[pos] >> 6
        if packet[off] & 0x17 == 0x10:  # the first packet of a frame: switch here
            if self.target < self.temporal:
                self.temporal = self.target
            elif tid == self.temporal + 1 and tid <= self.target and packet[pos] & 0x20:
                self.temporal = tid
        if tid <= self.temporal:
            return True
        pid_pos = self._pid_pos
        if pid_pos >= 0 and pos < size:
            pid = ((packet[pid_pos] & 0x7F) << 8) | packet[pid_pos + 1]
            if pid != self._dropped:  # later frames move down into its PictureID
                self._dropped = pid
                self._pid_off = (self._pid_off - 1) & PID_MASK
        return False

    def rewrite(self, out: bytes) -> bytes:
        """``out`` (the admitted packet, header rewritten) with PictureID and TL0PICIDX
        continuing the subscriber's stream."""
        p, t = self._pid_pos, self._tl0_pos
        if p < 0 and t < 0:
            return out
        buf = bytearray(out)
        if self._anchor:
            self._anchor = False
            if p >= 0 and self._last_pid >= 0:
                in_pid = ((buf[p] & 0x7F) << 8) | buf[p + 1]
                self._pid_off = (self._last_pid + 1 - in_pid) & PID_MASK
            if t >= 0 and self._last_tl0 >= 0:
                self._tl0_off = (self._last_tl0 + 1 - buf[t]) & 0xFF
        if p >= 0:
            pid = ((((buf[p] & 0x7F) << 8) | buf[p + 1]) + self._pid_off) & PID_MASK
            buf[p] = 0x80 | pid >> 8
            buf[p + 1] = pid & 0xFF
            if self._last_pid < 0 or 0 < (pid - self._last_pid) & PID_MASK < 0x4000:
                self._last_pid = pid
        if t >= 0:
            tl0 = (buf[t] + self._tl0_off) & 0xFF
            buf[t] = tl0
            if self._last_tl0 < 0 or 0 < (tl0 - self._last_tl0) & 0xFF < 0x80:
                self._last_tl0 = tl0
        return bytes(buf)
