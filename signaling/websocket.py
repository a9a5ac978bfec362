"""``GET /ws``: one WebSocket's life. It must authenticate within AUTH_TIMEOUT_S;
each message is parsed, validated and handled in order; every refusal is answered
with an ``error`` carrying the refused message's ``ref``, and the connection keeps
serving unless its token is refused."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import WSMsgType, web

from .connection import Connection
from .errors import ApiError, refused, store_unavailable
from .handler import SignalingHandler
from .keys import HUB, LIMITS, SETTINGS
from .logs import get_logger
from .middleware import error_response
from .protocol import Reauth, parse_client_message, parse_json, ref_of
from .signin import COOKIE, check_origin
from .store import StoreUnavailable, TransitionRefused

log = get_logger()
AUTH_TIMEOUT_S = 10
CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
SIGNED_OUT = ("token_expired", "token_invalid", "token_revoked")  # the socket closes (4401)
# A client that has this many messages refused within FLOOD_WINDOW_S is flooding, not
# busy (a page at work sends a few a second): its socket is closed.
FLOOD_CUTOFF = 1000
FLOOD_WINDOW_S = 10.0


def error_message(error: ApiError, ref: str | None) -> dict:
    return {"type": "error", "code": error.code, "message": error.message,
            "ref": error.ref or ref, **error.extra}  # fmt: skip


async def websocket(request: web.Request) -> web.StreamResponse:
    try:
        await request.app[LIMITS].hit("connection", address=request.remote)
        if COOKIE in request.cookies:
            check_origin(request)  # a session cookie rides only on Jisr's own pages
    except ApiError as exc:  # refused before the upgrade: an HTTP answer
        return error_response(exc)
    limit = request.app[SETTINGS].max_message_bytes
    # aiohttp closes the socket past max_msg_size; below that hard cap we refuse the
    # message ourselves and keep the connection.
    ws = web.WebSocketResponse(max_msg_size=max(4 * limit, 1 << 20), heartbeat=20)
    await ws.prepare(request)
    transport = request.transport
    conn = Connection(ws, abort=transport.abort if transport is not None else None)
    conn.address = request.remote
    conn.session_cookie = request.cookies.get(COOKIE)
    writer = conn.writer = asyncio.ensure_future(conn.write_loop())
    try:
        await read_messages(request.app, conn, limit, writer)
    finally:
        await hang_up(request.app, conn, writer)
    return ws


async def read_messages(
    app: web.Application, conn: Connection, limit: int, writer: asyncio.Future
) -> None:
    handler = SignalingHandler(app, conn)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + AUTH_TIMEOUT_S
    while True:
        timeout = None if conn.principal else max(0.0, deadline - loop.time())
        try:
            msg = await conn.ws.receive(timeout=timeout)
        except TimeoutError:
            error = ApiError(401, "unauthenticated", "no auth message in time")
            conn.send(error_message(error, None))
            return
        if msg.type in CLOSING:
            return
        error = await handle_one(handler, conn, msg, limit)
        if error is not None and error.code in SIGNED_OUT:
            conn.close_outbox()
            await writer
            await conn.ws.close(code=4401, message=b"unauthorized")
            return


async def handle_one(
    handler: SignalingHandler, conn: Connection, msg, limit: int
) -> ApiError | None:
    """Handle one frame; the refusal it was answered with, if any."""
    data: object = None
    if await over_message_limit(handler, conn, msg, limit):
        return None
    try:
        if msg.type != WSMsgType.TEXT:
            raise ApiError(400, "bad_json", "only text JSON messages are accepted")
        data = parse_json(msg.data, limit)
        message = parse_client_message(data)
        if conn.upstream is not None and not isinstance(message, Reauth):
            await conn.upstream.send(data)  # the hosting node answers
        else:
            await handler.handle(message)
        return None
    except ApiError as exc:
        error = exc
    except TransitionRefused as exc:
        error = refused(exc)
    except StoreUnavailable:
        error = store_unavailable()
    except Exception:
        log.exception("ws.internal_error", conn=conn.id)
        error = ApiError(500, "internal", "internal error")
    conn.send(error_message(error, ref_of(data)))
    return error


async def over_message_limit(
    handler: SignalingHandler, conn: Connection, msg, limit: int
) -> bool:
    """Counted before anything else is done with the frame. Past the limit the first
    message is answered ``rate_limited`` and the rest are dropped unanswered (a flood
    costs the server as little as possible); a client that goes on is cut off."""
    who = conn.principal  # one user's flood must not hold back others at its address
    try:
        await handler.limits.hit("message", user=who.sub if who else None,
                                 address=None if who else conn.address)  # fmt: skip
    except ApiError as exc:
        now = time.monotonic()
        if now - conn.flood_since > FLOOD_WINDOW_S:
            conn.flood_since, conn.flood_refused = now, 0
        conn.flood_refused += 1
        if now - conn.refusal_answered >= 1.0:  # at most one answer a second
            conn.refusal_answered = now
            ref = None
            with contextlib.suppress(ApiError):
                ref = ref_of(parse_json(msg.data, limit)) if msg.type == WSMsgType.TEXT else None
            conn.send(error_message(exc, ref))
        if conn.flood_refused == FLOOD_CUTOFF:
            log.info("ws.flood_cut_off", conn=conn.id)
            asyncio.ensure_future(conn.ws.close(code=1008, message=b"flooding"))
        return True
    return False


async def hang_up(app: web.Application, conn: Connection, writer: asyncio.Future) -> None:
    if conn.expiry is not None:
        conn.expiry.cancel()
    if conn.upstream is not None:
        await conn.upstream.close()
    hub = app[HUB]
    hub.unregister(conn)
    await hub.attendance.leave(conn, reason="disconnected")
    conn.close_outbox()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer, 2)
    await conn.ws.close()
