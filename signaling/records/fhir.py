"""A consult as HL7 FHIR R4 resources: the referral (``ServiceRequest``), the
virtual encounter (``Encounter``, class ``VR``), the consult note
(``Composition``, LOINC 11488-4, one section per part of the report), a
``DocumentReference`` per recording (metadata only: the media stays in Jisr),
and ``Provenance``; and audit entries as ``AuditEvent``. Plain JSON-able dicts;
the tests validate them with a FHIR model library."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from ..model import Consult, ConsultState, Person, Urgency
from .reader import RecordingEntry
from .trail import TrailEntry

LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CONSULT_SYSTEM = "urn:jisr:consult"
PRIORITY = {Urgency.CRITICAL: "stat", Urgency.URGENT: "asap", Urgency.ROUTINE: "routine"}
REQUEST_STATUS = {ConsultState.WAITING: "active", ConsultState.ACCEPTED: "active",
                  ConsultState.LIVE: "active", ConsultState.ENDED: "completed",
                  ConsultState.CANCELLED: "revoked"}  # fmt: skip
ENCOUNTER_STATUS = {ConsultState.WAITING: "planned", ConsultState.ACCEPTED: "arrived",
                    ConsultState.LIVE: "in-progress", ConsultState.ENDED: "finished",
                    ConsultState.CANCELLED: "cancelled"}  # fmt: skip
SECTIONS = (  # report field, title, LOINC section code
    ("findings", "Findings", ("59776-5", "Procedure findings Narrative")),
    ("assessment", "Assessment", ("51848-0", "Evaluation note")),
    ("recommendation", "Recommendation", ("18776-5", "Plan of care note")),
)
READS = ("viewed", "played", "read", "queried", "exported", "listed", "joined")


def fhir_id(jisr_id: str) -> str:
    """A FHIR id (letters, digits, '-' and '.') for a Jisr id (``c_…``, ``r_…``)."""
    return jisr_id.replace("_", "-")


def jisr_id(resource_id: str) -> str:
    return resource_id.replace("-", "_")


def instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


# The FHIR issue type (R4 IssueType) of each HTTP status a FHIR endpoint answers with.
ISSUE_TYPES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
               405: "not-supported", 408: "timeout", 413: "too-costly", 429: "throttled",
               503: "transient"}  # fmt: skip
ERROR_CODE_SYSTEM = "urn:jisr:error"


def operation_outcome(status: int, code: str, message: str) -> dict[str, Any]:
    """A refusal as FHIR clients read one: Jisr's error code in the issue's details."""
    issue_type = ISSUE_TYPES.get(status, "exception" if status >= 500 else "processing")
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "fatal" if status >= 500 else "error", "code": issue_type,
        "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}], "text": message},
    }]}  # fmt: skip


def patient_system(organisation: str) -> str:
    """Patient references are the referring organisation's pseudonyms."""
    return f"urn:jisr:{organisation}:patient"


def person_system(organisation: str) -> str:
    return f"urn:jisr:{organisation}:person"


def patient(consult: Consult) -> dict[str, Any]:
    return {"identifier": {"system": patient_system(consult.organisation),
                           "value": consult.patient_ref}}  # fmt: skip


def person(who: Person, organisation: str) -> dict[str, Any]:
    return {"identifier": {"system": person_system(organisation), "value": who.sub},
            "display": who.name}  # fmt: skip


def service_request(consult: Consult) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": fhir_id(consult.id),
        "identifier": [{"system": CONSULT_SYSTEM, "value": consult.id}],
        "status": REQUEST_STATUS[consult.state], "intent": "order",
        "priority": PRIORITY[consult.urgency],
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "11429006",
                                  "display": "Consultation"}]}],
        "code": {"coding": [{"system": "urn:jisr:specialty", "code": consult.specialty}],
                 "text": consult.specialty},
        "subject": patient(consult), "authoredOn": instant(consult.created_at),
        "requester": person(consult.referrer, consult.organisation),
        "reasonCode": [{"text": consult.summary}],
    }  # fmt: skip
    if consult.specialist is not None:
        org = consult.specialist_organisation or consult.organisation
        resource["performer"] = [person(consult.specialist, org)]
    return resource


def encounter(consult: Consult) -> dict[str, Any]:
    start = consult.accepted_at or consult.created_at
    period = {"start": instant(start)}
    if consult.ended_at:
        period["end"] = instant(max(consult.ended_at, start))
    participants = [{"type": [{"coding": [{"system": PARTICIPATION, "code": "REF",
                                           "display": "referrer"}]}],
                     "individual": person(consult.referrer, consult.organisation)}]  # fmt: skip
    if consult.specialist is not None:
        org = consult.specialist_organisation or consult.organisation
        participants.append({"type": [{"coding": [{"system": PARTICIPATION, "code": "CON",
                                                   "display": "consultant"}]}],
                             "individual": person(consult.specialist, org)})  # fmt: skip
    return {
        "resourceType": "Encounter", "id": fhir_id(consult.id),
        "status": ENCOUNTER_STATUS[consult.state],
        "class": {"system": ACT_CODE, "code": "VR", "display": "virtual"},
        "serviceType": {"text": consult.specialty}, "subject": patient(consult),
        "basedOn": [{"reference": f"ServiceRequest/{fhir_id(consult.id)}"}],
        "participant": participants, "period": period,
    }  # fmt: skip


