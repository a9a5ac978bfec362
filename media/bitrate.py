"""How fast a publisher may send. Nothing is transcoded, so every subscriber of a
stream gets the same copy: the weakest subscriber's link (its REMB estimate, the
loss it reports, its facility's cap) sets the ceiling for all, sent to the
publisher as REMB."""

from __future__ import annotations

DEFAULT_MAX_BITRATE = 2_500_000  # REMB ceiling toward publishers when no subscriber says less
MIN_BITRATE = 150_000  # never ask a publisher for less: audio first, video at its floor
START_BITRATE = 300_000  # a new publisher's ceiling, growing by RAMP_PER_S each second
RAMP_PER_S = 1.25  # per second: 1 Mbit/s after 5.4 s, 2.5 Mbit/s after 9.5 s
# A subscriber's loss (its receiver reports) caps what it is sent, as a sender's loss
# controller would (GCC, draft-ietf-rmcat-gcc 6): above LOSS_HIGH back off to what
# got through, below LOSS_LOW grow 8 % per report, in between hold.
LOSS_HIGH = 0.10
LOSS_LOW = 0.02


def start_ceiling(elapsed_s: float) -> int:
    """A new stream's ceiling ``elapsed_s`` after its first packet: it starts low and
    may grow by a quarter every second, so a weak link is not flooded before anyone
    has measured it (faster, a 500 kbit/s link overshot at the start and froze)."""
    elapsed = min(max(0.0, elapsed_s), 60.0)  # 1.25**60: past any cap
    return int(START_BITRATE * RAMP_PER_S**elapsed)


def loss_estimate(estimate: int | None, sent_bps: float, loss: float) -> int | None:
    """A subscriber's new loss-based limit (bit/s; None: loss limits it no more) from
    the fraction its receiver report says it lost and what it was sent meanwhile."""
    if loss > LOSS_HIGH:
        return int(sent_bps * (1 - loss / 2))
    if loss < LOSS_LOW and estimate is not None:
        estimate = int(estimate * 1.08)
        if estimate > DEFAULT_MAX_BITRATE:
            return None
    return estimate
