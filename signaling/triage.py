"""Triage that cannot lose a critical case: on-call presence, deadlines per
urgency, re-announcement at half the deadline, escalation at the deadline, and
the figures a supervisor watches.

Deadlines live in the store (``schedule``/``claim_due``), so they survive
restarts and any node acts on them exactly once; every node ticks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .logs import Audit, get_logger
from .model import (
    Consult,
    ConsultChange,
    ConsultEscalated,
    ConsultReannounced,
    ConsultState,
    ConsultUpdated,
    PresenceInfo,
    Urgency,
)
from .store import LiveState, NotFound, StoreUnavailable, TransitionRefused

log = get_logger()

PRESENCE = ("available", "busy", "off")
PRESENCE_TTL_S = 30.0  # pages refresh every 10 s; a closed page is off within 30 s
SECONDS_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """Prometheus figures of one node (its own registry: several nodes can share a
    process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("urgency", "specialty")
        self.time_to_accept = Histogram(
            "jisr_time_to_accept_seconds", "From referral to a specialist's accept.",
            labels, buckets=SECONDS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.time_to_media = Histogram(
            "jisr_time_to_first_media_seconds",
            "From referral to both participants' media connected.",
            labels, buckets=SECONDS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.escalations = Counter(
            "jisr_escalations", "Consults escalated at their deadline.", labels,
            registry=self.registry,
        )  # fmt: skip
        self.consults = Gauge(
            "jisr_consults", "Open consults by state and urgency.", ("state", "urgency"),
            registry=self.registry,
        )  # fmt: skip


class Triage:
    def __init__(
        self,
        state: LiveState,
        audit: Audit,
        *,
        deadlines: dict[Urgency, float],
        escalation: dict[str, list[str]],
        clock: Callable[[], float] = time.time,
        tick_s: float = 0.5,
    ) -> None:
        self.tick_s = tick_s
        self.state = state
        self.audit = audit
        self.deadlines = deadlines
        self.escalation = escalation
        self.clock = clock
        self.metrics = Metrics()

    # presence -------------------------------------------------------------
    async def set_presence(self, who, status: str) -> None:
        info = PresenceInfo(
            status=status, name=who.name, specialties=list(who.specialties), at=self.clock(),
            organisation=who.organisation,
        )  # fmt: skip
        await self.state.set_presence(who.sub, info, PRESENCE_TTL_S)

    # deadlines ------------------------------------------------------------
    async def consult_created(self, consult: Consult) -> None:
        deadline = self.deadlines[consult.urgency]
        created = consult.created_at
        await self.state.schedule(f"reannounce:{consult.id}", created + deadline / 2)
        await self.state.schedule(f"escalate:{consult.id}", created + deadline)

    async def consult_taken(self, consult: Consult) -> None:
        """Accepted or cancelled: nothing left to chase."""
        await self.state.unschedule(f"reannounce:{consult.id}")
        await self.state.unschedule(f"escalate:{consult.id}")
        if consult.accepted_at:
            self.metrics.time_to_accept.labels(consult.urgency, consult.specialty).observe(
                consult.accepted_at - consult.created_at
            )

    async def tick(self) -> list[str]:
        """Act on every deadline that fell due; returns what was done."""
        done = []
        for item in await self.state.claim_due(self.clock()):
            action, _, consult_id = item.partition(":")
            consult = await self.state.get_consult(consult_id)
            if consult is None or consult.state != ConsultState.WAITING:
                continue
            if action == "reannounce":
                await self._reannounce(consult)
            elif action == "escalate":
                await self._escalate(consult)
            done.append(item)
        return done

    async def _reannounce(self, consult: Consult) -> None:
        consult = await self.state.change_consult(
            consult.id, ConsultChange.UPDATE_WAITING, reannounced_at=self.clock()
        )
        self.audit.record("consult.reannounced", None, consult_id=consult.id,
                          urgency=consult.urgency)  # fmt: skip
        await self.state.publish(ConsultReannounced(consult=consult))

    async def _escalate(self, consult: Consult) -> None:
        offered = self.escalation.get(consult.specialty, [])
        consult = await self.state.change_consult(
            consult.id, ConsultChange.UPDATE_WAITING, escalated_at=self.clock(),
            offered_to=offered,
        )  # fmt: skip
        self.metrics.escalations.labels(consult.urgency, consult.specialty).inc()
        self.audit.record("consult.escalated", None, consult_id=consult.id,
                          urgency=consult.urgency, offered_to=offered)  # fmt: skip
        await self.state.publish(ConsultUpdated(consult=consult))
        await self.state.publish(ConsultEscalated(consult=consult))

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StoreUnavailable:
                pass  # deadlines wait in the store; the next tick catches up
            except (TransitionRefused, NotFound):
                pass
            except Exception:  # noqa: BLE001 - the scheduler must keep going
                log.exception("triage.tick_failed")
            await asyncio.sleep(self.tick_s)

    # figures ---------------------------------------------------------------
    async def refresh_gauges(self) -> None:
        gauge = self.metrics.consults
        gauge.clear()
        for consult in await self.state.list_consults():
            gauge.labels(consult.state, consult.urgency).inc()
