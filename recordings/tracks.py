"""How a recording names its tracks, and which tracks make one participant's
rendition. The recorder titles every track ``<slot>-<role>``; the HTTP layer asks
here rather than rebuilding the rule."""

from __future__ import annotations

from collections.abc import Collection

SLOTS = ("referrer", "specialist")  # the session's two publishers
ROLES = ("audio", "video", "screen")  # each participant's microphone, camera and screen
CAMERA_ROLES = ("audio", "video")  # one rendition: a browser plays one video track a file
SCREEN = "screen"
# What a player may ask for: a participant's camera and microphone ("referrer"), or
# their shared screen alone ("referrer-screen").
RENDITIONS = (*SLOTS, *(f"{slot}-{SCREEN}" for slot in SLOTS))


def track_title(slot: str, role: str) -> str:
    return f"{slot}-{role}"


def rendition_tracks(rendition: str) -> set[str]:
    """The track titles of one rendition (see RENDITIONS)."""
    if rendition in SLOTS:
        return {track_title(rendition, role) for role in CAMERA_ROLES}
    return {rendition}


def media_participants(tracks: Collection[str]) -> list[str]:
    """The slots with camera or microphone media among ``tracks``."""
    return [s for s in SLOTS if any(track_title(s, r) in tracks for r in CAMERA_ROLES)]


def media_screens(tracks: Collection[str]) -> list[str]:
    """The slots that shared a screen among ``tracks``."""
    return [s for s in SLOTS if track_title(s, SCREEN) in tracks]
