"""How long this worker's event loop has not been running. A peer's silence means its
path is down only if the loop was listening through it: a loop held up by its own
load (or a paused process) finds every peer's packets waiting in the socket when it
comes back, and no path was down."""

from __future__ import annotations

import asyncio
import time

WATCH_INTERVAL_S = 0.1
# A timer this late means the loop was held up; less is ordinary scheduling.
STALL_GRACE_S = WATCH_INTERVAL_S + 0.25


class LoopWatch:
    """Seconds the loop was held up, in total, as a timer running every
    ``WATCH_INTERVAL_S`` finds them. Unwatched (``run`` never started): none."""

    def __init__(self) -> None:
        self._awake_at: float | None = None  # when the timer last ran
        self._held_total = 0.0

    def held(self, now: float) -> float:
        """Seconds held up so far, counting a hold-up still under way at ``now`` (the
        loop that comes back reads its sockets before its late timers run)."""
        if self._awake_at is None:
            return 0.0
        return self._held_total + max(0.0, now - self._awake_at - STALL_GRACE_S)

    def tick(self, now: float) -> None:
        self._held_total = self.held(now)
        self._awake_at = now

    async def run(self) -> None:
        self.tick(time.monotonic())
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self.tick(time.monotonic())


UNWATCHED = LoopWatch()  # a leg outside a node (an internal sink, a unit test)
