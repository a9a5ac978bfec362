"""Which layers one subscriber gets: a ladder of (spatial, temporal) steps, climbed one
step at a time and left at once.

Nothing is transcoded, so what a subscriber may receive is what the publisher sends:
with simulcast, one of its layers (smallest first), and within it the temporal
layers up to one (VP8 L1T3: 7.5, 15 or 30 frames a second at 30 fps). A subscriber's
own link decides (its REMB, the loss its receiver reports say, its facility's cap),
and so does its tile: no larger a layer than the picture it is shown in.

A receiver's REMB grows with what it receives (WebRTC caps it at 1.5 times the rate
that arrives), so it cannot say whether the next layer would fit. A step up is
therefore probed first: after ``UP_HOLD_S`` seconds without congestion or loss (one
second when the REMB already leaves room for it), the subscriber is sent padding, as
much as the next step would add, for ``PROBE_S`` seconds. A link that cannot carry
it builds a queue, which the receiver's delay-based estimate sees: it falls (or loss
is reported, or the round trip our sender reports measure grows by
``PROBE_QUEUE_S``, as it does while an estimate holds still), the probe stops and
the next one waits twice as long (up to ``MAX_HOLD_S``). Otherwise the step is taken
at the probe's end, or sooner once the estimate has grown by ``PROBE_GROWTH`` or
leaves room for the step. Only a fall counts against a probe: the congestion test
below (an estimate under what is sent) would fail every probe, as an estimate that
grows a few percent a second lags behind the padding; and only a fall below where
the probe began, as a saturated link's estimate may creep up for a second before its
queue is noticed. Congestion or loss soon after a step (``TRIAL_S``) also doubles
the wait. A step down is taken at once, and the next one only on fresh evidence: for
``DOWN_AFTERMATH_S`` after it, loss and congestion still describe the step just
left, so only an estimate that no longer fits the new step takes it lower.
Congestion: the REMB falls below what the subscriber is sent (a delay-based estimate
drops under the rate that arrives when queues grow). A subscriber without REMB (the
recorder) is not probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bitrate import LOSS_HIGH, LOSS_LOW

# Share of a layer's bitrate its frames up to temporal layer 0, 1 and 2 take (the
# split WebRTC's encoders aim for with three temporal layers: 40 %, 20 %, 40 %).
TEMPORAL_SHARE = (0.4, 0.6, 1.0)
UP_HOLD_S = 3.0  # steady seconds before a step up
TRIAL_S = 4.0  # congestion or loss this soon after a step up undoes it
MAX_HOLD_S = 8.0  # a failed step up waits at most this long before the next probe
FIT_HOLD_S = 1.0  # before a step up the REMB already allows
PROBE_S = 3.0  # longest a probe runs
PROBE_GROWTH = 1.08  # an estimate grown this much since the probe began: the step fits
# A round trip this much longer than when the probe began: its padding is queueing
# (a receiver's estimate may stay where it is for seconds while the queue fills).
PROBE_QUEUE_S = 0.1
# Loss or congestion reported this soon after a failed probe is the probe's: its
# padding filled or overflowed the queue, and it has stopped (reports and rates
# measured over the last second still show it).
PROBE_AFTERMATH_S = 2.0
# Likewise after a step down: the next receiver report and the rate measured over the
# last second still describe the larger step, so loss or "congestion" seen this soon
# takes it lower only if the step it is on no longer fits the estimate.
DOWN_AFTERMATH_S = 2.0
# REMB under this share of what the leg is sent: a queue is growing (WebRTC's
# estimate falls to 0.85 times what arrives, which is less than what is sent, when
# it sees one; without one it sits at or above what arrives).
CONGESTED = 0.8

Step = tuple[int, int]  # (spatial layer, highest temporal layer)


def ladder(spatial_layers: int) -> list[Step]:
    """The steps, cheapest first. Only the smallest layer is offered at its base frame
    rate alone: a larger picture at 7.5 frames a second is worse for a consult than a
    smaller one at 15 or 30."""
    steps: list[Step] = [(0, 0), (0, 1), (0, 2)]
    for spatial in range(1, spatial_layers):
        steps += [(spatial, 1), (spatial, 2)]
    return steps


def step_rate(step: Step, layer_rates: list[float]) -> float:
    spatial, temporal = step
    return layer_rates[spatial] * TEMPORAL_SHARE[temporal]


def tile_layer(heights: list[int], wanted: int) -> int:
    """The smallest layer at least ``wanted`` pixels high (0: the tile's size is not
    known, every layer may do); layers whose height is not known yet count as
    large enough only if they are the largest."""
    if wanted <= 0:
        return len(heights) - 1
    for index, height in enumerate(heights):
        if height >= wanted:
            return index
    return len(heights) - 1


@dataclass(frozen=True, slots=True)
class LinkView:
    """What one subscriber's link says, about once a second."""

    budget: float | None  # bits/s this stream may take; None: nothing limits it
    cap: float | None  # of which a hard limit (a facility's cap, loss): never exceeded
    remb: int | None  # the subscriber's estimate; None: it sends none
    congested: bool
    lossy: bool  # loss above LOSS_HIGH in its latest report
    clean: bool  # loss below LOSS_LOW
    rtt: float | None = None  # seconds, the latest round trip measured; None: not yet


