"""One WebSocket connection's side of the server: who it is, which session it is
in, and its outbox: replies go out at once, pushes to a client that takes batches
wait a short linger for company, and a client that stops reading is closed."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .auth import Principal
from .cluster import Upstream
from .protocol import encode

OUTBOX_LIMIT = 1024
BATCH_LIMIT = 64  # messages per frame when a burst queued up for one connection
PUSH_LINGER_S = 0.05  # how long a push to a batching client waits for others
SLOW_READER_CLOSE_S = 2.0  # a client that stopped reading gets this long to take its close


class SharedPushes:
    """Pushes bound for every batching supervisor within one linger: each is kept
    once, here, and each such connection's outbox holds a Span of it. Pushing a
    consult change then costs the same for one supervisor or five hundred."""

    def __init__(self, organisation: str = "local") -> None:
        self.organisation = organisation  # whose overseers it is for
        self.items: list[str] = []
        self.open = True  # still taking pushes
        self.holders: list[Connection] = []


@dataclass(slots=True)
class Span:
    """The stretch of a SharedPushes that falls between two of one connection's
    own messages: it keeps the order in which everything was pushed."""

    shared: SharedPushes
    start: int
    end: int | None = None  # None: to the end of the shared list, which may still grow

    @property
    def ready(self) -> bool:
        return self.end is not None or not self.shared.open

    def seal(self) -> None:
        if self.end is None:
            self.end = len(self.shared.items)

    def texts(self) -> list[str]:
        return self.shared.items[self.start : self.end]


class Connection:
    def __init__(
        self, ws: web.WebSocketResponse, abort: Callable[[], None] | None = None
    ) -> None:
        """``abort``: drops the TCP connection at once (a client that stopped reading
        would otherwise hold its kernel buffers until TCP gives up)."""
        self.id = "w_" + secrets.token_hex(8)
        self.ws = ws
        self.principal: Principal | None = None
        self.session_id: str | None = None
        self.part: str | None = None  # "referrer" | "specialist" | None (observer)
        self._member: dict | None = None  # as the roster lists it (``member``)
        self._member_for: tuple[Principal, str | None] | None = None  # built for whom
        self.token: str | None = None  # kept only to sign in on the hosting node
        # Set when the session's media lives on another node: every further message
        # goes there, and its replies come back through this connection.
        self.upstream: Upstream | None = None
        self.upstream_task: asyncio.Task | None = None
        self.presence: str | None = None  # a specialist's on-call choice
        self.batch = False  # takes several messages per frame (it said so at auth)
        # A plain deque: a consult change pushed to every supervisor appends to
        # hundreds of outboxes at once, and asyncio.Queue costs several times more.
        self._outbox: deque[str | Span] = deque()
        self._queued = asyncio.Event()  # the outbox holds something (or is closing)
        self._flush_now = asyncio.Event()  # a reply (or the end) is queued: no lingering
        self._closing = False
        self._abort = abort
        self.writer: asyncio.Task | None = None  # the write loop's task
        self.expiry: asyncio.TimerHandle | None = None  # signs it out when its token expires
        self.address: str | None = None  # the client's address (rate limits)
        self.session_cookie: str | None = None  # the pages' sign-in session, if any
        # messages over the message limit: since when counted, how many, last answered
        self.flood_since, self.flood_refused, self.refusal_answered = 0.0, 0, 0.0

    @property
    def on_call(self) -> bool:
        """Free to take a new consult: available (or never said otherwise) and not
        in a live session."""
        return self.presence in (None, "available") and not (self.session_id and self.part)

    def send(self, message: dict) -> None:
        self.send_text(encode(message), reply=message.get("ref") is not None)

    def send_text(self, text: str, *, reply: bool = False) -> None:
        """A message already encoded (a broadcast is encoded once for everyone).
        ``reply``: it answers something this client asked, so it never waits."""
        if self._closing:
            return
        if len(self._outbox) >= OUTBOX_LIMIT:  # a page that stopped reading; it reconnects
            self._closing = True
            self._outbox.clear()  # and gets the state afresh then: no backlog to send
            self._queued.set()
            asyncio.ensure_future(self._drop_slow_reader())
            return
        last = self._outbox[-1] if self._outbox else None
        if isinstance(last, Span) and not last.ready:
            last.seal()  # shared pushes so far go before this message, later ones after
            self._outbox.extend((text, Span(last.shared, last.end)))
        else:
            self._outbox.append(text)
        self._queued.set()
        if reply:
            self._flush_now.set()

    async def end_session(self, code: str, message: str) -> None:
        """Sign the client out (token expired or revoked): tell it why, send what is
        queued, and close with 4401."""
        self.send({"type": "error", "code": code, "message": message, "ref": None})
        self.close_outbox()
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(SLOW_READER_CLOSE_S):
                if self.writer is not None:
                    await asyncio.shield(self.writer)
                await self.ws.close(code=4401, message=b"unauthorized")

    async def _drop_slow_reader(self) -> None:
        """Say why (1008), but do not wait on a client that reads nothing: after a
        short while the connection is cut."""
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(SLOW_READER_CLOSE_S):
                await self.ws.close(code=1008, message=b"too slow")
        if self._abort is not None:
            self._abort()

    def share(self, shared: SharedPushes) -> None:
        """From now until ``shared`` closes, what is pushed to it goes to this client."""
        if self._closing:
            return
        shared.holders.append(self)
        self._outbox.append(Span(shared, len(shared.items)))

    def shared_closed(self) -> None:
        """A shared list this client holds takes no more pushes: it has lingered,
        send it."""
        self._queued.set()
        self._flush_now.set()

    def _ready(self, limit: int) -> list[str | Span]:
        """The messages at the head of the outbox that may go now, up to ``limit``:
        a shared stretch still open waits until it closes."""
        ready = []
        for entry in self._outbox:
            if len(ready) == limit or (isinstance(entry, Span) and not entry.ready):
                break
            ready.append(entry)
        return ready

    async def write_loop(self) -> None:
        """Sends what the outbox holds. To a client that said it takes batches,
        pushes wait up to PUSH_LINGER_S for company and go out together, as one JSON
        array in one frame: when a consult change is pushed to every supervisor, each
        gets one write per linger instead of one per change. A reply flushes at once
        (with whatever queued before it, in order), and so does the end: the outbox
        is sent to its last message."""
        outbox, loop = self._outbox, asyncio.get_running_loop()
        while True:
            if not self._ready(1):
                if self._closing and not outbox:
                    return
                self._flush_now.clear()
                self._queued.clear()
                await self._queued.wait()
                continue
            if self.batch and not self._flush_now.is_set():
                timer = loop.call_later(PUSH_LINGER_S, self._flush_now.set)
                await self._flush_now.wait()
                timer.cancel()
            if self.ws.closed:
                return
            texts: list[str] = []
            for entry in self._ready(BATCH_LIMIT if self.batch else 1):
                outbox.popleft()
                texts.extend(entry.texts() if isinstance(entry, Span) else (entry,))
            if not texts:
                continue
            text = texts[0] if len(texts) == 1 else f"[{','.join(texts)}]"
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(text)

    def close_outbox(self) -> None:
        """No more messages: the write loop sends what is queued, then ends."""
        self._closing = True
        if self._outbox and isinstance(self._outbox[-1], Span):
            self._outbox[-1].seal()
        self._queued.set()
        self._flush_now.set()

    def member(self) -> dict:
        """This connection as its session's roster lists it. Built once per signed-in
        user and part (every join lists every member), so shared: never change it."""
        who, part = self.principal, self.part
        assert who is not None
        built_for = self._member_for
        if built_for is None or built_for[0] is not who or built_for[1] != part:
            self._member_for = who, part
            self._member = {
                **who.ref(), "role": who.role,
                "as": "observer" if part is None else "participant", "status": "connected",
            }  # fmt: skip
        return self._member  # type: ignore[return-value]  # built above

