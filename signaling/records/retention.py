"""Retention of records, by kind (settings): a consult with its history and report
is kept ``JISR_RECORDS_RETENTION_DAYS`` after it ended, a case-packet file
``JISR_ATTACHMENT_RETENTION_DAYS`` after it was attached (recordings follow
``JISR_RECORDING_RETENTION_DAYS`` in the vault). Each deletion destroys the data
key of what it deletes (crypto-shredding: every copy, backups included, becomes
unreadable) and is audited. Idempotent, so every node may run it: a consult or file
another node deleted first is skipped, and audited once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import delete, select, update

from .schema import attachments, consult_history, consults, reports
from .service import Records

DAY = 86400.0
BATCH = 100


class Purged(msgspec.Struct):
    consults: list[str] = []
    attachments: list[str] = []


async def purge_consults(records: Records, before: float) -> list[str]:
    """Consults that ended before ``before``: rows deleted, key shredded."""
    async with records.engine.connect() as conn:
        due = list((await conn.execute(
            select(consults.c.id).where(consults.c.ended_at < before).limit(BATCH)
        )).scalars())  # fmt: skip
    done = []
    for consult_id in due:
        async with records.engine.begin() as conn:
            gone = await conn.execute(delete(consults).where(consults.c.id == consult_id))
            if gone.rowcount == 0:
                continue  # another node got there first
            await conn.execute(delete(consult_history)
                               .where(consult_history.c.consult_id == consult_id))  # fmt: skip
            await conn.execute(delete(reports).where(reports.c.consult_id == consult_id))
            await records.sealing.shred(conn, consult_id)
        records.audit("consult.purged", None, {"consult_id": consult_id, "by": "retention"})
        done.append(consult_id)
    return done


async def purge_attachments(records: Records, before: float, now: float,
                            shred: Callable[[str], Any]) -> list[str]:  # fmt: skip
    """Case-packet files attached before ``before``: ``shred(id)`` destroys the file
    and its key; the index keeps that it was deleted, and when."""
    async with records.engine.connect() as conn:
        due = (await conn.execute(
            select(attachments.c.id, attachments.c.consult_id)
            .where(attachments.c.at < before, attachments.c.deleted_at.is_(None)).limit(BATCH)
        )).all()  # fmt: skip
    done = []
    for row in due:
        async with records.engine.begin() as conn:
            marked = await conn.execute(
                update(attachments).where(attachments.c.id == row.id,
                                          attachments.c.deleted_at.is_(None))
                .values(deleted_at=now)
            )  # fmt: skip
            if marked.rowcount == 0:
                continue
            shred(row.id)  # before the commit: a failure leaves it to the next run
        fields = {"consult_id": row.consult_id, "attachment_id": row.id, "by": "retention"}
        records.audit("attachment.purged", None, fields)
        done.append(row.id)
    return done


async def purge(records: Records, *, now: float, records_days: float, attachment_days: float,
                shred_attachment: Callable[[str], Any] | None) -> Purged:  # fmt: skip
    purged = Purged()
    purged.consults = await purge_consults(records, now - records_days * DAY)
    if shred_attachment is not None:
        purged.attachments = await purge_attachments(
            records, now - attachment_days * DAY, now, shred_attachment
        )
    return purged