@dataclass
class LayerChoice:
    """One subscriber's place on the ladder, with its trial and back-off state."""

    steps: list[Step]
    step: int
    hold_s: float = UP_HOLD_S
    calm_since: float | None = None
    trial_until: float = 0.0
    probe_until: float = 0.0  # a probe of the next step runs until then
    probe_remb: int = 0  # the REMB when it began
    probe_rtt: float | None = None  # the round trip when it began
    probe_failed_at: float = float("-inf")
    stepped_down_at: float = float("-inf")

    @property
    def current(self) -> Step:
        return self.steps[self.step]

    def probe_rate(self, rates: list[float]) -> float:
        """Bits/s the probe adds to the current step: what the next would add."""
        if not self.probe_until or self.step + 1 >= len(self.steps):
            return 0.0
        return step_rate(self.steps[self.step + 1], rates) - step_rate(self.current, rates)

    def decide(self, now: float, link: LinkView, rates: list[float], top_step: int) -> Step:
        """The step to be on now. ``rates``: each spatial layer's bitrate; ``top_step``:
        the highest step the tile and the flowing layers allow."""
        if self.step > top_step or link.budget is None:  # nothing limits it: the top
            self.step = top_step
            self.calm_since = None
        if self.probe_until:
            if self.step < top_step:
                self._probe(now, link, rates)
                return self.current
            self.probe_until = 0.0
        over_cap = link.cap is not None and step_rate(self.current, rates) > link.cap
        strained = (
            (link.congested or link.lossy)
            and not self.probe_aftermath(now)
            and not self._down_aftermath(now, link, rates)
        )
        if strained:
            self._step_down(now, link.budget, rates)
        elif over_cap and self.step > 0:
            # Only the hard limit: an estimate that is not strained may still be growing
            # (one just begun says little more than what has arrived so far).
            self._step_down(now, link.cap, rates)
        elif self.step < top_step and link.clean:
            self._maybe_step_up(now, link, rates)
        else:
            self.calm_since = None
        if self.trial_until and now > self.trial_until:
            self.trial_until = 0.0  # the last step up held
            self.hold_s = UP_HOLD_S
        return self.current

    def _step_down(self, now: float, budget: float | None, rates: list[float]) -> None:
        """At least one step down, and on to the highest step within ``budget``."""
        self.calm_since = None
        if self.trial_until and now <= self.trial_until:
            self.hold_s = min(self.hold_s * 2, MAX_HOLD_S)
            self.trial_until = 0.0
        target = self.step - 1
        if budget is not None:
            while target > 0 and step_rate(self.steps[target], rates) > budget:
                target -= 1
        self.step = max(0, target)
        self.stepped_down_at = now

    def down_aftermath(self, now: float) -> bool:
        """Whether loss seen now is the larger step's, just left."""
        return now - self.stepped_down_at < DOWN_AFTERMATH_S

    def _down_aftermath(self, now: float, link: LinkView, rates: list[float]) -> bool:
        """Whether loss or congestion seen now is the larger step's, just left, and the
        step it is on fits the estimate."""
        fits = link.budget is None or step_rate(self.current, rates) <= link.budget
        return fits and self.down_aftermath(now)

    def _probe(self, now: float, link: LinkView, rates: list[float]) -> None:
        """A probe runs: loss, the estimate falling below where it began or the round
        trip growing stops it (the padding was the cause, so the step stays); the
        estimate grown, room for the step, or a probe that lasted its time without
        either takes the step."""
        remb = link.remb or 0
        room = link.budget is None or step_rate(self.steps[self.step + 1], rates) <= link.budget
        queueing = (
            link.rtt is not None
            and self.probe_rtt is not None
            and link.rtt > self.probe_rtt + PROBE_QUEUE_S
        )
        if link.lossy or remb < self.probe_remb or queueing:
            self._probe_failed(now)
        elif remb >= self.probe_remb * PROBE_GROWTH or room or now >= self.probe_until:
            self.probe_until = 0.0
            self.step += 1
            self.trial_until = now + TRIAL_S

    def _probe_failed(self, now: float) -> None:
        self.probe_until = 0.0
        self.probe_failed_at = now
        self.hold_s = min(self.hold_s * 2, MAX_HOLD_S)

    def probe_aftermath(self, now: float) -> bool:
        """Whether loss or congestion seen now is a probe's doing (one runs or just
        failed)."""
        return bool(self.probe_until) or now - self.probe_failed_at < PROBE_AFTERMATH_S

    def _maybe_step_up(self, now: float, link: LinkView, rates: list[float]) -> None:
        if link.cap is not None and step_rate(self.steps[self.step + 1], rates) > link.cap:
            self.calm_since = None
            return  # no trial above a hard limit
        if self.calm_since is None:
            self.calm_since = now
        fits = link.budget is None or step_rate(self.steps[self.step + 1], rates) <= link.budget
        if now - self.calm_since < (FIT_HOLD_S if fits else self.hold_s):
            return
        self.calm_since = None
        if link.remb is None:  # nothing to probe with: straight up
            self.step += 1
        else:
            self.probe_until = now + PROBE_S
            self.probe_remb = link.remb
            self.probe_rtt = link.rtt


def link_view(
    remb: int | None, leg_sent: float, own_sent: float, limits: list[int], loss: float,
    rising: bool = False, soft: list[int] = (), rtt: float | None = None,
) -> LinkView:  # fmt: skip
    """A subscriber's link as its REMB (for its whole leg), the leg's and this stream's
    sent rates (bits/s), its hard limits (its facility's cap), its soft ones (its
    loss-based limit, which a probe may prove wrong), its latest reported loss and
    round trip say. A REMB under what is sent means congestion only when it is not growing
    (``rising``: it went up lately): while what is sent ramps up, an estimate that
    grows a few percent a second lags far behind it."""
    budgets = [float(limit) for limit in limits]
    cap = min(budgets) if budgets else None
    budgets += [float(limit) for limit in soft]
    congested = False
    if remb is not None and leg_sent > 0:
        budgets.append(max(0.0, remb - (leg_sent - own_sent)))
        congested = remb < CONGESTED * leg_sent and not rising
    budget = min(budgets) if budgets else None
    return LinkView(budget, cap, remb, congested, loss > LOSS_HIGH, loss < LOSS_LOW, rtt)
