"""A real node, served on loopback from an event loop in its own thread, for
Hypothesis tests (which are synchronous) to talk to over HTTP and a WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Coroutine
from typing import Any

import orjson
from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestServer

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import Tokens, make_settings

GENEROUS = (
    "consult.user=1000000/minute;consult.address=1000000/minute;"
    "attachment.user=1000000/minute;attachment.address=1000000/minute;"
    "chat.user=1000000/minute;offer.user=1000000/minute;offer.address=1000000/minute;"
    "message.user=1000000/second;message.address=1000000/second;"
    "connection.user=1000000/minute;connection.address=1000000/minute;"
    "sign_in.address=1000000/minute"
)
REPLY_TIMEOUT_S = 10


class LiveNode:
    def __init__(self, **settings: Any) -> None:
        self.settings = make_settings(rate_limits=GENEROUS, max_waiting_per_referrer=10_000,
                                      **settings)  # fmt: skip
        self.tokens = Tokens(self.settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.refs = itertools.count()
        self.run(self._start())

    def run(self, coro: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> None:
        self.server = TestServer(create_app(self.settings, store=MemoryStore()))
        await self.server.start_server()
        self.http = ClientSession()
        self.base = str(self.server.make_url("")).rstrip("/")
        self.sockets: dict[tuple[str, str | None], Any] = {}

    async def _signed_in(self, token: str, session_id: str | None):
        """A socket signed in with ``token`` (and joined to ``session_id``), opened
        again whenever the server closed the last one."""
        ws = self.sockets.get((token, session_id))
        if ws is None or ws.closed:
            ws = await self.http.ws_connect(self.base.replace("http", "ws", 1) + "/ws")
            self.sockets[(token, session_id)] = ws
            for message in ({"type": "auth", "token": token},
                            {"type": "join", "session_id": session_id}):  # fmt: skip
                if message.get("session_id", "") is None:
                    continue
                await ws.send_json({**message, "ref": "setup"})
                reply = await ws.receive_json(timeout=REPLY_TIMEOUT_S)
                assert reply["type"] in ("welcome", "joined"), reply
        return ws

    def exchange(self, frame: str | bytes, token: str, session_id: str | None = None) -> list:
        """Send one frame on a signed-in socket; every message the server sent back
        before it answered the ping that follows (or before it closed the socket)."""
        return self.run(self._exchange(frame, token, session_id))

    async def _exchange(self, frame: str | bytes, token: str, session_id: str | None) -> list:
        ws = await self._signed_in(token, session_id)
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        sync = f"sync-{next(self.refs)}"
        if not ws.closed:
            await ws.send_json({"type": "ping", "ref": sync})
        seen: list[dict] = []
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                data = msg.json()
                for message in data if isinstance(data, list) else [data]:
                    if message.get("ref") == sync:
                        return seen
                    seen.append(message)
        return seen  # the server closed the socket (a refused token, as it should)

    def live_session(self) -> str:
        """A consult accepted by the usual specialist: its session's id."""
        json_body = {"specialty": "cardiology", "urgency": "urgent", "summary": "s",
                     "patient_ref": "P-1"}  # fmt: skip
        header = {"Content-Type": "application/json"}
        referrer, specialist = self.tokens.referrer, self.tokens.specialist
        _, consult = self.http_call("POST", "/api/consults", orjson.dumps(json_body),
                                    {**header, "Authorization": f"Bearer {referrer}"})  # fmt: skip
        _, accepted = self.http_call("POST", f"/api/consults/{consult['id']}/accept", b"",
                                     {"Authorization": f"Bearer {specialist}"})  # fmt: skip
        return accepted["session"]["id"]

    def http_call(self, method: str, path: str, body: bytes, headers: dict) -> tuple[int, Any]:
        return self.run(self._http(method, path, body, headers))

    async def _http(self, method: str, path: str, body: bytes, headers: dict):
        async with self.http.request(method, self.base + path, data=body, headers=headers) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else None)

    def close(self) -> None:
        async def stop() -> None:
            for ws in self.sockets.values():
                await ws.close()
            await self.http.close()
            await self.server.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
