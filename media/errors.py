"""The one error media raises to its callers, with a code signaling passes on."""

from __future__ import annotations


class MediaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
