"""``Records``: a node's way to the record store. State changes and audit events
go in through the durable outbox (``put`` is synchronous: the entry is in this
node's journal when it returns); reads come straight from the database."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from recordings.keyring import Keyring

from ..logs import get_logger, screen_fields
from ..model import Consult, ConsultState
from . import chain
from .database import DatabaseUnavailable, migrate, open_engine, transient
from .entries import AuditEvent, ConsultChanged, Entry, FhirPush, RecordingIndexed
from .outbox import Outbox
from .push import FhirPusher
from .reader import RecordReader
from .sealing import Sealing
from .writer import RecordWriter

log = get_logger()
OUTBOX_LABEL = "outbox"


class Records:
    def __init__(
        self, url: str, keyring: Keyring, *, node: str, outbox_dir: Path, clock=time.time,
        fhir_push: tuple[str, str | None] | None = None, password: str | None = None,
    ) -> None:
        """``fhir_push``: the hospital's FHIR server (base URL, bearer token or None)."""
        self.url = url
        self.keyring = keyring
        self.node = node
        self.clock = clock
        self.engine = open_engine(url, password=password)
        self.sealing = Sealing(keyring)
        self.writer = RecordWriter(self.engine, self.sealing, self.chain_key)
        self.reader = RecordReader(self.engine, self.sealing)
        self.outbox = Outbox(outbox_dir, node, self._outbox_key, self.writer.apply, self._ping)
        self.pusher, self.push_outbox = None, None
        if fhir_push is not None:  # the hospital's FHIR server: an outbox of its own
            self.pusher = FhirPusher(fhir_push[0], fhir_push[1], self.reader)
            self.push_outbox = Outbox(outbox_dir / "fhir", node, self._outbox_key,
                                      self.pusher.apply)  # fmt: skip
        self.migrated = False
        self._chain: bytes | None = None
        self._task: asyncio.Future | None = None
        self._push_task: asyncio.Future | None = None

    def chain_key(self, key_id: str | None) -> tuple[str, bytes]:
        """The audit chain's key (a random key kept wrapped in ``record_keys``, so
        a rotation of the master key keeps every entry verifiable)."""
        if self._chain is None:
            raise DatabaseUnavailable("the audit chain's key is not loaded yet")
        if key_id not in (None, chain.KEY_ID):
            raise LookupError(f"no audit chain key {key_id}")
        return chain.KEY_ID, self._chain

    async def _ready(self) -> None:
        await migrate(self.engine)
        self._chain = await self.sealing.shared_key(self.engine, chain.KEY_ID)
        self.migrated = True
        self.outbox.database_up = True

    async def _ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def _outbox_key(self, key_id: str | None) -> tuple[str, bytes]:
        return key_id or self.keyring.master_key_id, self.keyring.derived(OUTBOX_LABEL, key_id)

    # in --------------------------------------------------------------------------
    def put(self, entry: Entry) -> None:
        self.outbox.put(entry)

    def consult_changed(self, consult: Consult) -> None:
        now = self.clock()
        self.put(ConsultChanged(consult=consult, at=now))
        finished = consult.report is not None or consult.state == ConsultState.CANCELLED
        if self.push_outbox is not None and finished:
            self.push_outbox.put(FhirPush(consult_id=consult.id, at=now, consult=consult))

    def recording_indexed(self, **fields: Any) -> None:
        self.put(RecordingIndexed(**fields))

    def audit(self, event: str, actor: dict[str, Any] | None, fields: dict[str, Any]) -> None:
        """An audit event, its free text screened as the log lines are."""
        screened = screen_fields(fields)
        actor_field = screened.pop("actor", None)
        if actor is None and isinstance(screened.get("by"), dict):
            actor = screened["by"]
        self.put(AuditEvent(
            id="e_" + secrets.token_hex(12), at=self.clock(), event=event, node=self.node,
            actor=screen_fields(actor) if actor else actor_field, fields=screened,
        ))  # fmt: skip

    def register_metrics(self, registry) -> None:  # noqa: ANN001 - prometheus' registry
        from prometheus_client import Counter, Gauge

        backlog = Gauge("jisr_records_outbox_backlog",
                        "entries in this node's outbox not yet in the record store",
                        registry=registry)  # fmt: skip
        backlog.set_function(lambda: self.outbox.backlog)
        up = Gauge("jisr_records_database_up",
                   "1 while the record store takes this node's writes", registry=registry)
        up.set_function(lambda: 1.0 if self.outbox.database_up else 0.0)
        rejected = Counter("jisr_records_outbox_rejected",
                           "outbox entries that could never be applied", registry=registry)
        self.outbox.on_reject = rejected.inc

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` tells about the record store."""
        up = self.outbox.database_up
        status = {"database": "up" if up else ("down" if up is False else "starting"),
                  "backlog": self.outbox.backlog}  # fmt: skip
        if self.push_outbox is not None:
            status["fhir_push_backlog"] = self.push_outbox.backlog
        return status

    # life --------------------------------------------------------------------------
    async def start(self, wait_s: float = 10.0) -> None:
        """Migrate now when the database answers within ``wait_s`` (reads then work
        from the first request); otherwise keep trying in the background."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ready(), wait_s)
        self._task = asyncio.ensure_future(self.run())
        if self.push_outbox is not None:
            self._push_task = asyncio.ensure_future(self.push_outbox.run())

    async def run(self) -> None:
        """Migrate (waiting for the database if it is down), then apply the outbox."""
        delay = 0.2
        while not self.migrated:
            try:
                await self._ready()
            except Exception as exc:
                if not transient(exc) and not isinstance(exc, DatabaseUnavailable):
                    # a master key that does not open the record store's keys, say
                    log.error("records.unavailable", error_type=type(exc).__name__)
                    raise
                self.outbox.database_up = False
                log.warning("records.migration_waiting", error_type=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        await self.outbox.run()

    async def close(self, drain_s: float = 2.0) -> None:
        """Give the outbox ``drain_s`` to finish, then let go (what is left stays in
        the journal for the next start)."""
        if self.migrated and self._task is not None and not self._task.done():
            await self.outbox.drained(drain_s)
        for task in (self._task, self._push_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.outbox.close()
        if self.push_outbox is not None:
            self.push_outbox.close()
        await self.engine.dispose()
