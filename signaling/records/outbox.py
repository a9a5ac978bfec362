"""The durable outbox: every change bound for the record store goes into this
node's journal first (``journal``), and one task applies the journal to the
record store in order, a batch per transaction. While the database is down the
task retries the same batch (backing off to ``MAX_BACKOFF_S``) and the journal
grows; ``/readyz`` and ``/metrics`` show the backlog. Nothing is skipped but an
entry that can never be applied (altered on disk, or refused as invalid), and
that is logged and counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from ..logs import get_logger
from .database import transient
from .entries import Entry, decode_entry, encode_entry
from .journal import Journal, adopt

log = get_logger()
BATCH = 200
MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
SYNC_INTERVAL_S = 1.0
IDLE_PROBE_S = 5.0  # with nothing to write, the database is asked this often
PROBE_TIMEOUT_S = 5.0

Apply = Callable[[list[Entry]], Awaitable[None]]
Probe = Callable[[], Awaitable[None]]
KeyFor = Callable[[str | None], tuple[str, bytes]]


class Outbox:
    def __init__(
        self, folder: Path, node: str, key_for: KeyFor, apply: Apply, probe: Probe | None = None
    ) -> None:
        """``probe``: asks the database whether it answers (raises if not), while there
        is nothing to write."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder = folder
        self._key_for = key_for
        try:
            self.journal = Journal(folder / f"{node}.journal", key_for)
        except BlockingIOError:
            raise RuntimeError(
                f"another running node holds {folder / node}.journal: two nodes with the "
                f"node id {node!r} share the data folder {folder.parent}"
            ) from None
        self._adopted: list[Journal] = adopt(folder, key_for, self.journal.path)
        self._apply = apply
        self._probe = probe
        self._wake = asyncio.Event()
        self.database_up: bool | None = None  # None: not tried yet
        self.rejected = 0  # entries that could never be applied
        self.on_reject: Callable[[], None] | None = None
        self.applied = 0

    @property
    def backlog(self) -> int:
        return self.journal.backlog + sum(j.backlog for j in self._adopted)

    def put(self, entry: Entry) -> None:
        """Journal ``entry`` (synchronously: it is on disk when this returns)."""
        self.journal.append(encode_entry(entry))
        self._wake.set()

    async def run(self) -> None:
        syncing = asyncio.ensure_future(self._sync_each_second())
        try:
            await self._apply_forever()
        finally:
            syncing.cancel()

    async def _sync_each_second(self) -> None:
        """What was journalled is on the disk within a second: a power cut loses at
        most that (a crash of the process loses nothing)."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            if self.journal.unsynced:
                with contextlib.suppress(OSError):  # closed meanwhile: nothing to keep
                    await asyncio.to_thread(self.journal.sync)

    async def _apply_forever(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            journal = self._adopted[0] if self._adopted else self.journal
            batch = journal.read(BATCH)
            if not batch:
                if journal is not self.journal:
                    self._adopted.pop(0).close(remove=True)
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_PROBE_S)
                except TimeoutError:
                    await self._probe_idle()
                continue
            try:
                await self._apply_batch(batch)
            except Exception as exc:
                if not transient(exc):
                    raise
                self._down(exc)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = MIN_BACKOFF_S
            journal.ack(batch[-1][0], len(batch))
            self.applied += len(batch)
            self._up()

    async def _probe_idle(self) -> None:
        """Nothing to write for a while: ask the database anyway, so that /readyz says
        it is down before the next change finds out."""
        if self._probe is None:
            return
        try:
            await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the database did not answer
            self._down(exc)
            return
        self._up()

    def _up(self) -> None:
        if self.database_up is not True:
            log.info("records.database_available", backlog=self.backlog)
        self.database_up = True

    def _down(self, exc: BaseException) -> None:
        if self.database_up is not False:
            log.warning("records.database_unavailable", error_type=type(exc).__name__,
                        backlog=self.backlog)  # fmt: skip
        self.database_up = False

    async def _apply_batch(self, batch: list[tuple[int, bytes | None]]) -> None:
        entries: list[Entry] = []
        for _, data in batch:
            entry = self._decode(data)
            if entry is not None:
                entries.append(entry)
        if not entries:
            return
        try:
            await self._apply(entries)
        except Exception as exc:
            if transient(exc):
                raise
            if len(entries) == 1:
                self._reject("refused", exc)
                return
            for entry in entries:  # find the entry the store refuses; apply the rest
                try:
                    await self._apply([entry])
                except Exception as one:
                    if transient(one):
                        raise
                    self._reject("refused", one)

    def _decode(self, data: bytes | None) -> Entry | None:
        if data is None:
            self._reject("unreadable", None)
            return None
        try:
            return decode_entry(data)
        except msgspec.ValidationError as exc:
            self._reject("invalid", exc)
            return None

    def _reject(self, reason: str, exc: BaseException | None) -> None:
        self.rejected += 1
        if self.on_reject is not None:
            self.on_reject()
        log.error("records.outbox_rejected", reason=reason,
                  error_type=type(exc).__name__ if exc else None)  # fmt: skip

    async def drained(self, timeout_s: float) -> bool:
        """Wait until every entry is applied (False if ``timeout_s`` passes first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.backlog:
            if loop.time() >= deadline:
                return False
            self._wake.set()
            await asyncio.sleep(0.02)  # polling interval while the task applies
        return True

    def close(self) -> None:
        self.journal.close()
        for journal in self._adopted:
            journal.close()
