"""What a node does for the recordings at rest while it runs: it verifies them on a
schedule (``JISR_RECORDING_VERIFY_INTERVAL_S``, recordings.verify) in a worker
thread, and writes the audit events ``jisr recordings`` commands journalled into its
own audit log (``JISR_RECORDING_TRAIL_RELAY_S``, recordings.trail). Figures go to
``/metrics``.

Nodes do not coordinate their passes: each verifies the recordings whose last
verification (by any node or command) is older than the interval, so two nodes may
now and then verify one recording twice, which is harmless (the newest outcome wins).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from recordings.vault import Vault
from recordings.verify import OK, TAMPERED, UNREADABLE, Summary, verify_many

from .logs import Audit, digest, get_logger

log = get_logger()
FIRST_PASS_S = 600.0  # the first verification waits this long after start (or one interval)


class VerifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.verified = Counter(
            "jisr_recordings_verified", "Recordings verified by this node, by result.",
            ("result",), registry=registry,
        )  # fmt: skip
        for result in (OK, TAMPERED, UNREADABLE):
            self.verified.labels(result)  # every result shows, at 0 until it happens
        self.last_run = Gauge(
            "jisr_recording_verify_last_run_timestamp_seconds",
            "When this node last finished a verification pass (Unix time; 0: never).",
            registry=registry,
        )
        self.tampered = Gauge(
            "jisr_recordings_tampered",
            "Recordings whose last verification failed, as of this node's last pass.",
            registry=registry,
        )
        self.relayed = Counter(
            "jisr_recording_trail_relayed",
            "Audit events of `jisr recordings` commands written to this node's audit log.",
            registry=registry,
        )


class RecordingChecks:
    """The verification schedule and the relay of commands' audit events."""

    def __init__(
        self,
        vault: Vault | None,
        audit: Audit,
        registry: CollectorRegistry,
        *,
        interval_s: float,
        relay_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.audit = audit
        self.metrics = VerifyMetrics(registry)
        self.interval_s = interval_s
        self.relay_s = relay_s
        self.clock = clock
        self.passes = {"verify": 0, "relay": 0}  # passes finished since start
        self._changed = asyncio.Event()

    # verifying -----------------------------------------------------------------

    def due(self, record: dict, now: float) -> bool:
        """Never verified, verified longer than an interval ago, or segments added
        since."""
        check = record.get("verification")
        if not check or record.get("state") == "unreadable":
            return True
        stale = check["verified_at"] + self.interval_s <= now
        return stale or check.get("segments") != record.get("segments")

    def _still_due(self, recording_id: str) -> bool:
        assert self.vault is not None
        try:
            return self.due(self.vault.get(recording_id), self.clock())
        except Exception:  # noqa: BLE001 - verify says what is wrong with it
            return True

    def verify_pass(self) -> Summary:
        """One pass over the recordings that are due (runs in a worker thread). The
        order is shuffled and each is checked again just before, so nodes (or
        workers) passing at the same time mostly share the work."""
        assert self.vault is not None
        records = self.vault.list()
        now = self.clock()
        tampered = {r["recording_id"] for r in records if r["state"] == TAMPERED}
        due = [r["recording_id"] for r in records if self.due(r, now)]
        random.shuffle(due)
        summary = verify_many(
            self.vault, (i for i in due if self._still_due(i)), audit=self.audit.recording_event,
            repeat_ok=False, by="schedule",
        )  # fmt: skip
        for check in summary.verified:
            self.metrics.verified.labels(check.result).inc()
            if check.result == TAMPERED:
                tampered.add(check.recording_id)
            elif check.result == OK:
                tampered.discard(check.recording_id)
        self.metrics.tampered.set(len(tampered))
        self.metrics.last_run.set(self.clock())
        if summary.verified:
            log.info(
                "recordings.verified", ok=summary.count(OK), tampered=summary.count(TAMPERED),
                unreadable=summary.count(UNREADABLE),
            )  # fmt: skip
        return summary

    async def verify_loop(self) -> None:
        if self.vault is None or not self.interval_s:
            return
        await asyncio.sleep(min(self.interval_s, FIRST_PASS_S))
        while True:
            try:
                await asyncio.to_thread(self.verify_pass)
            except Exception:  # noqa: BLE001 - a bad recording must not stop the schedule
                log.exception("recordings.verify_failed")
            self._finished("verify")
            await asyncio.sleep(self.interval_s)

    # relaying commands' events ---------------------------------------------------

    def relay_pass(self) -> int:
        assert self.vault is not None
        count = self.vault.trail.relay(self._relayed)
        self.metrics.relayed.inc(count)
        return count

    def _relayed(self, event: str, fields: dict[str, Any]) -> None:
        reason = fields.get("reason")
        if isinstance(reason, str):  # a command's --reason is free text
            fields["reason"] = digest(reason)
        self.audit.recording_event(event, **fields, relayed=True)

    async def relay_loop(self) -> None:
        if self.vault is None:
            return
        while True:
            try:
                await asyncio.to_thread(self.relay_pass)
            except Exception:  # noqa: BLE001 - the relay must go on
                log.exception("recordings.relay_failed")
            self._finished("relay")
            await asyncio.sleep(self.relay_s)

    # waiting for a pass ------------------------------------------------------------

    def _finished(self, kind: str) -> None:
        self.passes[kind] += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def finished(self, kind: str, after: int) -> int:
        """Wait until pass number ``after`` + 1 of ``kind`` ("verify", "relay") has
        finished; how many have. Bound it with a timeout."""
        while self.passes[kind] <= after:
            await self._changed.wait()
        return self.passes[kind]
