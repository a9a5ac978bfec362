"""What was sent on one output stream, kept for answering NACKs (RFC 4585)."""

from __future__ import annotations

from .._wire import HistoryCore

_NEVER = float("-inf")


class SentHistory(HistoryCore):
    """The last `size` packets sent on one output stream, by output seq, for NACKs,
    with when each was last resent. ``add(seq, packet)``, once per packet sent, is
    HistoryCore's (media/_wire.c), on the slots ``_mask``, ``_seqs`` and ``_packets``."""

    __slots__ = ("_resent_at",)

    def __init__(self, size: int = 512) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("history size must be a power of two")
        self._mask = size - 1
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size
        # seq -> when last resent; only packets resent lately (nothing to do per packet
        # sent: an entry left from a seq 65,536 packets ago is long past any interval)
        self._resent_at: dict[int, float] = {}

    def get(self, seq: int) -> bytes | None:
        i = seq & self._mask
        return self._packets[i] if self._seqs[i] == seq else None

    def take_for_resend(self, seq: int, now: float, interval: float) -> bytes | None:
        """The packet to resend for a NACK of ``seq``, None if it is gone or was resent
        less than ``interval`` ago (that copy may still be on its way)."""
        packet = self.get(seq)
        if packet is None or now - self._resent_at.get(seq, _NEVER) < interval:
            return None
        if len(self._resent_at) >= len(self._seqs):
            self._resent_at.clear()
        self._resent_at[seq] = now
        return packet

    def clear(self) -> None:
        self._seqs = [-1] * len(self._seqs)
        self._packets = [None] * len(self._packets)
        self._resent_at.clear()
