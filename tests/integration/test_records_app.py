"""The record store behind a node, on SQLite and on a real PostgreSQL: an ended
consult and its report stay readable, by those who may read them, after the live
state has forgotten them; every read is audited; admins query the trail."""

from __future__ import annotations

import asyncio

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import RECORDS, STORE
from signaling.records import chain
from signaling.store import MemoryStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "urgency": "critical", "summary": "chest pain, ST elevation",
       "patient_ref": "MRN-4711"}  # fmt: skip
REPORT = {"findings": "anterior ST elevation", "assessment": "STEMI",
          "recommendation": "primary PCI", "follow_up_urgency": "critical"}  # fmt: skip
DAY = 86400.0
WAIT = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def node(aiohttp_client, tmp_path, records_url):
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, recordings_dir=tmp_path / "rec", attachments_dir=tmp_path / "att",
        data_dir=tmp_path / "data", records_url=records_url, state_retention_days=1,
    )  # fmt: skip
    clock = Clock()
    app = create_app(settings, store=MemoryStore(clock=clock, retention_s=DAY), clock=clock)
    client = await aiohttp_client(app)
    client.clock = clock
    return client


async def call(client, method, path, token, tokens, json=None, status=200):
    response = await client.request(method, path, json=json, headers=tokens.header(token))
    body = await response.json()
    assert response.status == status, body
    return body


async def settled(client) -> None:
    assert await client.app[RECORDS].outbox.drained(WAIT), "the outbox did not drain"


async def a_reported_consult(client, tokens) -> str:
    consult = await call(client, "POST", "/api/consults", tokens.referrer, tokens, NEW, 201)
    await call(client, "POST", f"/api/consults/{consult['id']}/accept", tokens.specialist, tokens)
    client.clock.now += 600
    await call(client, "POST", f"/api/consults/{consult['id']}/report", tokens.specialist,
               tokens, REPORT)  # fmt: skip
    return consult["id"]


async def test_an_ended_consult_outlives_its_live_state(node, tokens) -> None:
    consult_id = await a_reported_consult(node, tokens)
    await settled(node)
    node.clock.now += 2 * DAY  # past JISR_STATE_RETENTION_DAYS: the live state forgets it
    assert await node.app[STORE].get_consult(consult_id) is None

    found = await call(node, "GET", f"/api/consults/{consult_id}", tokens.referrer, tokens)
    assert found["state"] == "ended" and found["report"]["assessment"] == "STEMI"
    report = await call(node, "GET", f"/api/consults/{consult_id}/report", tokens.referrer, tokens)
    assert report["report"]["recommendation"] == "primary PCI"

    listed = await call(node, "GET", "/api/records/consults", tokens.referrer, tokens)
    assert [(c["id"], c["has_report"]) for c in listed["consults"]] == [(consult_id, True)]
    detail = await call(node, "GET", f"/api/records/consults/{consult_id}", tokens.referrer, tokens)
    assert [h["state"] for h in detail["history"]] == ["waiting", "accepted", "ended"]
    assert detail["consult"]["report"]["findings"] == "anterior ST elevation"

    for token in (tokens.specialist, tokens.supervisor):  # the specialist's own; the organisation's
        mine = await call(node, "GET", "/api/records/consults", token, tokens)
        assert [c["id"] for c in mine["consults"]] == [consult_id]
    for token in (tokens.other_referrer, tokens.other_specialist):
        assert (await call(node, "GET", "/api/records/consults", token, tokens))["consults"] == []
        await call(node, "GET", f"/api/records/consults/{consult_id}", token, tokens, status=404)
        await call(node, "GET", f"/api/consults/{consult_id}", token, tokens, status=404)


async def test_reads_are_audited_and_admins_find_who_read(node, tokens) -> None:
    consult_id = await a_reported_consult(node, tokens)
    await settled(node)  # the record store follows the live state within moments
    await call(node, "GET", f"/api/records/consults/{consult_id}", tokens.referrer, tokens)
    await call(node, "GET", f"/api/consults/{consult_id}/report", tokens.supervisor, tokens)
    await settled(node)

    found = await call(node, "GET", f"/api/audit?consult={consult_id}", tokens.admin, tokens)
    seen = [(e["event"], e["actor"]["sub"]) for e in found["entries"] if e["actor"]]
    assert ("consult.created", "dr-amal") in seen and ("consult.accepted", "dr-karim") in seen
    assert ("consult.viewed", "dr-amal") in seen and ("report.viewed", "dr-amal") in seen
    assert ("report.viewed", "sup-leila") in seen
    by_patient = await call(node, "GET", "/api/audit?patient=MRN-4711&actor=sup-leila",
                            tokens.admin, tokens)  # fmt: skip
    assert {e["event"] for e in by_patient["entries"]} == {"report.viewed"}
    window = await call(node, "GET", f"/api/audit?since={node.clock.now + 1}", tokens.admin, tokens)
    assert window["entries"] == []
    assert all("chest pain" not in str(e) for e in found["entries"])  # free text never kept

    export = await node.get(f"/api/audit/export?consult={consult_id}&format=fhir",
                            headers=tokens.header(tokens.admin))  # fmt: skip
    assert export.status == 200 and export.content_type == "application/fhir+ndjson"
    lines = (await export.text()).splitlines()
    assert len(lines) >= len(found["entries"])
    events = [AuditEvent.model_validate_json(line) for line in lines]  # valid FHIR R4
    viewed = [e for e in events if e.subtype[0].code == "consult.viewed"]
    assert viewed and viewed[0].action == "R" and viewed[0].agent[0].who.identifier.value
    assert any(x.what.identifier and x.what.identifier.value == "MRN-4711"
               for x in viewed[0].entity)  # fmt: skip
    await settled(node)
    records = node.app[RECORDS]
    assert (await chain.verify(records.engine, records.chain_key)).ok


