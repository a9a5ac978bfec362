"""HTTP API of the record store (docs/protocol.md): past consults, read after the
live state has forgotten them (each read audited), and the audit trail for admins
(query and export). Errors are the API's usual ``{"error": {code, message}}``."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator

import msgspec
from aiohttp import web

from .access import can_see_consult
from .api import principal, respond
from .auth import Principal
from .errors import ApiError
from .keys import AUDIT, CASE_PACKET, RECORDS, STORE
from .logs import get_logger
from .model import Consult
from .records import fhir
from .records.database import transient
from .records.service import Records
from .records.trail import PAGE, TrailQuery, search

routes = web.RouteTableDef()
log = get_logger()
PATIENT_REF = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def records_of(request: web.Request) -> Records:
    records = request.app[RECORDS]
    if records is None:
        raise ApiError(503, "records_unavailable", "the record store is not configured on "
                       "this server (it needs the master key)")  # fmt: skip
    return records


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """The record store down or unreachable: ``503 records_unavailable``."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        if not transient(exc):
            raise
        log.warning("records.read_failed", error_type=type(exc).__name__)
        raise ApiError(503, "records_unavailable",
                       "the record store is unavailable; try again shortly") from None  # fmt: skip


def query_value(request: web.Request, name: str, kind: type, *, pattern: re.Pattern | None = None,
                low: float | None = None, high: float | None = None):  # fmt: skip
    """One query parameter: absent (None), or valid (``400 bad_query`` otherwise)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name} must be a {kind.__name__}") from None
    if pattern is not None and not pattern.match(raw):
        raise ApiError(400, "bad_query", f"{name} is not a valid value")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(400, "bad_query", f"{name} must be between {low} and {high}")
    return value


def summary(consult: Consult) -> dict:
    """A past consult in a list: its facts, not its report's text."""
    return {
        "id": consult.id, "state": consult.state, "specialty": consult.specialty,
        "urgency": consult.urgency, "patient_ref": consult.patient_ref,
        "facility": consult.facility, "organisation": consult.organisation,
        "referrer": consult.referrer, "specialist": consult.specialist,
        "created_at": consult.created_at, "ended_at": consult.ended_at or consult.cancelled_at,
        "has_report": consult.report is not None,
    }  # fmt: skip


@routes.get("/api/records/consults")
async def past_consults(request: web.Request) -> web.Response:
    """The caller's past (ended or cancelled) consults, newest first: a referrer its
    facility's, a specialist its own, a supervisor or admin its organisation's."""
    who = await principal(request)
    records = records_of(request)
    patient = query_value(request, "patient", str, pattern=PATIENT_REF)
    before = query_value(request, "before", float, low=0)
    limit = query_value(request, "limit", int, low=1, high=500) or 100
    with database_errors():
        found = await records.reader.consults(who, patient_ref=patient, before=before, limit=limit)
    return respond({"consults": [summary(c) for c in found]})


async def past_consult(request: web.Request, who: Principal, consult_id: str) -> Consult:
    """A consult from the record store that ``who`` may read (404 otherwise)."""
    if not ID.match(consult_id):
        raise ApiError(404, "consult_not_found", "no such consult")
    with database_errors():
        consult = await records_of(request).reader.consult(consult_id, who)
    if consult is None or not can_see_consult(who, consult):
        raise ApiError(404, "consult_not_found", "no such consult")
    return consult


@routes.get("/api/records/consults/{id}")
async def past_consult_detail(request: web.Request) -> web.Response:
    """A consult as recorded, with its report, its history and its recordings;
    audited (``consult.viewed``, and ``report.viewed`` when it has a report)."""
    who = await principal(request)
    records = records_of(request)
    consult = await past_consult(request, who, request.match_info["id"])
    with database_errors():
        history = await records.reader.history(consult.id)
        recordings = (await records.reader.recordings([consult.id])).get(consult.id, [])
    audit_read(request, who, consult, "records")
    return respond({"consult": consult, "history": history, "recordings": recordings})


def audit_read(request: web.Request, who: Principal, consult: Consult, source: str | None) -> None:
    """A consult was read (and its report with it, when it has one)."""
    audit, where = request.app[AUDIT], {"origin": source} if source else {}
    audit.record("consult.viewed", who.public(), consult_id=consult.id, **where)
    if consult.report is not None:
        audit.record("report.viewed", who.public(), consult_id=consult.id,
                     report_sha256=consult.report_sha256, **where)  # fmt: skip


async def live_or_recorded(request: web.Request, who: Principal, consult_id: str) -> Consult:
    """The consult from the live state, else (forgotten there) from the record store."""
    consult = await request.app[STORE].get_consult(consult_id)
    if consult is not None and can_see_consult(who, consult):
        return consult
    if consult is None and request.app[RECORDS] is not None:
        return await past_consult(request, who, consult_id)
    raise ApiError(404, "consult_not_found", "no such consult")


