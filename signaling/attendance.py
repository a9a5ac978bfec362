"""Who is in each session this node hosts: its connections, the participants who
dropped and keep their place for the grace period, the roster everyone sees, and
when both participants' media first connected. A session's entry goes when nobody
is left in it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .auth import Principal
from .connection import Connection
from .keys import AUDIT, MEDIA, RECORDING, SETTINGS, STORE, TRIAGE
from .logs import get_logger
from .model import SessionChange
from .protocol import encode
from .store import NotFound, StoreUnavailable, TransitionRefused

log = get_logger()
PARTS = ("referrer", "specialist")


@dataclass
class Room:
    """One session on this node."""

    members: dict[str, Connection] = field(default_factory=dict)  # connection id -> it
    # sub -> (roster entry, expiry timer) of a dropped participant keeping their place
    away: dict[str, tuple[dict[str, Any], asyncio.TimerHandle]] = field(default_factory=dict)
    media_up: set[str] = field(default_factory=set)  # parts whose media connected

    @property
    def empty(self) -> bool:
        return not self.members and not self.away


class Attendance:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.rooms: dict[str, Room] = {}

    def room(self, session_id: str) -> Room:
        room = self.rooms.get(session_id)
        if room is None:
            room = self.rooms[session_id] = Room()
        return room

    def members(self, session_id: str) -> list[Connection]:
        room = self.rooms.get(session_id)
        return list(room.members.values()) if room else []

    def participants(self, session_id: str) -> list[Principal]:
        return [c.principal for c in self.members(session_id) if c.part and c.principal]

    def _forget_if_empty(self, session_id: str) -> None:
        room = self.rooms.get(session_id)
        if room is not None and room.empty:
            del self.rooms[session_id]

    # the roster -------------------------------------------------------------------
    def roster(self, session_id: str) -> list[dict[str, Any]]:
        room = self.rooms.get(session_id)
        if room is None:
            return []
        live = [c.member() for c in room.members.values()]
        present = {m["sub"] for m in live}
        return live + [m for sub, (m, _) in room.away.items() if sub not in present]

    def broadcast(self, session_id: str, message: dict[str, Any]) -> None:
        room = self.rooms.get(session_id)
        if room is None:
            return
        text = encode(message)  # once for everyone
        for conn in room.members.values():
            conn.send_text(text)

    def broadcast_roster(self, session_id: str, roster: list[dict[str, Any]] | None = None) -> None:
        """``roster``: as ``roster`` just built it (a join sends it in its reply too)."""
        if roster is None:
            roster = self.roster(session_id)
        self.broadcast(session_id, {"type": "roster", "session_id": session_id, "roster": roster})

    def broadcast_recording(self, session_id: str) -> None:
        state = self.app[RECORDING].state(session_id)
        self.broadcast(session_id, {"type": "recording.state", "session_id": session_id, **state})

    # places kept through a dropped connection --------------------------------------
    def hold_place(self, session_id: str, conn: Connection) -> None:
        """A participant whose connection dropped keeps their place (shown as
        reconnecting) for the grace period; after it they have left."""
        sub = conn.principal.sub
        member = {**conn.member(), "status": "reconnecting"}
        grace = self.app[SETTINGS].reconnect_grace_s
        timer = asyncio.get_running_loop().call_later(
            grace, lambda: asyncio.ensure_future(self._give_up(session_id, sub, conn))
        )
        self.room(session_id).away[sub] = (member, timer)

    def reclaim_place(self, session_id: str, sub: str) -> bool:
        held = self.room(session_id).away.pop(sub, None)
        if held is not None:
            held[1].cancel()
        return held is not None

    async def _give_up(self, session_id: str, sub: str, conn: Connection) -> None:
        room = self.rooms.get(session_id)
        if room is None or room.away.pop(sub, None) is None:
            return
        self.app[AUDIT].record(
            "participant.left", conn.principal.public(), session_id=session_id,
            reason="did_not_reconnect",
        )  # fmt: skip
        self.broadcast_roster(session_id)
        self._forget_if_empty(session_id)

    async def leave(self, conn: Connection, reason: str = "left") -> None:
        session_id = conn.session_id
        if session_id is None:
            return
        conn.session_id = None
        await self.app[MEDIA].disconnect(conn.id)
        room = self.room(session_id)
        room.members.pop(conn.id, None)
        if conn.part is not None and reason == "disconnected":
            self.hold_place(session_id, conn)
            event = "participant.disconnected"
        else:
            event = "observer.left" if conn.part is None else "participant.left"
        self.app[AUDIT].record(
            event, conn.principal.public() if conn.principal else None,
            session_id=session_id, reason=reason,
        )  # fmt: skip
        self.broadcast_roster(session_id)
        self._forget_if_empty(session_id)

    # media -------------------------------------------------------------------------
    def on_media_state(self, session_id: str, conn: Connection | None, state: str) -> None:
        if conn is None:
            return
        conn.send({"type": "media.state", "state": state})
        room = self.rooms.get(session_id)
        if state != "connected" or conn.part is None or room is None:
            return
        if len(room.media_up) < len(PARTS):
            room.media_up.add(conn.part)
            if len(room.media_up) == len(PARTS):  # both see each other: first media
                asyncio.ensure_future(self._first_media(session_id))

    async def _first_media(self, session_id: str) -> None:
        """Time from referral to first media, observed once per session (the
        session record keeps when, whichever node hosts it later)."""
        state, now = self.app[STORE], time.time()
        with contextlib.suppress(StoreUnavailable, TransitionRefused, NotFound):
            session = await state.get_session(session_id)
            if session is None or session.media_started_at is not None:
                return
            await state.change_session(
                session_id, SessionChange.MEDIA_STARTED, media_started_at=now
            )
            consult = await state.get_consult(session.consult_id)
            if consult is not None:
                self.app[TRIAGE].metrics.time_to_media.labels(
                    consult.urgency, consult.specialty
                ).observe(now - consult.created_at)
