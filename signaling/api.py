"""HTTP API handlers (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .access import can_see_consult
from .attachments import UploadCut, too_large
from .auth import Principal
from .cluster import FORWARDED, Remote, ask_host
from .errors import ApiError, store_unavailable
from .keys import (
    AUDIT,
    CASE_PACKET,
    CLUSTER,
    CONSULTS,
    HTTP_CLIENT,
    HUB,
    IDENTITY,
    LIMITS,
    RECORDING,
    RECORDS,
    SETTINGS,
    STORE,
    TRIAGE,
    TRUST,
)
from .model import ConsultState, Urgency, to_json
from .protocol import (
    ConsultReport,
    Decline,
    NewConsult,
    Transfer,
    encode,
    parse_body,
    parse_json,
)
from .reads import audit_listed_reports
from .signin import COOKIE, check_origin, session_principal
from .store import StoreUnavailable
from .triage import Triage
from .turn import ice_servers

routes = web.RouteTableDef()


def respond(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer; typed records (``model``) are encoded as they are."""
    return web.json_response(body, status=status, headers=headers, dumps=encode)


async def principal(request: web.Request) -> Principal:
    """The caller: from its bearer token (API callers, the demo's links), else from
    the session cookie the pages' sign-in set (``signin``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return await request.app[IDENTITY].authenticate(token.strip(), request.remote)
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        raise ApiError(401, "unauthenticated", "sign in, or send a bearer token")
    check_origin(request)
    who = await session_principal(request.app, session_id)
    request.app[IDENTITY].check_not_revoked(who)
    return who


def request_timeout() -> ApiError:
    return ApiError(408, "request_timeout", "the request body stopped arriving")


async def json_body(request: web.Request) -> object:
    settings = request.app[SETTINGS]
    limit = settings.max_message_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(settings.request_body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise request_timeout() from None
    return parse_json(raw, limit)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreUnavailable:
        raise store_unavailable() from None
    records = request.app[RECORDS]
    if records is None:
        return respond({"status": "ready"})
    return respond({"status": "ready", "records": records.status()})


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    """Public settings; signed-in callers also get ICE servers with TURN
    credentials of their own (short-lived, TURN REST scheme)."""
    settings = request.app[SETTINGS]
    servers: list[dict] = []
    if request.headers.get("Authorization"):
        who = await principal(request)
        servers = ice_servers(
            settings.turn_urls, settings.turn_secret, who.sub, settings.turn_ttl_s, time.time()
        )
    return respond(
        {
            "specialties": settings.specialties,
            "urgencies": list(Urgency),
            "ice_servers": servers,
            "ice_transport_policy": settings.ice_transport_policy,
        }
    )


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    return respond((await principal(request)).public())


@routes.post("/api/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    """The caller's token stops working on every node at once (its open sockets
    are closed), until it would have expired anyway."""
    who = await principal(request)
    await request.app[IDENTITY].sign_out(who)
    request.app[AUDIT].record("user.signed_out", who.public())
    return respond({"signed_out": True})


@routes.post("/api/consults")
async def create_consult(request: web.Request) -> web.Response:
    who = await principal(request)
    await request.app[LIMITS].hit("consult", user=who.sub, address=request.remote)
    body = parse_body(NewConsult, await json_body(request))
    consult = await request.app[CONSULTS].create(who, body)
    return respond(consult, status=201)


@routes.get("/api/consults")
async def list_consults(request: web.Request) -> web.Response:
    """Referrers also see each waiting consult's place in its queue."""
    who = await principal(request)
    service = request.app[CONSULTS]
    consults = await service.visible(who)
    audit_listed_reports(request, who, consults)
    if who.role != "referrer":
        return respond({"consults": consults})
    places = await service.positions(consults)
    return respond({"consults": [
        {**to_json(c), "position": places.get(c.id)} if c.state == ConsultState.WAITING else c
        for c in consults
    ]})  # fmt: skip


@routes.post("/api/consults/{id}/accept")
async def accept_consult(request: web.Request) -> web.Response:
    who = await principal(request)
    consult, session = await request.app[CONSULTS].accept(who, request.match_info["id"])
    return respond({"consult": consult, "session": session})


@routes.post("/api/consults/{id}/cancel")
async def cancel_consult(request: web.Request) -> web.Response:
    who = await principal(request)
    return respond(await request.app[CONSULTS].cancel(who, request.match_info["id"]))


@routes.post("/api/consults/{id}/decline")
async def decline_consult(request: web.Request) -> web.Response:
    who = await principal(request)
    body = parse_body(Decline, await json_body(request))
    consult = await request.app[CONSULTS].decline(who, request.match_info["id"], body.reason)
    return respond(consult)


@routes.post("/api/consults/{id}/transfer")
async def transfer_consult(request: web.Request) -> web.Response:
    who = await principal(request)
    body = parse_body(Transfer, await json_body(request))
    consult = await request.app[CONSULTS].transfer(
        who, request.match_info["id"], body.specialty, body.reason
    )
    return respond(consult)


@routes.post("/api/consults/{id}/report")
async def report_consult(request: web.Request) -> web.Response:
    who = await principal(request)
    body = parse_body(ConsultReport, await json_body(request))
    consult = await request.app[CONSULTS].report(who, request.match_info["id"], body)
    return respond(consult)


