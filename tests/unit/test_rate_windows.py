"""The in-process sliding-window counts: a refused client told to wait ``retry``
seconds is let in after that long, and not before."""

import limits
import pytest

from signaling.ratelimit import LocalWindows


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("limit", ["20/second", "3/minute", "5/minute"])
@pytest.mark.parametrize("phase", [0.0, 0.01, 0.3, 0.97, 0.999])
def test_the_wait_given_is_the_wait_needed(limit, phase):
    item = limits.parse(limit)
    period = item.get_expiry()
    clock = Clock(1_000_020 + phase * period)  # a whole number of every period
    windows = LocalWindows(clock)
    allowed = 0
    while (wait := windows.hit(item, "u")) == 0:
        allowed += 1
    assert allowed == item.amount
    for _ in range(3):  # the first wait, then a few more floods after it
        assert windows.hit(item, "u") > 0  # refusals count for nothing
        clock.now += wait - 0.001 * period
        assert windows.hit(item, "u") > 0, "let in before the wait given"
        clock.now += 0.001 * period
        assert windows.hit(item, "u") == 0, f"refused after the wait given ({wait:.3f} s)"
        while (wait := windows.hit(item, "u")) == 0:
            pass
