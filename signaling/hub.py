"""The hub: this node's open connections, and the store's events (from every node)
pushed to the connections that may hear them."""

from __future__ import annotations

import asyncio

from aiohttp import web

from media import LayerEvent, PublishedLayers

from .access import oversees
from .attendance import Attendance
from .audience import audience_keys, concerned_keys, notification, overseers, stub
from .connection import PUSH_LINGER_S, Connection, SharedPushes
from .keys import IDENTITY, RECORDING, STORE
from .logs import get_logger
from .model import (
    Consult,
    ConsultEscalated,
    ConsultReannounced,
    ConsultUpdated,
    Event,
    SessionEnded,
    TokenRevoked,
)
from .protocol import compact, encode
from .store import StoreUnavailable

log = get_logger()
WRITES_PER_SLICE = 32  # shared pushes sent to this many connections at a time


def _shared_closed(holders: list[Connection]) -> None:
    for conn in holders:
        conn.shared_closed()


class Hub:
    """Open connections of this node, and who of them hears what."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.connections: dict[str, Connection] = {}
        self.audiences: dict[tuple[str, ...], set[Connection]] = {}  # see audience_keys
        # organisation -> the SharedPushes open for this linger, for its overseers
        self.shared_pushes: dict[str, SharedPushes] = {}
        self.attendance = Attendance(app)

    def register(self, conn: Connection) -> None:
        """An authenticated connection: it gets the changes it may see."""
        self.connections[conn.id] = conn
        for key in audience_keys(conn):
            self.audiences.setdefault(key, set()).add(conn)
        org = conn.principal.organisation
        if conn.principal.is_overseer and conn.batch and org in self.shared_pushes:
            conn.share(self.shared_pushes[org])

    def unregister(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        for key in audience_keys(conn):
            group = self.audiences.get(key, set())
            group.discard(conn)
            if not group:
                self.audiences.pop(key, None)

    def concerned(self, consult: Consult, *, sharing_watchers: bool = True) -> set[Connection]:
        """This node's connections that may see a change of ``consult``, signaling
        here (those proxied to another node get it from there)."""
        found: set[Connection] = set()
        for key in concerned_keys(consult):
            if sharing_watchers or key[-1] != "shared":
                found.update(self.audiences.get(key, ()))
        return {conn for conn in found if conn.upstream is None}

    def push_to_watchers(self, text: str, organisation: str = "local") -> None:
        """A consult change for every batching overseer of ``organisation``: kept
        once in the SharedPushes of this linger, which every one of them holds."""
        shared = self.shared_pushes.get(organisation)
        if shared is None:
            shared = self.shared_pushes[organisation] = SharedPushes(organisation)
            for conn in self.audiences.get(overseers(organisation, sharing=True), ()):
                if conn.upstream is None:
                    conn.share(shared)
            asyncio.get_running_loop().call_later(PUSH_LINGER_S, self.close_shared, shared)
        shared.items.append(text)

    def close_shared(self, shared: SharedPushes) -> None:
        if self.shared_pushes.get(shared.organisation) is shared:
            del self.shared_pushes[shared.organisation]
        shared.open = False
        # In slices a millisecond apart, so that a message arriving meanwhile does
        # not wait behind hundreds of writes.
        loop = asyncio.get_running_loop()
        for start in range(0, len(shared.holders), WRITES_PER_SLICE):
            holders = shared.holders[start : start + WRITES_PER_SLICE]
            loop.call_later(start / WRITES_PER_SLICE * 0.001, _shared_closed, holders)

    def on_media_layers(self, event: LayerEvent) -> None:
        """The media node's callback: a publisher should pause or resume simulcast
        layers, or a subscriber's picture became (or stopped being) reduced."""
        conn = self.connections.get(event.peer_id)
        if conn is None:
            return
        if isinstance(event, PublishedLayers):
            conn.send({"type": "layers", "role": event.role, "active": list(event.active)})
        else:
            conn.send({"type": "picture", "slot": event.slot, "role": event.role,
                       "reduced": event.reduced})  # fmt: skip

    def on_media_state(self, session_id: str, peer_id: str, state: str) -> None:
        """The media node's callback: a peer's connection state changed."""
        self.attendance.on_media_state(session_id, self.connections.get(peer_id), state)
        log.info("peer.state", session_id=session_id, peer=peer_id, state=state)

    # store events ---------------------------------------------------------------------
    def consult_updated(self, consult: Consult) -> None:
        full = encode({"type": "consult.updated", "consult": compact(consult)})
        brief = None  # each form encoded once for everyone
        for conn in self.concerned(consult, sharing_watchers=False):
            form = notification(conn, consult)
            if form == "stub" and brief is None:
                brief = encode({"type": "consult.updated", "consult": stub(consult)})
            if form is not None:
                conn.send_text(full if form == "full" else brief)
        for org in consult.organisations:
            if self.audiences.get(overseers(org, sharing=True)):
                self.push_to_watchers(full, org)

    def consult_reannounced(self, event: ConsultReannounced) -> None:
        text = encode(event)
        for conn in self.concerned(event.consult):
            who = conn.principal
            if who.role == "specialist" and notification(conn, event.consult) == "full":
                conn.send_text(text)

    def consult_escalated(self, event: ConsultEscalated) -> None:
        text = encode(event)
        for conn in self.concerned(event.consult):
            who = conn.principal
            if oversees(who, event.consult.organisations) or who.sub in event.consult.offered_to:
                conn.send_text(text)

    async def session_ended(self, event: SessionEnded) -> None:
        members = self.attendance.members(event.session_id)
        self.app[RECORDING].session_closed(event.session_id)  # a recording here ends with it
        text = encode(event)
        for conn in members:
            conn.send_text(text)
            await self.attendance.leave(conn, reason="session_ended")

    async def token_revoked(self, event: TokenRevoked) -> None:
        """A signed-out token: every node forgets it, and its sockets are closed."""
        self.app[IDENTITY].remember(event)
        for conn in list(self.connections.values()):
            if conn.principal is not None and conn.principal.token_id == event.token_id:
                await conn.end_session("token_revoked", "this token was signed out")

    async def dispatch(self, event: Event) -> None:
        if isinstance(event, ConsultUpdated):
            self.consult_updated(event.consult)
        elif isinstance(event, ConsultReannounced):
            self.consult_reannounced(event)
        elif isinstance(event, ConsultEscalated):
            self.consult_escalated(event)
        elif isinstance(event, SessionEnded):
            await self.session_ended(event)
        elif isinstance(event, TokenRevoked):
            await self.token_revoked(event)

    async def pump(self) -> None:
        """Forward store events (from every node) to this node's connections."""
        delay = 0.2
        while True:
            try:
                async for event in self.app[STORE].events():
                    delay = 0.2
                    await self.dispatch(event)
                return  # the store closed
            except StoreUnavailable:
                log.warning("events.unavailable", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