@routes.get("/api/consults/{id}")
async def get_consult(request: web.Request) -> web.Response:
    """A consult from the live state, or from the record store once the live state
    has forgotten it; audited."""
    who = await principal(request)
    consult = await live_or_recorded(request, who, request.match_info["id"])
    audit_read(request, who, consult, None)
    return respond(consult)


@routes.get("/api/consults/{id}/report")
async def export_report(request: web.Request) -> web.Response:
    who = await principal(request)
    consult = await live_or_recorded(request, who, request.match_info["id"])
    if consult.report is None:
        raise ApiError(404, "report_not_found", "this consult has no report yet")
    request.app[AUDIT].record("report.viewed", who.public(), consult_id=consult.id,
                              report_sha256=consult.report_sha256)  # fmt: skip
    body = {"report": consult.report, "sha256": consult.report_sha256}
    return respond(
        body, headers={"Content-Disposition": f'attachment; filename="consult-{consult.id}.json"'}
    )


@routes.get("/api/consults/{id}/attachments/{attachment}")
async def get_attachment(request: web.Request) -> web.Response:
    """A case-packet file, of a live consult or (its index in the record store) of a
    past one, while its retention lasts; audited as ``attachment.viewed``."""
    who = await principal(request)
    try:
        consult = await live_or_recorded(request, who, request.match_info["id"])
    except ApiError as exc:
        if exc.code != "consult_not_found":
            raise
        raise ApiError(404, "attachment_not_found", "no such attachment") from None
    entry, data = await asyncio.to_thread(
        request.app[CASE_PACKET].read, who, consult, request.match_info["attachment"]
    )
    return web.Response(body=data, headers={
        "Content-Type": entry.content_type, "Content-Disposition": "inline",
        "Cache-Control": "no-store",
    })  # fmt: skip


# the audit trail ------------------------------------------------------------------


def trail_query(request: web.Request, who: Principal) -> TrailQuery:
    if who.role != "admin":
        raise ApiError(403, "forbidden", "only admins read the audit trail")
    return TrailQuery(
        organisation=who.organisation,
        patient_ref=query_value(request, "patient", str, pattern=PATIENT_REF),
        consult_id=query_value(request, "consult", str, pattern=ID),
        actor=query_value(request, "actor", str, pattern=re.compile(r"^[^\x00-\x1f]{1,255}$")),
        since=query_value(request, "since", float, low=0),
        until=query_value(request, "until", float, low=0),
        after=query_value(request, "after", int, low=0) or 0,
        limit=query_value(request, "limit", int, low=1, high=1000) or PAGE,
    )  # fmt: skip


def _filters(query: TrailQuery) -> dict:
    """The filters of a query, as its own audit entry keeps them."""
    names = {"patient_ref": "patient_ref", "consult_id": "consult_id", "actor": "actor_sub",
             "since": "since", "until": "until"}  # fmt: skip
    given = msgspec.structs.asdict(query).items()
    return {names[k]: v for k, v in given if k in names and v is not None}


@routes.get("/api/audit")
async def audit_trail(request: web.Request) -> web.Response:
    """Admins: the audit trail of their organisation, filtered; pages by ``after``."""
    who = await principal(request)
    query = trail_query(request, who)
    records = records_of(request)
    with database_errors():
        entries = await search(records.engine, query)
    request.app[AUDIT].record("audit.queried", who.public(), count=len(entries), **_filters(query))
    return respond({"entries": entries, "next": entries[-1].seq if len(entries) == query.limit
                    else None})  # fmt: skip


@routes.get("/api/audit/export")
async def audit_export(request: web.Request) -> web.StreamResponse:
    """The same entries as JSON lines (``format=jsonl``, the default) or as FHIR
    ``AuditEvent`` resources, one per line (``format=fhir``)."""
    who = await principal(request)
    kind = request.query.get("format", "jsonl")
    if kind not in ("jsonl", "fhir"):
        raise ApiError(400, "bad_query", "format must be jsonl or fhir")
    query = trail_query(request, who)
    records = records_of(request)
    with database_errors():
        entries = await search(records.engine, query)
    request.app[AUDIT].record("audit.exported", who.public(), count=len(entries), kind=kind,
                              **_filters(query))  # fmt: skip
    encode = msgspec.json.encode
    lines = [encode(fhir.audit_event(e) if kind == "fhir" else e) for e in entries]
    content_type = "application/fhir+ndjson" if kind == "fhir" else "application/x-ndjson"
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    return web.Response(body=b"".join(line + b"\n" for line in lines), headers=headers)