@pytest.mark.parametrize("path", ["/api/audit", "/api/audit/export"])
async def test_only_admins_read_the_trail(node, tokens, path) -> None:
    for token in (tokens.referrer, tokens.specialist, tokens.supervisor):
        body = await call(node, "GET", path, token, tokens, status=403)
        assert body["error"]["code"] == "forbidden"


@pytest.mark.parametrize("query", [
    "patient=has%20space", "since=yesterday", "limit=0", "limit=5000", "after=-1",
    "consult=" + "x" * 65,
])  # fmt: skip
async def test_a_bad_query_is_refused_with_its_code(node, tokens, query) -> None:
    body = await call(node, "GET", f"/api/audit?{query}", tokens.admin, tokens, status=400)
    assert body["error"]["code"] == "bad_query"


async def test_bad_past_consult_queries(node, tokens) -> None:
    body = await call(node, "GET", "/api/records/consults?before=soon", tokens.referrer, tokens,
                      status=400)  # fmt: skip
    assert body["error"]["code"] == "bad_query"
    body = await call(node, "GET", "/api/records/consults/c_nope", tokens.referrer, tokens,
                      status=404)  # fmt: skip
    assert body["error"]["code"] == "consult_not_found"
    body = await call(node, "GET", "/api/audit/export?format=xml", tokens.admin, tokens, status=400)
    assert body["error"]["code"] == "bad_query"


async def test_readyz_and_metrics_show_the_outbox(node, tokens) -> None:
    await a_reported_consult(node, tokens)
    await settled(node)
    ready = await (await node.get("/readyz")).json()
    assert ready["records"] == {"database": "up", "backlog": 0}
    metrics = await (await node.get("/metrics")).text()
    assert "jisr_records_outbox_backlog 0.0" in metrics
    assert "jisr_records_database_up 1.0" in metrics
    await asyncio.sleep(0)


@pytest.mark.parametrize(("path", "token"), [
    ("/api/records/consults", "referrer"), ("/api/audit", "admin"),
    ("/fhir/Bundle/c-1", "referrer"),
])  # fmt: skip
async def test_without_a_master_key_there_is_no_record_store(aiohttp_client, tokens, path,
                                                              token) -> None:  # fmt: skip
    node = await aiohttp_client(create_app(make_settings(), store=MemoryStore()))
    body = await call(node, "GET", path, getattr(tokens, token), tokens, status=503)
    if path.startswith("/fhir/"):  # a FHIR OperationOutcome, Jisr's code in its details
        issue = body["issue"][0]
        assert issue["code"] == "transient"
        assert issue["details"]["coding"][0]["code"] == "records_unavailable"
    else:
        assert body["error"]["code"] == "records_unavailable"


async def test_a_report_shown_in_a_list_is_audited_once(node, tokens) -> None:
    """The referrer's list carries ended consults' reports: shown is read."""
    consult_id = await a_reported_consult(node, tokens)
    for _ in range(3):  # a page refreshing its list
        await call(node, "GET", "/api/consults", tokens.referrer, tokens)
    await settled(node)
    found = await call(node, "GET", f"/api/audit?consult={consult_id}&actor=dr-amal",
                       tokens.admin, tokens)  # fmt: skip
    listed = [e for e in found["entries"] if e["event"] == "report.viewed"]
    assert len(listed) == 1 and listed[0]["fields"]["origin"] == "list"


async def test_a_past_consults_file_is_still_served(node, tokens) -> None:
    pdf = b"%PDF-1.7\n" + b"echo report " * 30 + b"\n%%EOF"
    consult = await call(node, "POST", "/api/consults", tokens.referrer, tokens, NEW, 201)
    added = await node.post(f"/api/consults/{consult['id']}/attachments", data=pdf, headers={
        **tokens.header(tokens.referrer), "Content-Type": "application/pdf"})  # fmt: skip
    attachment_id = (await added.json())["id"]
    await call(node, "POST", f"/api/consults/{consult['id']}/accept", tokens.specialist, tokens)
    await call(node, "POST", f"/api/consults/{consult['id']}/report", tokens.specialist,
               tokens, REPORT)  # fmt: skip
    await settled(node)
    node.clock.now += 2 * DAY  # the live state forgets the consult
    path = f"/api/consults/{consult['id']}/attachments/{attachment_id}"
    served = await node.get(path, headers=tokens.header(tokens.referrer))
    assert served.status == 200 and await served.read() == pdf
    other = await node.get(path, headers=tokens.header(tokens.other_referrer))
    assert other.status == 404 and (await other.json())["error"]["code"] == "attachment_not_found"
