"""The audit trail's hash chain. Entries are numbered without gaps (``seq``); each
carries the hash of the one before it and its own hash, an HMAC-SHA256 over its
number, its previous hash and every column it has, under the chain's key: a random
key kept in ``record_keys`` wrapped by the master key (so only a holder of the
master key can use it, and a rotation of the master key rewraps it). The head row
names the last entry, marked under the same key. Whoever holds only the database
can neither rebuild a hash after editing an entry nor move the head back after
removing the last ones: ``verify`` names every entry changed, removed or put out of
place."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .schema import audit_entries, audit_head

GENESIS = "0" * 64
KEY_ID = "audit-chain"  # its row in record_keys, and every entry's key_id
HASHED = ("seq", "entry_id", "at", "event", "node", "actor_sub", "actor_role", "organisation",
          "consult_id", "session_id", "patient_ref", "body", "key_id", "prev_hash")  # fmt: skip

KeyFor = Callable[[str | None], tuple[str, bytes]]  # key id (None: current) -> (id, key)


def entry_hash(key: bytes, row: dict[str, Any]) -> str:
    message = msgspec.json.encode([row[name] for name in HASHED])
    return hmac.new(key, b"jisr.audit.entry\0" + message, hashlib.sha256).hexdigest()


def head_mark(key: bytes, seq: int, last_hash: str) -> str:
    message = f"jisr.audit.head\0{seq}\0{last_hash}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def append(conn: AsyncConnection, key_for: KeyFor, row: dict[str, Any]) -> int:
    """Append ``row`` (every column but seq, key_id, prev_hash and hash) after the
    head, in the caller's transaction; the head row is locked until it ends, so
    nodes appending at once take turns. Returns its seq."""
    head = (await conn.execute(
        select(audit_head).where(audit_head.c.id == 1).with_for_update()
    )).first()  # fmt: skip
    key_id, key = key_for(None)
    seq, prev = (head.seq + 1, head.hash) if head is not None else (1, GENESIS)
    full = {**row, "seq": seq, "key_id": key_id, "prev_hash": prev}
    full["hash"] = entry_hash(key, full)
    await conn.execute(insert(audit_entries).values(**full))
    values = {"seq": seq, "hash": full["hash"], "key_id": key_id,
              "mark": head_mark(key, seq, full["hash"])}  # fmt: skip
    if head is None:
        await conn.execute(insert(audit_head).values(id=1, **values))
    else:
        await conn.execute(update(audit_head).where(audit_head.c.id == 1).values(**values))
    return seq


class Problem(msgspec.Struct, frozen=True):
    seq: int
    entry_id: str | None
    kind: str  # altered | missing | out_of_order | unverifiable | head
    message: str


class ChainReport(msgspec.Struct):
    entries: int = 0
    problems: list[Problem] = []

    @property
    def ok(self) -> bool:
        return not self.problems


async def _rows(engine: AsyncEngine, page: int = 2000) -> AsyncIterator[Any]:
    after = 0
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(audit_entries).where(audit_entries.c.seq > after)
                .order_by(audit_entries.c.seq).limit(page)
            )).all()  # fmt: skip
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1].seq


def _key(key_for: KeyFor, key_id: str) -> bytes | None:
    try:
        return key_for(key_id)[1]
    except Exception:  # noqa: BLE001 - a master key not held: that entry is unverifiable
        return None


async def verify(engine: AsyncEngine, key_for: KeyFor) -> ChainReport:
    """Every entry, in order: its number, its link to the one before, its hash;
    then the head. Each problem names the entry."""
    report = ChainReport()
    expected, prev = 1, GENESIS
    async for row in _rows(engine):
        report.entries += 1
        data = row._asdict()
        key = _key(key_for, row.key_id)
        if row.seq > expected:
            report.problems.append(Problem(expected, None, "missing", (
                f"entries {expected}..{row.seq - 1} are missing" if row.seq - 1 > expected
                else f"entry {expected} is missing")))  # fmt: skip
        if key is None:
            message = f"entry {row.seq} is under master key {row.key_id}, which is not held"
            report.problems.append(Problem(row.seq, row.entry_id, "unverifiable", message))
        elif not hmac.compare_digest(entry_hash(key, data), row.hash):
            report.problems.append(Problem(row.seq, row.entry_id, "altered",
                f"entry {row.seq} ({row.entry_id}) was altered or moved: its hash does not "
                "match its content and place"))  # fmt: skip
        elif row.prev_hash != prev and row.seq == expected:
            message = f"entry {row.seq} ({row.entry_id}) does not follow entry {row.seq - 1}"
            report.problems.append(Problem(row.seq, row.entry_id, "out_of_order", message))
        expected, prev = row.seq + 1, row.hash
    await _check_head(engine, key_for, report, expected - 1, prev)
    return report


async def _check_head(engine: AsyncEngine, key_for: KeyFor, report: ChainReport,
                      last: int, last_hash: str) -> None:  # fmt: skip
    async with engine.connect() as conn:
        head = (await conn.execute(select(audit_head).where(audit_head.c.id == 1))).first()
    if head is None:
        if last:
            report.problems.append(Problem(last, None, "head", "the chain's head is missing"))
        return
    key = _key(key_for, head.key_id)
    if key is None or not hmac.compare_digest(head_mark(key, head.seq, head.hash), head.mark):
        report.problems.append(Problem(head.seq, None, "head", "the chain's head was altered"))
    elif head.seq > last:
        report.problems.append(Problem(last + 1, None, "missing", (
            f"entries {last + 1}..{head.seq} (the last ones) are missing")))  # fmt: skip
    elif head.seq < last or head.hash != last_hash:
        report.problems.append(Problem(head.seq, None, "head",
            f"the head names entry {head.seq}, but the chain ends at entry {last}"))  # fmt: skip
