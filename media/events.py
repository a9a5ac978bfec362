"""What media tells signaling about layers (media.layers), as typed events: which
simulcast layers a publisher should keep sending, and whether a subscriber gets
less than its tile needs. Signaling passes them on to the pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PublishedLayers:
    """The layers (RIDs, smallest first) someone receives or may soon: the publisher
    pauses the others, and resumes them when they are named again."""

    peer_id: str
    role: str
    active: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReceivedLayers:
    """A subscriber's ``slot``/``role`` stream is (or is no longer) a reduced picture:
    a smaller layer or fewer frames than its tile could show."""

    peer_id: str
    slot: str
    role: str
    reduced: bool


LayerEvent = PublishedLayers | ReceivedLayers
LayerCallback = Callable[[LayerEvent], None]
