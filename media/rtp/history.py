"""What was sent on one output stream, kept for answering NACKs (RFC 4585)."""

from __future__ import annotations


class SentHistory:
    """The last `size` packets sent on one output stream, by output seq, for NACKs."""

    __slots__ = ("_mask", "_seqs", "_packets")

    def __init__(self, size: int = 512) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("history size must be a power of two")
        self._mask = size - 1
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def add(self, seq: int, packet: bytes) -> None:
        i = seq & self._mask
        self._seqs[i] = seq
        self._packets[i] = packet

    def get(self, seq: int) -> bytes | None:
        i = seq & self._mask
        return self._packets[i] if self._seqs[i] == seq else None

    def clear(self) -> None:
        self._seqs = [-1] * len(self._seqs)
        self._packets = [None] * len(self._packets)
