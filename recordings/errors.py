"""What the vault refuses, by kind."""

from __future__ import annotations


class RecordingNotFound(LookupError):
    pass


class RecordingExists(Exception):
    pass


class NoMedia(ValueError):
    """The recording, or the part of it asked for, holds no media to play."""