@routes.post("/api/consults/{id}/attachments")
async def add_attachment(request: web.Request) -> web.Response:
    """The file is the raw body (``Content-Length`` or chunked); its name travels
    URL-encoded in ``X-Filename``. It is streamed to its encrypted file as it comes."""
    who = await principal(request)
    consult = await request.app[CONSULTS].get(who, request.match_info["id"])
    packet = request.app[CASE_PACKET]
    packet.check_may_add(who, consult)
    await request.app[LIMITS].hit("attachment", user=who.sub, address=request.remote)
    if request.content_length is not None and request.content_length > packet.max_bytes:
        raise too_large(packet.max_bytes)
    filename = urllib.parse.unquote(request.headers.get("X-Filename", ""))
    declared = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    entry = await packet.add(who, consult, filename, declared, body_chunks(request))
    return respond(entry, status=201)


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; UploadCut if the client stops sending before
    its end (a dropped connection, a chunked body never finished), ``408`` if
    nothing arrives for ``JISR_REQUEST_BODY_TIMEOUT_S``."""
    idle = request.app[SETTINGS].request_body_timeout_s
    try:
        while True:
            async with asyncio.timeout(idle):
                chunk = await request.content.readany()
            if not chunk:
                return
            yield chunk
    except TimeoutError:
        raise request_timeout() from None
    except (ConnectionError, ClientPayloadError, HttpProcessingError) as exc:
        raise UploadCut(type(exc).__name__) from None


@routes.get("/api/oncall")
async def on_call(request: web.Request) -> web.Response:
    who = await principal(request)
    if not who.is_overseer:
        raise ApiError(403, "forbidden", "only supervisors see who is on call")
    return respond({"presence": await presence_list(request, who)})


async def presence_list(request: web.Request, who: Principal) -> list[dict]:
    """Who of the overseer's own organisation is on call."""
    presence = await request.app[STORE].list_presence()
    return [{"sub": sub, **to_json(info)} for sub, info in presence.items()
            if info.organisation == who.organisation]  # fmt: skip


def mean_time_to_accept(triage: Triage) -> dict[str, float]:
    """Per urgency, the mean time to accept of this node's accepts so far."""
    totals: dict[str, list[float]] = {}  # urgency -> [seconds, count]
    for metric in triage.metrics.time_to_accept.collect():
        for sample in metric.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind in ("sum", "count"):
                entry = totals.setdefault(sample.labels["urgency"], [0.0, 0.0])
                entry[kind == "count"] += sample.value
    return {u: round(t[0] / t[1], 1) for u, t in totals.items() if t[1]}


@routes.get("/api/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    """The supervisor's live picture: the queue by urgency with its oldest waiting
    time, escalated consults, who is on call, and accept times so far."""
    who = await principal(request)
    if not who.is_overseer:
        raise ApiError(403, "forbidden", "only supervisors see the dashboard")
    consults = [c for c in await request.app[STORE].list_consults() if can_see_consult(who, c)]
    now = request.app[CONSULTS].clock()
    waiting = [c for c in consults if c.state == ConsultState.WAITING]
    queue = {}
    for urgency in Urgency:
        ages = [now - c.created_at for c in waiting if c.urgency == urgency]
        queue[urgency] = {"waiting": len(ages), "oldest_s": round(max(ages, default=0), 1)}
    return respond({
        "queue": queue,
        "escalated": [c for c in waiting if c.escalated_at],
        "live": [c for c in consults if c.state in (ConsultState.ACCEPTED, ConsultState.LIVE)],
        "on_call": await presence_list(request, who),
        "mean_time_to_accept_s": mean_time_to_accept(request.app[TRIAGE]),
    })  # fmt: skip


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    triage = request.app[TRIAGE]
    with contextlib.suppress(StoreUnavailable):
        await triage.refresh_gauges()
    return web.Response(
        body=generate_latest(triage.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = await principal(request)
    return respond({"sessions": await request.app[CONSULTS].live_sessions(who)})


@routes.get("/api/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    """The session with its roster and recording state, as the node hosting its
    media knows them, whichever node is asked."""
    who = await principal(request)
    session, _ = await request.app[CONSULTS].session_for(who, request.match_info["id"])
    if FORWARDED not in request.headers:
        location = await request.app[CLUSTER].locate(session)
        if isinstance(location, Remote):
            http, authorization = request.app[HTTP_CLIENT], request.headers["Authorization"]
            trust = request.app[TRUST]
            assert trust is not None  # another node exists only with a cluster secret
            hosted = await ask_host(
                http, location.internal_url, request.path, authorization, trust
            )
            if hosted is not None:
                return respond(hosted)
    # Hosted here, or its host is dead: nobody is connected to it anywhere else.
    return respond({
        **to_json(session), "roster": request.app[HUB].attendance.roster(session.id),
        "recording": request.app[RECORDING].state(session.id),
    })  # fmt: skip


@routes.post("/api/sessions/{id}/end")
async def end_session(request: web.Request) -> web.Response:
    who = await principal(request)
    return respond(await request.app[CONSULTS].end(who, request.match_info["id"]))
