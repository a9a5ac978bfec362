"""The WebSocket signaling protocol (docs/protocol.md) and the hub that pushes
state changes to every open page on this node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass

from aiohttp import (
    ClientConnectorError,
    ClientError,
    ClientWebSocketResponse,
    WSMsgType,
    web,
)

from media import MediaError

from .auth import Principal
from .consults import ConsultService, may_take
from .errors import ApiError, store_unavailable
from .keys import (
    AUDIT,
    CONSULTS,
    HTTP_CLIENT,
    HUB,
    MEDIA,
    NODE_ID,
    RECORDING,
    SETTINGS,
    STORE,
    TRIAGE,
    VERIFIER,
)
from .logs import get_logger
from .protocol import (
    Auth,
    Candidate,
    Chat,
    Join,
    Leave,
    Offer,
    Ping,
    Presence,
    RecordingConsent,
    RecordingRequest,
    RecordingStop,
    encode,
    parse_client_message,
    parse_json,
    ref_of,
)
from .store import Conflict, StoreUnavailable

AUTH_TIMEOUT_S = 10
OUTBOX_LIMIT = 1024
BATCH_LIMIT = 64  # messages per frame when a burst queued up for one connection
PUSH_LINGER_S = 0.05  # how long a push to a batching client waits for others
WRITES_PER_SLICE = 32  # shared pushes sent to this many connections at a time
RECEIVES = {
    "referrer": ["specialist"],
    "specialist": ["referrer"],
    None: ["referrer", "specialist"],
}

log = get_logger()


class SharedPushes:
    """Pushes bound for every batching supervisor within one linger: each is kept
    once, here, and each such connection's outbox holds a Span of it. Pushing a
    consult change then costs the same for one supervisor or five hundred."""

    def __init__(self) -> None:
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
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.id = "w_" + secrets.token_hex(8)
        self.ws = ws
        self.principal: Principal | None = None
        self.session_id: str | None = None
        self.part: str | None = None  # "referrer" | "specialist" | None (observer)
        self.token: str | None = None  # kept only to sign in on the hosting node
        # Set when the session's media lives on another node: every further message
        # goes there, and its replies come back through this connection.
        self.upstream: ClientWebSocketResponse | None = None
        self.upstream_task: asyncio.Task | None = None
        self.presence: str | None = None  # a specialist's on-call choice
        self.batch = False  # takes several messages per frame (it said so at auth)
        # A plain deque: a consult change pushed to every supervisor appends to
        # hundreds of outboxes at once, and asyncio.Queue costs several times more.
        self._outbox: deque[str | Span] = deque()
        self._queued = asyncio.Event()  # the outbox holds something (or is closing)
        self._flush_now = asyncio.Event()  # a reply (or the end) is queued: no lingering
        self._closing = False

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
            asyncio.ensure_future(self.ws.close(code=1008, message=b"too slow"))
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
        assert self.principal is not None
        return {
            **self.principal.ref(),
            "role": self.principal.role,
            "as": "observer" if self.part is None else "participant",
            "status": "connected",
        }


QUEUE_STUB_FIELDS = ("id", "state", "specialty", "urgency", "facility", "created_at")


def notification(conn: Connection, consult: dict) -> str | None:
    """Which form of a consult change this connection gets: "full", "stub" (a
    specialist whose queue held it learns only that it left the queue), or None."""
    who = conn.principal
    if who.sees_everything:
        return "full"
    if who.role == "referrer":
        return "full" if consult["facility"] == who.facility else None
    if who.role == "specialist":
        if (consult.get("specialist") or {}).get("sub") == who.sub:
            return "full"
        if consult["state"] == "waiting":  # new work: only to those free to take it
            return "full" if conn.on_call and may_take(who, consult) else None
        return "stub" if consult["specialty"] in who.specialties else None
    return None


WATCHERS = ("everything",)
SHARING_WATCHERS = ("everything", "shared")  # batching: consult changes as SharedPushes


def audience_keys(conn: Connection) -> list[tuple[str, ...]]:
    """The groups a connection is filed under: a consult change is weighed (by
    ``notification``) only for the connections of the groups it concerns, not for
    every connection of the node."""
    who = conn.principal
    if who.sees_everything:
        return [SHARING_WATCHERS if conn.batch else WATCHERS]
    keys = [("sub", who.sub)]
    if who.role == "referrer":
        keys.append(("facility", who.facility))
    elif who.role == "specialist":
        keys += [("specialty", specialty) for specialty in who.specialties]
    return keys


def concerned_keys(consult: dict) -> list[tuple[str, ...]]:
    """The groups that may see a change of ``consult``: everyone who sees
    everything, its facility, its specialty, its specialist and those it was
    escalated to."""
    subs = [(consult.get("specialist") or {}).get("sub"), *consult.get("offered_to", [])]
    return [
        WATCHERS,
        SHARING_WATCHERS,
        ("facility", consult["facility"]),
        ("specialty", consult["specialty"]),
        *(("sub", sub) for sub in subs if sub),
    ]


def media_limits(settings, who: Principal) -> dict:
    """What a publisher should send at most: the facility's cap (a constrained
    link), else the node's. Pages apply it to their video sender and keep audio
    at high priority, so audio comes first when the link is short."""
    bitrate = min(
        settings.max_video_bitrate,
        settings.facility_video_bitrate.get(who.facility or "", settings.max_video_bitrate),
    )
    height = 240 if bitrate <= 300_000 else 360 if bitrate <= 700_000 else 480 if (
        bitrate <= 1_200_000) else 720  # fmt: skip
    return {"max_video_bitrate": bitrate, "max_video_height": height}


def _shared_closed(holders: list[Connection]) -> None:
    for conn in holders:
        conn.shared_closed()


class Hub:
    """Open connections of this node, and who is in each session it hosts."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.connections: dict[str, Connection] = {}
        self.audiences: dict[tuple[str, ...], set[Connection]] = {}  # see audience_keys
        self.watch_pushes: SharedPushes | None = None  # open for this linger
        self.sessions: dict[str, dict[str, Connection]] = {}
        self.media_ready: dict[str, set[str]] = {}  # session id -> parts whose media is up
        # session id -> sub -> (roster entry, expiry timer) of dropped participants
        self.away: dict[str, dict[str, tuple[dict, asyncio.TimerHandle]]] = {}

    def register(self, conn: Connection) -> None:
        """An authenticated connection: it gets the changes it may see."""
        self.connections[conn.id] = conn
        keys = audience_keys(conn)
        for key in keys:
            self.audiences.setdefault(key, set()).add(conn)
        if SHARING_WATCHERS in keys and self.watch_pushes is not None:
            conn.share(self.watch_pushes)

    def unregister(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        for key in audience_keys(conn):
            group = self.audiences.get(key, set())
            group.discard(conn)
            if not group:
                self.audiences.pop(key, None)

    def concerned(self, consult: dict, *, sharing_watchers: bool = True) -> set[Connection]:
        """This node's connections that may see a change of ``consult``, signaling
        here (those proxied to another node get it from there)."""
        found: set[Connection] = set()
        for key in concerned_keys(consult):
            if sharing_watchers or key != SHARING_WATCHERS:
                found.update(self.audiences.get(key, ()))
        return {conn for conn in found if conn.upstream is None}

    def push_to_watchers(self, text: str) -> None:
        """A consult change for every batching supervisor and admin: kept once in
        the SharedPushes of this linger, which every one of them holds."""
        shared = self.watch_pushes
        if shared is None:
            shared = self.watch_pushes = SharedPushes()
            for conn in self.audiences.get(SHARING_WATCHERS, ()):
                if conn.upstream is None:
                    conn.share(shared)
            asyncio.get_running_loop().call_later(PUSH_LINGER_S, self.close_shared, shared)
        shared.items.append(text)

    def close_shared(self, shared: SharedPushes) -> None:
        if self.watch_pushes is shared:
            self.watch_pushes = None
        shared.open = False
        # In slices a millisecond apart, so that a message arriving meanwhile does
        # not wait behind hundreds of writes.
        loop = asyncio.get_running_loop()
        for start in range(0, len(shared.holders), WRITES_PER_SLICE):
            holders = shared.holders[start : start + WRITES_PER_SLICE]
            loop.call_later(start / WRITES_PER_SLICE * 0.001, _shared_closed, holders)

    def roster(self, session_id: str) -> list[dict]:
        live = [c.member() for c in self.sessions.get(session_id, {}).values()]
        present = {m["sub"] for m in live}
        away = [m for sub, (m, _) in self.away.get(session_id, {}).items() if sub not in present]
        return live + away

    def hold_place(self, session_id: str, conn: Connection) -> None:
        """A participant whose connection dropped keeps their place (shown as
        reconnecting) for the grace period; after it they have left."""
        sub = conn.principal.sub
        member = {**conn.member(), "status": "reconnecting"}
        grace = self.app[SETTINGS].reconnect_grace_s
        timer = asyncio.get_running_loop().call_later(
            grace, lambda: asyncio.ensure_future(self._give_up(session_id, sub, conn))
        )
        self.away.setdefault(session_id, {})[sub] = (member, timer)

    def reclaim_place(self, session_id: str, sub: str) -> bool:
        held = self.away.get(session_id, {}).pop(sub, None)
        if held is not None:
            held[1].cancel()
        return held is not None

    async def _give_up(self, session_id: str, sub: str, conn: Connection) -> None:
        if self.away.get(session_id, {}).pop(sub, None) is None:
            return
        self.app[AUDIT].record(
            "participant.left", conn.principal.public(), session_id=session_id,
            reason="did_not_reconnect",
        )  # fmt: skip
        self.broadcast_roster(session_id)

    def participants(self, session_id: str) -> list[Principal]:
        return [
            c.principal
            for c in self.sessions.get(session_id, {}).values()
            if c.part is not None and c.principal is not None
        ]

    def broadcast_recording(self, session_id: str) -> None:
        message = {
            "type": "recording.state",
            "session_id": session_id,
            **self.app[RECORDING].state(session_id),
        }
        text = encode(message)
        for conn in self.sessions.get(session_id, {}).values():
            conn.send_text(text)

    def broadcast_roster(self, session_id: str) -> None:
        message = {"type": "roster", "session_id": session_id, "roster": self.roster(session_id)}
        text = encode(message)
        for conn in self.sessions.get(session_id, {}).values():
            conn.send_text(text)

    def on_media_state(self, session_id: str, peer_id: str, state: str) -> None:
        conn = self.connections.get(peer_id)
        if conn is not None:
            conn.send({"type": "media.state", "state": state})
            if state == "connected" and conn.part is not None:
                ready = self.media_ready.setdefault(session_id, set())
                if len(ready) < 2:
                    ready.add(conn.part)
                    if len(ready) == 2:  # both participants see each other: first media
                        asyncio.ensure_future(self._first_media(session_id))
        log.info("peer.state", session_id=session_id, peer=peer_id, state=state)

    async def _first_media(self, session_id: str) -> None:
        store = self.app[STORE]
        with contextlib.suppress(StoreUnavailable):
            session = await store.get_session(session_id)
            consult = session and await store.get_consult(session["consult_id"])
            if consult:
                self.app[TRIAGE].metrics.time_to_media.labels(
                    consult["urgency"], consult["specialty"]
                ).observe(time.time() - consult["created_at"])

    async def dispatch(self, event: dict) -> None:
        if event.get("type") == "consult.updated":
            consult = event["consult"]
            full = encode({"type": "consult.updated", "consult": consult})
            stub = None  # each form encoded once for everyone
            for conn in self.concerned(consult, sharing_watchers=False):
                form = notification(conn, consult)
                if form == "stub" and stub is None:
                    body = {k: consult.get(k) for k in QUEUE_STUB_FIELDS}
                    stub = encode({"type": "consult.updated", "consult": body})
                if form is not None:
                    conn.send_text(full if form == "full" else stub)
            if self.audiences.get(SHARING_WATCHERS):
                self.push_to_watchers(full)
        elif event.get("type") == "consult.reannounced":
            consult = event["consult"]
            text = encode(event)
            for conn in self.concerned(consult):
                if conn.principal.role == "specialist" and notification(conn, consult) == "full":
                    conn.send_text(text)
        elif event.get("type") == "consult.escalated":
            consult = event["consult"]
            text = encode(event)
            for conn in self.concerned(consult):
                who = conn.principal
                if who.sees_everything or who.sub in consult.get("offered_to", []):
                    conn.send_text(text)
        elif event.get("type") == "session.ended":
            session_id = event["session_id"]
            if session_id in self.sessions:
                self.app[RECORDING].session_closed(session_id)
            for conn in list(self.sessions.get(session_id, {}).values()):
                conn.send(event)
                await self.leave(conn, reason="session_ended")

    async def pump(self) -> None:
        """Forward store events (from every node) to this node's connections."""
        store = self.app[STORE]
        delay = 0.2
        while True:
            try:
                async for event in await store.subscribe():
                    delay = 0.2
                    await self.dispatch(event)
                return  # the store closed
            except StoreUnavailable:
                log.warning("events.unavailable", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def leave(self, conn: Connection, reason: str = "left") -> None:
        session_id = conn.session_id
        if session_id is None:
            return
        conn.session_id = None
        await self.app[MEDIA].disconnect(conn.id)
        members = self.sessions.get(session_id, {})
        members.pop(conn.id, None)
        if not members:
            self.sessions.pop(session_id, None)
        if conn.part is not None and reason == "disconnected":
            self.hold_place(session_id, conn)
            event = "participant.disconnected"
        else:
            event = "observer.left" if conn.part is None else "participant.left"
        self.app[AUDIT].record(
            event,
            conn.principal.public() if conn.principal else None,
            session_id=session_id,
            reason=reason,
        )
        self.broadcast_roster(session_id)


class SignalingHandler:
    """One WebSocket connection's messages, in order."""

    def __init__(self, app: web.Application, conn: Connection) -> None:
        self.app = app
        self.conn = conn
        self.hub: Hub = app[HUB]
        self.consults: ConsultService = app[CONSULTS]

    async def handle(self, message) -> None:
        if isinstance(message, Auth):
            await self.on_auth(message)
        elif self.conn.principal is None:
            raise ApiError(401, "unauthenticated", "send auth first")
        elif isinstance(message, Join):
            await self.on_join(message)
        elif isinstance(message, Offer):
            await self.on_offer(message)
        elif isinstance(message, Candidate):
            await self.on_candidate(message)
        elif isinstance(message, Leave):
            await self.hub.leave(self.conn)
            self.conn.send({"type": "left", "ref": message.ref})
        elif isinstance(message, Ping):
            self.conn.send({"type": "pong", "ref": message.ref})
        elif isinstance(message, Presence):
            await self.on_presence(message)
        elif isinstance(message, Chat):
            await self.on_chat(message)
        elif isinstance(message, RecordingRequest | RecordingConsent | RecordingStop):
            await self.on_recording(message)

    async def on_auth(self, message: Auth) -> None:
        if self.conn.principal is not None:
            raise ApiError(400, "bad_request", "already authenticated")
        self.conn.principal = self.app[VERIFIER].verify(message.token)
        self.conn.token = message.token
        self.conn.batch = message.batch
        self.hub.register(self.conn)
        self.conn.send(
            {
                "type": "welcome",
                "ref": message.ref,
                "user": self.conn.principal.public(),
                "node": self.app[NODE_ID],
            }
        )

    async def on_join(self, message: Join) -> None:
        conn, who = self.conn, self.conn.principal
        if conn.session_id is not None:
            raise ApiError(409, "already_joined", "this connection already joined a session")
        session, part = await self.consults.session_for(who, message.session_id)
        if session["state"] == "ended":
            raise ApiError(409, "invalid_state", "the session has ended")
        if session["node"] != self.app[NODE_ID]:
            if await self.proxy_to(session["node"], message):
                return
            session = await self.rehome(session)
            self.app[RECORDING].adopt(session)
        members = self.hub.sessions.setdefault(session["id"], {})
        if part is None:
            observers = sum(1 for m in members.values() if m.part is None)
            if observers >= self.app[SETTINGS].max_observers:
                raise ApiError(
                    409, "too_many_observers", "this session has its maximum of observers"
                )
        else:  # the same participant on a new connection replaces the old one
            for other in list(members.values()):
                if other.part == part:
                    other.send({"type": "session.replaced", "session_id": session["id"]})
                    await self.hub.leave(other, reason="replaced")
        conn.session_id, conn.part = session["id"], part
        members[conn.id] = conn
        rejoined = part is not None and self.hub.reclaim_place(session["id"], who.sub)
        self.app[AUDIT].record(
            "participant.rejoined"
            if rejoined
            else "participant.joined"
            if part
            else "observer.joined",
            who.public(),
            session_id=session["id"],
            consult_id=session["consult_id"],
            part=part,
        )
        if part is not None:
            await self.consults.mark_live(session["consult_id"])
            await self.publish_presence()
            self.app[RECORDING].participant_joined(
                who, session["id"], self.hub.participants(session["id"])
            )
            await self.app[RECORDING].persist(session["id"])
        consult = await self.app[CONSULTS].store.get_consult(session["consult_id"])
        conn.send(
            {
                "type": "joined",
                "ref": message.ref,
                "session_id": session["id"],
                "as": "observer" if part is None else "participant",
                "part": part,
                "consult": consult,
                "roster": self.hub.roster(session["id"]),
                "recording": self.app[RECORDING].state(session["id"]),
                "media_limits": media_limits(self.app[SETTINGS], who),
            }
        )
        self.hub.broadcast_roster(session["id"])
        self.hub.broadcast_recording(session["id"])

    async def rehome(self, session: dict) -> dict:
        """The session's node is dead: this node takes the session over (exactly one
        node wins); participants reconnecting bring its media back here."""
        try:
            moved = await self.app[STORE].rehome_session(
                session["id"], from_node=session["node"], to_node=self.app[NODE_ID]
            )
        except Conflict as exc:
            moved = {**session, "node": exc.current_state}
            if moved["node"] != self.app[NODE_ID]:
                raise ApiError(
                    503, "node_unavailable", "the session is moving to another node; retry"
                ) from None
        self.app[AUDIT].record(
            "session.rehomed", self.conn.principal.public(), session_id=session["id"],
            from_node=session["node"], to_node=self.app[NODE_ID],
        )  # fmt: skip
        return moved

    async def proxy_to(self, node: str, join: Join) -> bool:
        """Carry this connection's signaling to the node hosting the session; its
        media then flows directly between the client and that node. False when that
        node is dead (gone from the node map, or refusing connections)."""
        nodes = await self.app[STORE].list_nodes()
        url = (nodes.get(node) or {}).get("internal_url")
        if not url:
            return False
        try:
            upstream = await asyncio.wait_for(
                self.app[HTTP_CLIENT].ws_connect(
                    url.replace("http", "ws", 1) + "/ws", heartbeat=20
                ),
                5,
            )
            await upstream.send_json({"type": "auth", "token": self.conn.token})
            welcome = await upstream.receive_json(timeout=5)
        except ClientConnectorError:
            return False  # refused: the node died before its heartbeat expired
        except (TimeoutError, OSError, ValueError, ClientError):
            raise ApiError(
                503, "node_unavailable", "the node hosting this session is unreachable"
            ) from None
        if welcome.get("type") != "welcome":
            await upstream.close()
            raise ApiError(401, welcome.get("code", "token_invalid"), welcome.get("message", ""))
        self.conn.upstream = upstream
        self.conn.upstream_task = asyncio.ensure_future(self._pump_upstream(upstream))
        await upstream.send_json(join.model_dump(exclude_none=True))
        return True

    async def _pump_upstream(self, upstream: ClientWebSocketResponse) -> None:
        async for msg in upstream:
            if msg.type != WSMsgType.TEXT:
                break
            with contextlib.suppress(ValueError):
                self.conn.send(json.loads(msg.data))
        if not self.conn.ws.closed:  # the hosting node went away: the page reconnects
            self.conn.send(
                {
                    "type": "error",
                    "code": "node_lost",
                    "ref": None,
                    "message": "the node hosting this session was lost; reconnecting",
                }
            )
            self.conn.close_outbox()
            await self.conn.ws.close(code=1012, message=b"node lost")

    async def on_presence(self, message: Presence) -> None:
        """A specialist's on-call state, refreshed by the page every 10 s."""
        if self.conn.principal.role != "specialist":
            raise ApiError(403, "forbidden", "only specialists go on call")
        self.conn.presence = message.status
        await self.publish_presence()
        self.conn.send({"type": "presence.ok", "ref": message.ref, "status": self.effective()})

    def effective(self) -> str:
        if self.conn.session_id and self.conn.part:
            return "busy"  # in a live session
        return self.conn.presence or "available"

    async def publish_presence(self) -> None:
        if self.conn.principal.role == "specialist" and self.conn.presence is not None:
            await self.app[TRIAGE].set_presence(self.conn.principal, self.effective())

    async def on_chat(self, message: Chat) -> None:
        conn = self.conn
        if conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session to chat")
        line = {"type": "chat", "session_id": conn.session_id, "from": conn.member(),
                "text": message.text, "at": time.time()}  # fmt: skip
        for member in self.hub.sessions.get(conn.session_id, {}).values():
            member.send(line)
        self.app[AUDIT].record("chat.sent", conn.principal.public(), session_id=conn.session_id,
                               characters=len(message.text))  # fmt: skip
        conn.send({"type": "chat.ok", "ref": message.ref})

    async def on_recording(self, message) -> None:
        conn, recording = self.conn, self.app[RECORDING]
        if conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session first")
        if conn.part is None:
            raise ApiError(
                403, "forbidden", "observers cannot start, consent to or stop a recording"
            )
        present = self.hub.participants(conn.session_id)
        if isinstance(message, RecordingRequest):
            session = await self.app[STORE].get_session(conn.session_id)
            recording.request(conn.principal, session, present)
        elif isinstance(message, RecordingConsent):
            recording.answer(conn.principal, conn.session_id, message.consent, present)
        else:
            recording.stop_by(conn.principal, conn.session_id)
        conn.send({"type": "recording.ok", "ref": message.ref})
        self.hub.broadcast_recording(conn.session_id)
        await recording.persist(conn.session_id)

    async def on_offer(self, message: Offer) -> None:
        conn = self.conn
        if conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session before sending an offer")
        try:
            settings = self.app[SETTINGS]
            answer = await self.app[MEDIA].connect(
                conn.session_id,
                conn.id,
                publish=conn.part,
                receive=RECEIVES[conn.part],
                offer_sdp=message.sdp,
                max_bitrate=settings.facility_video_bitrate.get(conn.principal.facility or ""),
            )
        except MediaError as exc:
            raise ApiError(400, exc.code, exc.message) from None
        conn.send({"type": "answer", "ref": message.ref, "sdp": answer})

    async def on_candidate(self, message: Candidate) -> None:
        if self.conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session before sending candidates")
        candidate = message.candidate.model_dump() if message.candidate else None
        try:
            await self.app[MEDIA].add_candidate(self.conn.id, candidate)
        except MediaError as exc:
            raise ApiError(400, exc.code, exc.message) from None


async def websocket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    limit = settings.max_message_bytes
    # aiohttp closes the socket past max_msg_size; below that hard cap we refuse the
    # message ourselves and keep the connection.
    ws = web.WebSocketResponse(max_msg_size=max(4 * limit, 1 << 20), heartbeat=20)
    await ws.prepare(request)
    conn = Connection(ws)
    handler = SignalingHandler(request.app, conn)
    hub = request.app[HUB]
    writer = asyncio.ensure_future(conn.write_loop())
    deadline = asyncio.get_running_loop().time() + AUTH_TIMEOUT_S
    try:
        while True:
            timeout = None
            if conn.principal is None:
                timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                conn.send(
                    {
                        "type": "error",
                        "code": "unauthenticated",
                        "message": "no auth message in time",
                        "ref": None,
                    }
                )
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            data: object = None
            try:
                if msg.type != WSMsgType.TEXT:
                    raise ApiError(400, "bad_json", "only text JSON messages are accepted")
                data = parse_json(msg.data, limit)
                message = parse_client_message(data)
                if conn.upstream is not None:
                    await conn.upstream.send_json(data)
                else:
                    await handler.handle(message)
            except ApiError as exc:
                conn.send(
                    {
                        "type": "error",
                        "code": exc.code,
                        "message": exc.message,
                        "ref": exc.ref or ref_of(data),
                        **exc.extra,
                    }
                )
                if exc.code in ("token_expired", "token_invalid"):
                    conn.close_outbox()
                    await writer
                    await ws.close(code=4401, message=b"unauthorized")
                    break
            except StoreUnavailable:
                error = store_unavailable()
                conn.send({"type": "error", "code": error.code, "message": error.message,
                           "ref": ref_of(data)})  # fmt: skip
            except Exception:
                log.exception("ws.internal_error", conn=conn.id)
                conn.send(
                    {
                        "type": "error",
                        "code": "internal",
                        "message": "internal error",
                        "ref": ref_of(data),
                    }
                )
    finally:
        if conn.upstream is not None:
            await conn.upstream.close()
        hub.unregister(conn)
        await hub.leave(conn, reason="disconnected")
        conn.close_outbox()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 2)
        await ws.close()
    return ws
