"""Read-only HL7 FHIR R4 endpoints over the record store (docs/fhir.md), as an EHR
reads them: a consult's resources by id (``/fhir/ServiceRequest/{consult id}``,
``Encounter``, ``Composition``, ``Provenance``, ``Bundle``; a recording's
``DocumentReference`` by recording id) and searches by the patient's identifier.
The same bearer tokens and scoping as the API; every read of a consult audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from .access import can_see_consult
from .api import principal
from .auth import Principal
from .errors import ApiError
from .keys import AUDIT
from .model import Consult
from .records import fhir
from .records.reader import RecordingEntry
from .records_api import ID, PATIENT_REF, database_errors, past_consult, records_of

routes = web.RouteTableDef()
FHIR_JSON = "application/fhir+json"
PATIENT_PARAMS = ("patient:identifier", "subject:identifier", "patient.identifier",
                  "subject.identifier", "patient")  # fmt: skip
BUILDERS: dict[str, Callable[[Consult, list[RecordingEntry], str], Any]] = {
    "ServiceRequest": lambda c, r, base: fhir.service_request(c),
    "Encounter": lambda c, r, base: fhir.encounter(c),
    "Composition": lambda c, r, base: fhir.composition(c),
    "Provenance": lambda c, r, base: fhir.resources(c, r)[-1],
    "Bundle": lambda c, r, base: fhir.bundle(c, r, base),
}


def fhir_response(body: Any) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), content_type=FHIR_JSON)


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/fhir"


@routes.get("/fhir/metadata")
async def capability_statement(request: web.Request) -> web.Response:
    search = [{"name": "patient:identifier", "type": "token"}, {"name": "_id", "type": "token"}]
    kinds = [*BUILDERS, "DocumentReference"]
    return fhir_response({
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "date": fhir.instant(0), "fhirVersion": "4.0.1", "format": ["json"],
        "rest": [{"mode": "server", "resource": [
            {"type": kind, "interaction": [{"code": "read"}, {"code": "search-type"}],
             "searchParam": search} for kind in kinds]}],
    })  # fmt: skip


def audited(request: web.Request, who: Principal, consult: Consult, kind: str) -> None:
    audit = request.app[AUDIT]
    audit.record("consult.viewed", who.public(), consult_id=consult.id, origin="fhir", kind=kind)
    if consult.report is not None and kind in ("Composition", "Bundle"):
        audit.record("report.viewed", who.public(), consult_id=consult.id,
                     report_sha256=consult.report_sha256, origin="fhir")  # fmt: skip


async def recordings_of(request: web.Request, consult_ids: list[str]) -> dict:
    with database_errors():
        return await records_of(request).reader.recordings(consult_ids)


def resource_type(request: web.Request) -> str:
    kind = request.match_info["type"]
    if kind not in BUILDERS and kind != "DocumentReference":
        raise ApiError(404, "not_found", f"no FHIR resource type {kind!r} here")
    return kind


@routes.get("/fhir/{type}/{id}")
async def read(request: web.Request) -> web.Response:
    who = await principal(request)
    kind, resource_id = resource_type(request), fhir.jisr_id(request.match_info["id"])
    if kind == "DocumentReference":
        return await read_document(request, who, resource_id)
    consult = await past_consult(request, who, resource_id)
    recordings = (await recordings_of(request, [consult.id])).get(consult.id, [])
    resource = BUILDERS[kind](consult, recordings, base_url(request))
    if resource is None:
        raise ApiError(404, "not_found", f"consult {consult.id} has no {kind} yet")
    audited(request, who, consult, kind)
    return fhir_response(resource)


async def read_document(request: web.Request, who: Principal, recording_id: str) -> web.Response:
    if not ID.match(recording_id):
        raise ApiError(404, "not_found", "no such DocumentReference")
    with database_errors():
        consult_id = await records_of(request).reader.recording_consult(recording_id)
    if consult_id is None:
        raise ApiError(404, "not_found", "no such DocumentReference")
    consult = await past_consult(request, who, consult_id)
    recordings = (await recordings_of(request, [consult.id])).get(consult.id, [])
    found = next((r for r in recordings if r.id == recording_id), None)
    if found is None:
        raise ApiError(404, "not_found", "no such DocumentReference")
    audited(request, who, consult, "DocumentReference")
    return fhir_response(fhir.document_reference(consult, found))


def patient_identifier(request: web.Request) -> tuple[str | None, str] | None:
    """``[system|]value`` of the patient search parameter given (None: none)."""
    given = [(name, request.query[name]) for name in PATIENT_PARAMS if name in request.query]
    if not given:
        return None
    if len(given) > 1:
        raise ApiError(400, "bad_query", "give the patient's identifier once")
    system, bar, value = given[0][1].rpartition("|")
    if not PATIENT_REF.match(value):
        raise ApiError(400, "bad_query", "the patient identifier is not a valid reference")
    return (system if bar else None), value


@routes.get("/fhir/{type}")
async def search(request: web.Request) -> web.Response:
    """Search by the patient's identifier, or by ``_id`` (a consult id)."""
    who = await principal(request)
    kind = resource_type(request)
    known = {*PATIENT_PARAMS, "_id", "_count", "_format"}
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise ApiError(400, "bad_query", f"unsupported search parameters: {', '.join(unknown)}")
    consults = await search_consults(request, who)
    recordings = await recordings_of(request, [c.id for c in consults])
    found = []
    for consult in consults:
        mine = recordings.get(consult.id, [])
        if kind == "DocumentReference":
            found.extend(fhir.document_reference(consult, r) for r in mine)
        else:
            resource = BUILDERS[kind](consult, mine, base_url(request))
            if resource is not None:
                found.append(resource)
        audited(request, who, consult, kind)
    return fhir_response(fhir.searchset(found, base_url(request)))


async def search_consults(request: web.Request, who: Principal) -> list[Consult]:
    identifier = patient_identifier(request)
    by_id = request.query.get("_id")
    if identifier is None and by_id is None:
        raise ApiError(400, "bad_query", "search by patient:identifier or _id")
    if by_id is not None:
        try:
            consults = [await past_consult(request, who, fhir.jisr_id(by_id))]
        except ApiError as exc:
            if exc.code != "consult_not_found":
                raise
            consults = []  # a search finds nothing; it is not an error
        if identifier is not None:
            consults = [c for c in consults if c.patient_ref == identifier[1]]
    else:
        assert identifier is not None
        with database_errors():
            consults = await records_of(request).reader.consults(
                who, patient_ref=identifier[1], ended_only=False, limit=100
            )
    system = identifier[0] if identifier else None
    return [c for c in consults if can_see_consult(who, c)
            and (system is None or system == fhir.patient_system(c.organisation))]  # fmt: skip
