"""A finished consult as FHIR R4: its Bundle validates with a FHIR model library
(fhir.resources), and a FHIR client (fhirpy) reads it from the node's read-only
FHIR endpoints by id and finds it by the patient's identifier, as an EHR would."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import RECORDS
from signaling.records.entries import RecordingIndexed
from signaling.store import MemoryStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "urgency": "critical", "summary": "chest pain <2h>",
       "patient_ref": "MRN-4711"}  # fmt: skip
REPORT = {"findings": "ST elevation V2-V4 & reciprocal changes", "assessment": "anterior STEMI",
          "recommendation": "primary PCI", "follow_up_urgency": "urgent"}  # fmt: skip
PATIENT_SYSTEM = "urn:jisr:local:patient"


@pytest.fixture
async def finished(aiohttp_client, tmp_path, tokens):
    """A node and a consult reported, with a recording indexed."""
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key,
        recordings_dir=tmp_path / "rec",
        attachments_dir=tmp_path / "att",
        data_dir=tmp_path / "data",
    )
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))

    async def call(method, path, token, json=None):
        response = await client.request(method, path, json=json, headers=tokens.header(token))
        assert response.status in (200, 201), await response.text()
        return await response.json()

    consult = await call("POST", "/api/consults", tokens.referrer, NEW)
    accepted = await call("POST", f"/api/consults/{consult['id']}/accept", tokens.specialist)
    await call("POST", f"/api/consults/{consult['id']}/report", tokens.specialist, REPORT)
    records = client.app[RECORDS]
    records.put(RecordingIndexed(id="r_1", session_id=accepted["session"]["id"],
                                 consult_id=consult["id"], state="complete",
                                 started_at=consult["created_at"] + 5,
                                 ended_at=consult["created_at"] + 65, duration_s=60.0))  # fmt: skip
    assert await records.outbox.drained(10)
    return client, consult["id"].replace("_", "-")  # its FHIR id


def fhir_client(client, token: str) -> AsyncFHIRClient:
    return AsyncFHIRClient(str(client.make_url("/fhir")), authorization=f"Bearer {token}")


async def test_the_bundle_of_a_finished_consult_validates(finished, tokens) -> None:
    client, consult_id = finished
    headers = tokens.header(tokens.referrer)
    response = await client.get(f"/fhir/Bundle/{consult_id}", headers=headers)
    assert response.status == 200 and response.content_type == "application/fhir+json"
    bundle = Bundle.model_validate(await response.json())
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds == ["ServiceRequest", "Encounter", "Composition", "DocumentReference",
                     "Provenance"]  # fmt: skip
    by_type = {e.resource.get_resource_type(): e.resource for e in bundle.entry}
    request = ServiceRequest.model_validate(by_type["ServiceRequest"].model_dump())
    assert request.priority == "stat" and request.code.text == "cardiology"
    assert request.reasonCode[0].text == "chest pain <2h>"
    assert (request.subject.identifier.system, request.subject.identifier.value) == (
        PATIENT_SYSTEM,
        "MRN-4711",
    )
    encounter = Encounter.model_validate(by_type["Encounter"].model_dump())
    assert encounter.class_fhir.code == "VR" and encounter.status == "finished"
    assert encounter.period.start is not None and encounter.period.end is not None
    assert {p.type[0].coding[0].code for p in encounter.participant} == {"REF", "CON"}
    note = Composition.model_validate(by_type["Composition"].model_dump())
    loinc = note.type.coding[0]
    assert (loinc.system, loinc.code) == ("http://loinc.org", "11488-4")
    assert [s.title for s in note.section] == ["Findings", "Assessment", "Recommendation",
                                               "Follow-up"]  # fmt: skip
    assert "&amp; reciprocal" in note.section[0].text.div  # escaped, as XHTML must be
    assert note.author[0].identifier.value == "dr-karim"
    recording = DocumentReference.model_validate(by_type["DocumentReference"].model_dump())
    assert recording.content[0].attachment.url == "/api/recordings/r_1"
    assert bundle.identifier.value == consult_id.replace("-", "_")  # the Jisr id
    provenance = Provenance.model_validate(by_type["Provenance"].model_dump())
    assert len(provenance.target) == 4


async def test_a_fhir_client_reads_it_by_id_and_finds_it_by_patient(finished, tokens) -> None:
    client, consult_id = finished
    ehr = fhir_client(client, tokens.referrer)
    bundle = await ehr.reference("Bundle", consult_id).to_resource()
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 5
    note = await ehr.reference("Composition", consult_id).to_resource()
    assert note["type"]["coding"][0]["code"] == "11488-4"

    found = await ehr.resources("ServiceRequest").search(patient__identifier="MRN-4711").fetch()
    assert [r["id"] for r in found] == [consult_id]
    notes = await ehr.resources("Composition").search(
        **{"patient:identifier": f"{PATIENT_SYSTEM}|MRN-4711"}).fetch_all()  # fmt: skip
    assert [r["id"] for r in notes] == [consult_id]
    assert await ehr.resources("Encounter").search(patient__identifier="MRN-0000").fetch() == []
    assert await ehr.resources("Encounter").search(_id="c-unknown").fetch() == []
    found = await ehr.resources("Encounter").search(_id=consult_id).fetch()
    assert [r["class"]["code"] for r in found] == ["VR"]
    recordings = await ehr.resources("DocumentReference").search(
        patient__identifier="MRN-4711").fetch()  # fmt: skip
    assert [r["id"] for r in recordings] == ["r-1"]


async def test_fhir_reads_are_scoped_and_audited(finished, tokens) -> None:
    client, consult_id = finished
    other = fhir_client(client, tokens.other_referrer)
    with pytest.raises(ResourceNotFound):
        await other.reference("Bundle", consult_id).to_resource()
    assert await other.resources("ServiceRequest").search(
        patient__identifier="MRN-4711").fetch() == []  # fmt: skip
    await fhir_client(client, tokens.supervisor).reference("Bundle", consult_id).to_resource()
    assert await client.app[RECORDS].outbox.drained(10)
    trail = await client.get(f"/api/audit?consult={consult_id.replace('-', '_')}&actor=sup-leila",
                             headers=tokens.header(tokens.admin))  # fmt: skip
    events = [e["event"] for e in (await trail.json())["entries"]]
    assert events == ["consult.viewed", "report.viewed"]


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/fhir/Patient/x", 404, "not_found"),
    ("/fhir/ServiceRequest?name=smith", 400, "bad_query"),
    ("/fhir/ServiceRequest", 400, "bad_query"),
    ("/fhir/ServiceRequest?patient.identifier=bad%20ref", 400, "bad_query"),
    ("/fhir/Bundle/c-unknown", 404, "consult_not_found"),
    ("/fhir/DocumentReference/r-unknown", 404, "not_found"),
])  # fmt: skip
async def test_bad_fhir_requests_have_their_code(finished, tokens, path, status, code) -> None:
    client, _ = finished
    response = await client.get(path, headers=tokens.header(tokens.referrer))
    assert response.status == status
    issue_type = "not-found" if status == 404 else "invalid"
    assert error_code(response, await response.json(), issue_type) == code


def error_code(response, body: dict, issue_type: str) -> str:
    """A FHIR endpoint's refusal is an OperationOutcome that validates, its issue of the
    type the status means, Jisr's error code in its details."""
    assert response.content_type == "application/fhir+json"
    issue = OperationOutcome.model_validate(body).issue[0]
    assert issue.severity == "error" and issue.code == issue_type
    assert issue.details.text
    coding = issue.details.coding[0]
    assert coding.system == "urn:jisr:error"
    return coding.code


async def test_fhir_needs_a_signed_in_caller(finished) -> None:
    client, consult_id = finished
    response = await client.get(f"/fhir/Bundle/{consult_id}")
    assert response.status == 401
    assert error_code(response, await response.json(), "login") == "unauthenticated"
    metadata = await client.get("/fhir/metadata")  # what a FHIR client asks first
    assert (await metadata.json())["fhirVersion"] == "4.0.1"
