"""One contract for the record store, on SQLite and on a real PostgreSQL: consults
and their history in order whatever order the outbox delivers them, reports sealed,
scoping, idempotence, crypto-shredding, and the audit chain."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text

from signaling.auth import Principal
from signaling.model import ConsultState
from signaling.records import chain, trail
from signaling.records.entries import ConsultChanged
from signaling.records.schema import consults, reports
from tests.support.records import a_consult, its_versions, open_records

WAIT = 10.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def records(database: str, tmp_path) -> AsyncIterator:
    records = open_records(database, tmp_path)
    await records.start()
    yield records
    await records.close()


def who(role: str, sub: str, **claims) -> Principal:
    return Principal(sub=sub, name=sub, role=role, organisation=claims.pop("organisation", "local"),
                     **claims)  # fmt: skip


async def settled(records) -> None:
    assert await records.outbox.drained(WAIT), "the outbox did not reach the record store"


async def test_a_consult_and_its_history_in_order(records) -> None:
    versions = its_versions(a_consult())
    for consult in versions:
        records.consult_changed(consult)
    await settled(records)
    kept = await records.reader.consult("c_1")
    assert kept == versions[-1]
    assert kept.report is not None and kept.report.assessment == "anterior STEMI"
    history = await records.reader.history("c_1")
    assert [(h.version, h.state) for h in history] == [
        (0, "waiting"), (1, "accepted"), (2, "live"), (3, "ended")]


async def test_a_late_older_version_does_not_undo_a_newer_one(records) -> None:
    """Two nodes' outboxes may deliver a consult's changes out of order."""
    first, accepted, live, ended = its_versions(a_consult())
    for consult in (first, ended, live, accepted):
        records.consult_changed(consult)
    await settled(records)
    assert (await records.reader.consult("c_1")).state == ConsultState.ENDED
    assert [h.version for h in await records.reader.history("c_1")] == [0, 1, 2, 3]


async def test_applying_an_entry_twice_changes_nothing(records) -> None:
    """A node that died after applying a batch but before noting it applies it again."""
    consult = its_versions(a_consult())[-1]
    records.audit("consult.reported", {"sub": "dr-karim", "role": "specialist"},
                  {"consult_id": "c_1"})  # fmt: skip
    await settled(records)
    entries = [ConsultChanged(consult=consult, at=5.0)]
    await records.writer.apply(entries)
    await records.writer.apply(entries)
    async with records.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM consult_history"))).scalar() == 1
        assert (await conn.execute(text("SELECT count(*) FROM reports"))).scalar() == 1


async def test_what_people_wrote_is_sealed(records, database, tmp_path) -> None:
    records.consult_changed(its_versions(a_consult())[-1])
    await settled(records)
    async with records.engine.connect() as conn:
        row = (await conn.execute(select(consults.c.sealed, consults.c.patient_ref))).one()
        report = (await conn.execute(select(reports.c.sealed))).scalar()
    assert row.patient_ref == "MRN-4711"  # the pseudonymous reference: searchable
    for blob in (row.sealed, report):
        assert b"STEMI" not in blob and b"chest pain" not in blob
    if database.startswith("sqlite"):
        on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
        assert b"STEMI" not in on_disk and b"chest pain" not in on_disk


async def test_each_reads_only_what_is_theirs(records) -> None:
    records.consult_changed(its_versions(a_consult())[-1])
    records.consult_changed(a_consult("c_2", facility="hospital-b", state=ConsultState.CANCELLED,
                                      cancelled_at=1010.0, version=1))  # fmt: skip
    records.consult_changed(a_consult("c_3", organisation="other", facility="hospital-a",
                                      state=ConsultState.CANCELLED, version=1))  # fmt: skip
    await settled(records)

    async def ids(principal: Principal) -> set[str]:
        return {c.id for c in await records.reader.consults(principal)}

    assert await ids(who("referrer", "dr-amal", facility="hospital-a")) == {"c_1"}
    assert await ids(who("referrer", "dr-omar", facility="hospital-b")) == {"c_2"}
    assert await ids(who("specialist", "dr-karim", specialties=("cardiology",))) == {"c_1"}
    assert await ids(who("specialist", "dr-sara", specialties=("cardiology",))) == set()
    namesake = who("specialist", "dr-karim", specialties=("cardiology",), organisation="other")
    assert await ids(namesake) == set()  # the same sub at another organisation
    assert await ids(who("supervisor", "sup-leila")) == {"c_1", "c_2"}
    assert await ids(who("admin", "adm-x", organisation="other")) == {"c_3"}
    assert await records.reader.consult("c_3", who("supervisor", "sup-leila")) is None


async def test_a_shredded_consult_is_gone(records) -> None:
    records.consult_changed(its_versions(a_consult())[-1])
    await settled(records)
    async with records.engine.begin() as conn:
        await records.sealing.shred(conn, "c_1")
    assert await records.reader.consult("c_1") is None


async def test_audit_events_form_a_verifiable_chain(records) -> None:
    records.consult_changed(a_consult())
    for n in range(5):
        records.audit("consult.viewed", {"sub": f"dr-{n}", "role": "referrer",
                                         "organisation": "local"},
                      {"consult_id": "c_1", "note": "free text never kept"})  # fmt: skip
    await settled(records)
    report = await chain.verify(records.engine, records.chain_key)
    assert report.ok and report.entries == 5
    async with records.engine.connect() as conn:
        bodies = (await conn.execute(text("SELECT body, patient_ref FROM audit_entries"))).all()
    assert all("free text" not in b.body for b in bodies)
    assert {b.patient_ref for b in bodies} == {"MRN-4711"}


async def test_the_trail_is_searched_within_an_organisation(records) -> None:
    records.consult_changed(its_versions(a_consult())[-1])
    records.consult_changed(a_consult("c_9", organisation="other", patient_ref="MRN-9"))
    local = {"sub": "dr-amal", "role": "referrer", "organisation": "local"}
    other = {"sub": "dr-x", "role": "referrer", "organisation": "other"}
    records.audit("consult.viewed", local, {"consult_id": "c_1"})
    records.audit("consult.viewed", other, {"consult_id": "c_9"})
    records.audit("user.signed_out", other, {})
    await settled(records)

    async def found(**query) -> list[tuple[str, str | None]]:
        entries = await trail.search(records.engine, trail.TrailQuery(**query))
        return [(e.event, e.consult_id) for e in entries]

    assert await found(organisation="local") == [("consult.viewed", "c_1")]
    assert await found(organisation="other") == [("consult.viewed", "c_9"),
                                                 ("user.signed_out", None)]  # fmt: skip
    assert await found(organisation="other", patient_ref="MRN-4711") == []
    assert await found(organisation="local", patient_ref="MRN-4711") == [
        ("consult.viewed", "c_1")]
    assert await found(organisation="local", actor="dr-x") == []
