"""The audit trail as admins query it: by patient reference, consult, actor and
time, within their organisation (entries by its people, and entries about
consults it oversees); in pages of entries after a sequence number."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .schema import audit_entries, consults

PAGE = 200


class TrailQuery(msgspec.Struct, frozen=True, kw_only=True):
    organisation: str
    patient_ref: str | None = None
    consult_id: str | None = None
    actor: str | None = None
    since: float | None = None
    until: float | None = None
    after: int = 0  # sequence number: the next page
    limit: int = PAGE


class TrailEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    id: str
    at: float
    event: str
    node: str
    actor: dict[str, Any] | None
    consult_id: str | None
    session_id: str | None
    patient_ref: str | None
    fields: dict[str, Any]
    hash: str
    prev_hash: str


def _entry(row: Any) -> TrailEntry:
    body = msgspec.json.decode(row.body)
    actor = body.pop("actor", None)
    return TrailEntry(
        seq=row.seq, id=row.entry_id, at=row.at, event=row.event, node=row.node, actor=actor,
        consult_id=row.consult_id, session_id=row.session_id, patient_ref=row.patient_ref,
        fields=body, hash=row.hash, prev_hash=row.prev_hash,
    )  # fmt: skip


async def search(engine: AsyncEngine, query: TrailQuery) -> list[TrailEntry]:
    overseen = select(consults.c.id).where(or_(
        consults.c.organisation == query.organisation,
        consults.c.specialist_organisation == query.organisation,
    ))  # fmt: skip
    sql = select(audit_entries).where(
        audit_entries.c.seq > query.after,
        or_(audit_entries.c.organisation == query.organisation,
            audit_entries.c.consult_id.in_(overseen)),
    )  # fmt: skip
    if query.patient_ref is not None:
        sql = sql.where(audit_entries.c.patient_ref == query.patient_ref)
    if query.consult_id is not None:
        sql = sql.where(audit_entries.c.consult_id == query.consult_id)
    if query.actor is not None:
        sql = sql.where(audit_entries.c.actor_sub == query.actor)
    if query.since is not None:
        sql = sql.where(audit_entries.c.at >= query.since)
    if query.until is not None:
        sql = sql.where(audit_entries.c.at < query.until)
    sql = sql.order_by(audit_entries.c.seq).limit(query.limit)
    async with engine.connect() as conn:
        return [_entry(row) for row in (await conn.execute(sql)).all()]
