"""Reading the record store: a consult as it was last recorded, its history, the
past consults someone may see, the recordings indexed for it. Every read opens the
sealed record with the consult's data key; a consult whose key was shredded is
gone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from recordings.crypto import TamperedError

from ..auth import Principal
from ..logs import get_logger
from ..model import CONSULT_TERMINAL_STATES, Consult
from .schema import consult_history, consults, recordings
from .sealing import KeyShredded, Sealing

log = get_logger()
PAGE = 100


class HistoryEntry(msgspec.Struct, frozen=True):
    version: int
    state: str
    at: float


class RecordingEntry(msgspec.Struct, frozen=True):
    id: str
    session_id: str
    state: str
    started_at: float | None
    ended_at: float | None
    duration_s: float | None


def scope(who: Principal) -> Any:
    """The consults ``who`` may read in the record store: a referrer its
    facility's, a specialist its own, a supervisor or admin its organisation's."""
    if who.role == "referrer":
        return and_(consults.c.facility == (who.facility or ""),
                    consults.c.organisation == who.organisation)  # fmt: skip
    if who.role == "specialist":  # a sub is its organisation's: both must match
        return and_(consults.c.specialist_sub == who.sub,
                    consults.c.specialist_organisation == who.organisation)  # fmt: skip
    if who.is_overseer:
        return or_(consults.c.organisation == who.organisation,
                   consults.c.specialist_organisation == who.organisation)  # fmt: skip
    return consults.c.id.is_(None)


class RecordReader:
    def __init__(self, engine: AsyncEngine, sealing: Sealing) -> None:
        self.engine = engine
        self.sealing = sealing

    async def _open(self, conn: AsyncConnection, row: Any) -> Consult | None:
        try:
            data = await self.sealing.open(conn, row.id, "consult", row.version, row.sealed)
        except KeyShredded:
            return None
        except TamperedError:
            log.error("records.consult_tampered", consult_id=row.id)
            return None
        return msgspec.json.decode(data, type=Consult)

    async def consult(self, consult_id: str, who: Principal | None = None) -> Consult | None:
        """The consult's last recorded version (None: unknown, not ``who``'s to read,
        or shredded)."""
        query = select(consults).where(consults.c.id == consult_id)
        if who is not None:
            query = query.where(scope(who))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
            return None if row is None else await self._open(conn, row)

    async def consults(self, who: Principal, *, patient_ref: str | None = None,
                       ended_only: bool = True, before: float | None = None,
                       limit: int = PAGE) -> list[Consult]:  # fmt: skip
        """``who``'s consults, newest first: ended or cancelled ones by default."""
        query = select(consults).where(scope(who))
        if ended_only:
            query = query.where(consults.c.state.in_([s.value for s in CONSULT_TERMINAL_STATES]))
        if patient_ref is not None:
            query = query.where(consults.c.patient_ref == patient_ref)
        if before is not None:
            query = query.where(consults.c.created_at < before)
        query = query.order_by(consults.c.created_at.desc(), consults.c.id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            found = [await self._open(conn, row) for row in rows]
        return [c for c in found if c is not None]

    async def history(self, consult_id: str) -> list[HistoryEntry]:
        query = (select(consult_history.c.version, consult_history.c.state, consult_history.c.at)
                 .where(consult_history.c.consult_id == consult_id)
                 .order_by(consult_history.c.version))  # fmt: skip
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [HistoryEntry(r.version, r.state, r.at) for r in rows]

    async def recording_consult(self, recording_id: str) -> str | None:
        query = select(recordings.c.consult_id).where(
            recordings.c.id == recording_id, recordings.c.deleted_at.is_(None)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def recordings(self, consult_ids: Sequence[str]) -> dict[str, list[RecordingEntry]]:
        query = select(recordings).where(recordings.c.consult_id.in_(list(consult_ids)),
                                         recordings.c.deleted_at.is_(None))  # fmt: skip
        found: dict[str, list[RecordingEntry]] = {}
        async with self.engine.connect() as conn:
            for r in (await conn.execute(query.order_by(recordings.c.started_at))).all():
                entry = RecordingEntry(r.id, r.session_id, r.state, r.started_at, r.ended_at,
                                       r.duration_s)  # fmt: skip
                found.setdefault(r.consult_id, []).append(entry)
        return found
