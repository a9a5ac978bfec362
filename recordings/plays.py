"""Which media requests start a playback, for the audit trail. A player fetches one
playback in many byte ranges (first the start, then wherever the viewer seeks); it is
audited once as ``recording.played``, not once per range, and yet no request for
part of a recording goes unaudited."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

IDLE_S = 300.0  # a viewer silent this long on a rendition starts a new playback
CAPACITY = 10_000  # viewers and renditions remembered; the oldest are forgotten


class RecentPlays:
    """When each viewer last fetched each rendition, on this node."""

    def __init__(
        self,
        idle_s: float = IDLE_S,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self._capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def starts(self, key: Hashable, *, from_first_byte: bool) -> bool:
        """Whether a request starts a playback: it asks for the file from its first
        byte (the whole file, or a range from byte 0), or this viewer fetched nothing
        of this rendition for ``idle_s`` (a range further on, asked for alone)."""
        if from_first_byte:
            return True
        with self._lock:
            last = self._seen.get(key)
        return last is None or self._clock() - last > self.idle_s

    def served(self, key: Hashable) -> None:
        """A request of ``key`` was served: its playback goes on."""
        with self._lock:
            self._seen[key] = self._clock()
            self._seen.move_to_end(key)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
