"""Signaling carried to the node hosting a session: a connection that lands on
another node joins through this node's client connection to the host, with the
user's own token (the host checks it again), and gets every reply back. Every
such request is signed by this node (``trust``): the host refuses unsigned ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
from aiohttp import (
    ClientConnectorError,
    ClientError,
    ClientSession,
    ClientSSLError,
    ClientWebSocketResponse,
    WSMsgType,
    WSServerHandshakeError,
)

from ..errors import ApiError
from ..logs import get_logger
from .trust import Trust

log = get_logger()

CONNECT_TIMEOUT_S = 5
SESSION_COOKIE = "jisr_session"  # signin.COOKIE (cluster does not import the pages' sign-in)


class Upstream:
    """This node's WebSocket to the hosting node, on behalf of one client."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: object) -> None:
        await self.ws.send_str(orjson.dumps(message).decode())

    async def relay(self, deliver: Callable[[dict], None]) -> None:
        """Hands every message from the host to ``deliver`` until the host goes."""
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                break
            with contextlib.suppress(ValueError):
                deliver(orjson.loads(msg.data))

    async def close(self) -> None:
        await self.ws.close()


def unreachable() -> ApiError:
    return ApiError(503, "node_unavailable", "the node hosting this session is unreachable")


def tls_failed(exc: ClientSSLError) -> ApiError:
    """The host's certificate does not hold: it is not taken for dead (its sessions
    stay where they are), it is not spoken to either."""
    log.warning("cluster.tls_failed", error=type(exc).__name__)
    return unreachable()


async def open_upstream(
    http: ClientSession,
    internal_url: str,
    token: str | None,
    session_cookie: str | None,
    trust: Trust,
) -> Upstream | None:
    """Signed in on the host as the client is here (its token, or its sign-in
    session's cookie); None when the host is dead (it refuses connections: it died
    before its heartbeat expired)."""
    headers = trust.headers("GET", "/ws")
    if token is None and session_cookie:
        headers |= {"Cookie": f"{SESSION_COOKIE}={session_cookie}", "Origin": internal_url}
    try:
        ws = await asyncio.wait_for(
            http.ws_connect(internal_url.replace("http", "ws", 1) + "/ws", heartbeat=20,
                            headers=headers, ssl=trust.client_ssl or True),  # fmt: skip
            CONNECT_TIMEOUT_S,
        )
        await ws.send_json({"type": "auth", "token": token} if token else {"type": "auth"})
        welcome = await ws.receive_json(timeout=CONNECT_TIMEOUT_S)
    except ClientSSLError as exc:
        raise tls_failed(exc) from None
    except ClientConnectorError:
        return None
    except WSServerHandshakeError as exc:
        if exc.status == 403:  # the host does not know our secret: not the same cluster
            log.warning("cluster.refused_by_host", status=exc.status)
        raise unreachable() from None
    except (TimeoutError, OSError, ValueError, ClientError):
        raise unreachable() from None
    if welcome.get("type") != "welcome":
        await ws.close()
        raise ApiError(401, welcome.get("code", "token_invalid"), welcome.get("message", ""))
    return Upstream(ws)


FORWARDED = "X-Jisr-Forwarded"  # a request another node carried here: answer it locally


async def ask_host(
    http: ClientSession, internal_url: str, path: str, authorization: str, trust: Trust
) -> dict | None:
    """What the hosting node answers to ``GET path`` for the same user (it checks the
    token again); None when the host is dead (it refuses connections)."""
    headers = {"Authorization": authorization, FORWARDED: "1", **trust.headers("GET", path)}
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            async with http.get(
                internal_url + path, headers=headers, ssl=trust.client_ssl or True
            ) as response:
                body = await response.json(loads=orjson.loads)
    except ClientSSLError as exc:
        raise tls_failed(exc) from None
    except ClientConnectorError:
        return None
    except (TimeoutError, OSError, ValueError, ClientError):
        raise unreachable() from None
    if response.status != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if error.get("code") == "cluster_auth":  # not the same cluster secret
            log.warning("cluster.refused_by_host", status=response.status)
            raise unreachable()
        raise ApiError(response.status, error.get("code", "node_unavailable"),
                       error.get("message", "the hosting node refused"))  # fmt: skip
    return body