def _narrative(text: str) -> dict[str, str]:
    body = html.escape(text).replace("\n", "<br/>")
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def composition(consult: Consult) -> dict[str, Any] | None:
    """The consult note (None until the report is written)."""
    report = consult.report
    if report is None:
        return None
    org = consult.specialist_organisation or consult.organisation
    sections = [{"title": title, "code": {"coding": [{"system": LOINC, "code": code,
                                                      "display": display}]},
                 "text": _narrative(getattr(report, field))}
                for field, title, (code, display) in SECTIONS]  # fmt: skip
    sections.append({"title": "Follow-up", "text": _narrative(report.follow_up_urgency)})
    return {
        "resourceType": "Composition", "id": fhir_id(consult.id), "status": "final",
        "identifier": {"system": CONSULT_SYSTEM + ":report", "value": consult.id},
        "type": {"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}]},
        "subject": patient(consult), "encounter": {"reference": f"Encounter/{fhir_id(consult.id)}"},
        "date": instant(report.written_at), "author": [person(report.specialist, org)],
        "title": "Consult note", "section": sections,
    }  # fmt: skip


def document_reference(consult: Consult, recording: RecordingEntry) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference", "id": fhir_id(recording.id), "status": "current",
        "type": {"text": "Consult session recording"}, "subject": patient(consult),
        "content": [{"attachment": {"contentType": "video/webm",
                                    "url": f"/api/recordings/{recording.id}",
                                    "title": f"Recording of consult {consult.id}"}}],
        "context": {"encounter": [{"reference": f"Encounter/{fhir_id(consult.id)}"}]},
    }  # fmt: skip
    if recording.started_at:
        resource["date"] = instant(recording.started_at)
        period = {"start": instant(recording.started_at)}
        if recording.ended_at:
            period["end"] = instant(max(recording.ended_at, recording.started_at))
        resource["context"]["period"] = period
    return resource


def provenance(consult: Consult, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Who made these resources: the specialist who wrote the note (else the
    referrer who asked), recorded by Jisr."""
    author = consult.report.specialist if consult.report else consult.referrer
    org = (consult.specialist_organisation or consult.organisation) if consult.report else (
        consult.organisation)  # fmt: skip
    recorded = consult.report.written_at if consult.report else consult.created_at
    return {
        "resourceType": "Provenance", "id": fhir_id(consult.id),
        "target": [{"reference": f"{t['resourceType']}/{t['id']}"} for t in targets],
        "recorded": instant(recorded),
        "agent": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author"}]}, "who": person(author, org)}],
    }  # fmt: skip


def resources(consult: Consult, recordings: list[RecordingEntry]) -> list[dict[str, Any]]:
    found = [service_request(consult), encounter(consult)]
    note = composition(consult)
    if note is not None:
        found.append(note)
    found.extend(document_reference(consult, r) for r in recordings)
    return [*found, provenance(consult, list(found))]


def bundle(consult: Consult, recordings: list[RecordingEntry], base: str) -> dict[str, Any]:
    """The consult as one Bundle (type ``collection``) of its resources."""
    return {
        "resourceType": "Bundle", "id": fhir_id(consult.id), "type": "collection",
        "identifier": {"system": CONSULT_SYSTEM, "value": consult.id},
        "timestamp": instant(consult.ended_at or consult.created_at),
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r}
                  for r in resources(consult, recordings)],
    }  # fmt: skip


def searchset(found: list[dict[str, Any]], base: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": "searchset", "total": len(found),
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in found],
    }  # fmt: skip


def audit_event(entry: TrailEntry) -> dict[str, Any]:
    actor = entry.actor or {}
    org = actor.get("organisation") or "local"
    who: dict[str, Any] = {"display": actor.get("name") or actor.get("sub") or "jisr"}
    if actor.get("sub"):
        who["identifier"] = {"system": person_system(org), "value": actor["sub"]}
    action = "R" if entry.event.rsplit(".", 1)[-1] in READS else "E"
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": fhir_id(entry.id),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "urn:jisr:audit-event", "code": entry.event}],
        "action": action, "recorded": instant(entry.at),
        "outcome": "0" if entry.fields.get("outcome", "ok") == "ok" else "4",
        "agent": [{"who": who, "requestor": bool(actor.get("sub"))}],
        "source": {"observer": {"display": entry.node}},
    }  # fmt: skip
    entities = []
    if entry.consult_id:
        entities.append({"what": {"reference": f"ServiceRequest/{fhir_id(entry.consult_id)}"}})
    if entry.patient_ref:
        entities.append({"what": {"identifier": {"value": entry.patient_ref}},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                  "code": "1", "display": "Person"}})  # fmt: skip
    if entities:
        resource["entity"] = entities
    return resource
