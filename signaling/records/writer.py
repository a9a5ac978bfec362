"""Applying the outbox's entries to the record store, a batch per transaction:
a consult's versions (the latest as its record, each one in its history), its
report, the index of its attachments; audit events onto the chain; the index of
recordings. Every step is idempotent (an entry applied twice, by a node that
died before noting it, changes nothing the second time), and a consult's record
only moves forward in its version, whichever node's entry arrives first."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..model import Consult
from . import chain
from .entries import AuditEvent, ConsultChanged, Entry, RecordingIndexed
from .schema import attachments, audit_entries, consult_history, consults, recordings, reports
from .sealing import Sealing


def consult_columns(consult: Consult) -> dict[str, Any]:
    return {
        "version": consult.version, "state": consult.state.value,
        "organisation": consult.organisation,
        "specialist_organisation": consult.specialist_organisation,
        "facility": consult.facility, "referrer_sub": consult.referrer.sub,
        "specialist_sub": consult.specialist_sub, "patient_ref": consult.patient_ref,
        "specialty": consult.specialty, "urgency": consult.urgency.value,
        "session_id": consult.session_id, "created_at": consult.created_at,
        "ended_at": consult.ended_at or consult.cancelled_at,
    }  # fmt: skip


GONE = ("recording.deleted",)  # the vault's events after which a recording is no more


class RecordWriter:
    def __init__(self, engine: AsyncEngine, sealing: Sealing, key_for: chain.KeyFor) -> None:
        self.engine = engine
        self.sealing = sealing
        self.key_for = key_for

    async def apply(self, entries: list[Entry]) -> None:
        async with self.engine.begin() as conn:
            for entry in entries:
                if isinstance(entry, ConsultChanged):
                    await self._consult(conn, entry)
                elif isinstance(entry, AuditEvent):
                    await self._audit(conn, entry)
                elif isinstance(entry, RecordingIndexed):
                    await self._recording(conn, entry)

    async def _consult(self, conn: AsyncConnection, entry: ConsultChanged) -> None:
        consult = entry.consult
        data = msgspec.json.encode(consult)
        known = (await conn.execute(
            select(consults.c.version).where(consults.c.id == consult.id)
        )).first()  # fmt: skip
        seen = (await conn.execute(select(consult_history.c.version).where(
            consult_history.c.consult_id == consult.id,
            consult_history.c.version == consult.version,
        ))).first()  # fmt: skip
        if seen is None:
            await conn.execute(insert(consult_history).values(
                consult_id=consult.id, version=consult.version, state=consult.state.value,
                at=entry.at,
                sealed=await self.sealing.seal(conn, consult.id, "history", consult.version, data),
            ))  # fmt: skip
        if known is None or known.version < consult.version:
            sealed = await self.sealing.seal(conn, consult.id, "consult", consult.version, data)
            values = {**consult_columns(consult), "sealed": sealed}
            if known is None:
                await conn.execute(insert(consults).values(id=consult.id, **values))
            else:
                await conn.execute(update(consults).where(consults.c.id == consult.id)
                                   .values(**values))  # fmt: skip
        await self._report(conn, consult)
        await self._attachments(conn, consult)

    async def _report(self, conn: AsyncConnection, consult: Consult) -> None:
        report = consult.report
        if report is None:
            return
        known = (await conn.execute(
            select(reports.c.consult_id).where(reports.c.consult_id == consult.id)
        )).first()  # fmt: skip
        if known is not None:
            return
        sealed = await self.sealing.seal(conn, consult.id, "report", 0, msgspec.json.encode(report))
        await conn.execute(insert(reports).values(
            consult_id=consult.id, specialist_sub=report.specialist.sub,
            written_at=report.written_at, sha256=consult.report_sha256 or "", sealed=sealed,
        ))  # fmt: skip

    async def _attachments(self, conn: AsyncConnection, consult: Consult) -> None:
        if not consult.attachments:
            return
        known = set((await conn.execute(
            select(attachments.c.id).where(attachments.c.consult_id == consult.id)
        )).scalars())  # fmt: skip
        for item in consult.attachments:
            if item.id not in known:
                await conn.execute(insert(attachments).values(
                    id=item.id, consult_id=consult.id, content_type=item.content_type,
                    size=item.size, sha256=item.sha256, by_sub=item.by.sub, at=item.at,
                ))  # fmt: skip

    async def _audit(self, conn: AsyncConnection, entry: AuditEvent) -> None:
        known = (await conn.execute(
            select(audit_entries.c.seq).where(audit_entries.c.entry_id == entry.id)
        )).first()  # fmt: skip
        if known is not None:
            return
        actor = entry.actor or {}
        fields = entry.fields
        consult_id, session_id = _text(fields.get("consult_id")), _text(fields.get("session_id"))
        patient_ref, consult_id = await self._patient(conn, consult_id, session_id)
        body = msgspec.json.encode({"actor": entry.actor, **fields}, order="sorted").decode()
        if entry.event in GONE and _text(fields.get("recording_id")) and fields.get(
            "outcome", "ok"
        ) == "ok":
            await conn.execute(update(recordings).where(recordings.c.id == fields["recording_id"])
                               .values(deleted_at=entry.at))  # fmt: skip
        await chain.append(conn, self.key_for, {
            "entry_id": entry.id, "at": entry.at, "event": entry.event, "node": entry.node,
            "actor_sub": _text(actor.get("sub")), "actor_role": _text(actor.get("role")),
            "organisation": _text(actor.get("organisation")), "consult_id": consult_id,
            "session_id": session_id, "patient_ref": patient_ref, "body": body,
        })  # fmt: skip

    @staticmethod
    async def _patient(conn: AsyncConnection, consult_id: str | None,
                       session_id: str | None) -> tuple[str | None, str | None]:  # fmt: skip
        """The patient (and consult) an event is about, from its consult or session."""
        if consult_id is None and session_id is None:
            return None, None
        where = consults.c.id == consult_id if consult_id else consults.c.session_id == session_id
        row = (await conn.execute(select(consults.c.patient_ref, consults.c.id).where(where)))
        found = row.first()
        if found is None:
            return None, consult_id
        return found.patient_ref, found.id

    async def _recording(self, conn: AsyncConnection, entry: RecordingIndexed) -> None:
        values = {"session_id": entry.session_id, "consult_id": entry.consult_id,
                  "state": entry.state, "started_at": entry.started_at,
                  "ended_at": entry.ended_at, "duration_s": entry.duration_s}  # fmt: skip
        known = (await conn.execute(
            select(recordings.c.id).where(recordings.c.id == entry.id)
        )).first()  # fmt: skip
        if known is None:
            await conn.execute(insert(recordings).values(id=entry.id, **values))
        else:
            await conn.execute(
                update(recordings).where(recordings.c.id == entry.id).values(**values)
            )


def _text(value: object) -> str | None:
    return value[:255] if isinstance(value, str) else None
