"""HTTP API handlers (docs/protocol.md)."""

from __future__ import annotations

from aiohttp import web

from .auth import Principal
from .errors import ApiError
from .keys import CONSULTS, HUB, SETTINGS, STORE, VERIFIER
from .protocol import NewConsult, parse_body, parse_json
from .store import StoreUnavailable

routes = web.RouteTableDef()


def principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    return request.app[VERIFIER].verify(token.strip())


async def json_body(request: web.Request) -> object:
    limit = request.app[SETTINGS].max_message_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"body is larger than {limit} bytes")
    return parse_json(await request.read(), limit)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreUnavailable:
        raise ApiError(503, "store_unavailable", "session state is unavailable") from None
    return web.json_response({"status": "ready"})


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "specialties": settings.specialties,
            "urgencies": ["critical", "urgent", "routine"],
            "ice_servers": [],
        }
    )


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    return web.json_response(principal(request).public())


@routes.post("/api/consults")
async def create_consult(request: web.Request) -> web.Response:
    who = principal(request)
    body = parse_body(NewConsult, await json_body(request))
    consult = await request.app[CONSULTS].create(who, body)
    return web.json_response(consult, status=201)


@routes.get("/api/consults")
async def list_consults(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"consults": await request.app[CONSULTS].visible(who)})


@routes.get("/api/consults/{id}")
async def get_consult(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(await request.app[CONSULTS].get(who, request.match_info["id"]))


@routes.post("/api/consults/{id}/accept")
async def accept_consult(request: web.Request) -> web.Response:
    who = principal(request)
    consult, session = await request.app[CONSULTS].accept(who, request.match_info["id"])
    return web.json_response({"consult": consult, "session": session})


@routes.post("/api/consults/{id}/cancel")
async def cancel_consult(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(await request.app[CONSULTS].cancel(who, request.match_info["id"]))


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"sessions": await request.app[CONSULTS].live_sessions(who)})


@routes.get("/api/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    who = principal(request)
    session, _ = await request.app[CONSULTS].session_for(who, request.match_info["id"])
    return web.json_response({**session, "roster": request.app[HUB].roster(session["id"])})


@routes.post("/api/sessions/{id}/end")
async def end_session(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(await request.app[CONSULTS].end(who, request.match_info["id"]))
