"""Retention by kind of record: a consult and its report kept their years, then
deleted and crypto-shredded; a case-packet file by its own setting; each deletion
audited on the chain."""

from __future__ import annotations

import time

from sqlalchemy import text

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import CASE_PACKET, RECORDS
from signaling.records import chain
from signaling.records.retention import DAY, purge
from signaling.store import MemoryStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "palpitations",
       "patient_ref": "MRN-77"}  # fmt: skip
REPORT = {"findings": "SVT", "assessment": "AVNRT", "recommendation": "ablation referral",
          "follow_up_urgency": "routine"}  # fmt: skip
PDF = b"%PDF-1.7\n" + b"holter summary " * 40 + b"\n%%EOF"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # the case packet dates its files by the wall clock

    def __call__(self) -> float:
        return self.now


async def test_records_and_files_are_kept_their_time_then_shredded(aiohttp_client, tmp_path,
                                                                    tokens) -> None:  # fmt: skip
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, recordings_dir=tmp_path / "rec", attachments_dir=tmp_path / "att",
        data_dir=tmp_path / "data", records_retention_days=3650, attachment_retention_days=30,
    )  # fmt: skip
    clock = Clock()
    client = await aiohttp_client(create_app(settings, store=MemoryStore(), clock=clock))
    records, packet = client.app[RECORDS], client.app[CASE_PACKET]
    headers = tokens.header(tokens.referrer)
    consult = await (await client.post("/api/consults", json=NEW, headers=headers)).json()
    added = await client.post(f"/api/consults/{consult['id']}/attachments", data=PDF,
                              headers={**headers, "Content-Type": "application/pdf"})  # fmt: skip
    attachment_id = (await added.json())["id"]
    await client.post(f"/api/consults/{consult['id']}/accept",
                      headers=tokens.header(tokens.specialist))  # fmt: skip
    reported = await client.post(f"/api/consults/{consult['id']}/report", json=REPORT,
                                 headers=tokens.header(tokens.specialist))  # fmt: skip
    assert reported.status == 200
    assert await records.outbox.drained(10)

    async def purged_after(days: float):
        result = await purge(records, now=clock.now + days * DAY, records_days=3650,
                             attachment_days=30, shred_attachment=packet.shred)  # fmt: skip
        assert await records.outbox.drained(10)
        return result

    first = await purged_after(29)
    assert first.consults == [] and first.attachments == []
    second = await purged_after(31)  # the file's time is up, not the consult's
    assert second.attachments == [attachment_id] and second.consults == []
    assert not packet.keyring.has("attachment", attachment_id)
    assert (await records.reader.consult(consult["id"])) is not None
    third = await purged_after(3651)
    assert third.consults == [consult["id"]]
    assert await records.reader.consult(consult["id"]) is None
    async with records.engine.connect() as conn:
        for table in ("consults", "consult_history", "reports"):
            count = await conn.execute(text(f"SELECT count(*) FROM {table}"))
            assert count.scalar() == 0, table
        keys = await conn.execute(text("SELECT owner_id FROM record_keys"))
        assert list(keys.scalars()) == ["audit-chain"]  # the consult's key is destroyed
        events = list((await conn.execute(text(
            "SELECT event FROM audit_entries WHERE event LIKE '%.purged' ORDER BY seq"
        ))).scalars())  # fmt: skip
    assert events == ["attachment.purged", "consult.purged"]
    assert (await purged_after(3652)).consults == []  # nothing twice
    assert (await chain.verify(records.engine, records.chain_key)).ok
