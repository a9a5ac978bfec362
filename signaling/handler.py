"""The WebSocket protocol (docs/protocol.md): one connection's messages, in order.
A message whose session lives on another node is carried there (``cluster``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from media import MediaError

from .auth import Principal
from .cluster import Here, Lost, Remote, Upstream, open_upstream
from .connection import Connection
from .errors import ApiError
from .keys import (
    AUDIT,
    CLUSTER,
    CONSULTS,
    HTTP_CLIENT,
    HUB,
    IDENTITY,
    LIMITS,
    MEDIA,
    NODE_ID,
    RECORDING,
    SETTINGS,
    STORE,
    TRIAGE,
    TRUST,
)
from .model import ConsultState, Session, SessionState
from .protocol import (
    Auth,
    Candidate,
    Chat,
    Join,
    Leave,
    Offer,
    Ping,
    Presence,
    Reauth,
    RecordingConsent,
    RecordingRequest,
    RecordingStop,
    View,
)
from .signin import session_principal

RECEIVES = {
    "referrer": ["specialist"],
    "specialist": ["referrer"],
    None: ["referrer", "specialist"],
}


def media_limits(settings, who: Principal) -> dict[str, int]:
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


class SignalingHandler:
    """One WebSocket connection's messages, in order."""

    def __init__(self, app: web.Application, conn: Connection) -> None:
        self.app = app
        self.conn = conn
        self.hub = app[HUB]
        self.attendance = self.hub.attendance
        self.consults = app[CONSULTS]
        self.limits = app[LIMITS]
        self.handlers: dict[type[BaseModel], Callable[[Any], Awaitable[None]]] = {
            Reauth: self.on_reauth,
            Join: self.on_join,
            Offer: self.on_offer,
            Candidate: self.on_candidate,
            View: self.on_view,
            Leave: self.on_leave,
            Ping: self.on_ping,
            Presence: self.on_presence,
            Chat: self.on_chat,
            RecordingRequest: self.on_recording,
            RecordingConsent: self.on_recording,
            RecordingStop: self.on_recording,
        }

    async def handle(self, message: BaseModel) -> None:
        if isinstance(message, Auth):
            await self.on_auth(message)
        elif self.conn.principal is None:
            raise ApiError(401, "unauthenticated", "send auth first")
        else:
            await self.handlers[type(message)](message)

    @property
    def who(self) -> Principal:
        assert self.conn.principal is not None  # handle() lets nothing else through
        return self.conn.principal

    async def on_auth(self, message: Auth) -> None:
        conn = self.conn
        if conn.principal is not None:
            raise ApiError(400, "bad_request", "already authenticated")
        who = await self.signed_in(message.token)
        await self.limits.hit("connection", user=who.sub)
        conn.principal, conn.token, conn.batch = who, message.token, message.batch
        self.sign_out_at_expiry()
        self.hub.register(conn)
        self.conn.send({"type": "welcome", "ref": message.ref, "user": self.who.public(),
                        "node": self.app[NODE_ID]})  # fmt: skip

    async def signed_in(self, token: str | None) -> Principal:
        """Who sends the token, or (none sent) whose session cookie came with the
        upgrade."""
        if token is not None:
            return await self.app[IDENTITY].authenticate(token, self.conn.address)
        if not self.conn.session_cookie:
            raise ApiError(401, "unauthenticated", "send a token, or sign in on the page")
        who = await session_principal(self.app, self.conn.session_cookie)
        self.app[IDENTITY].check_not_revoked(who)
        return who

    async def on_reauth(self, message: Reauth) -> None:
        """A fresh token for the same user keeps the socket signed in past the old
        token's expiry (a proxied connection's host is told too)."""
        fresh = await self.signed_in(message.token)
        if (fresh.sub, fresh.role, fresh.facility) != (self.who.sub, self.who.role,
                                                       self.who.facility):  # fmt: skip
            raise ApiError(401, "token_invalid", "a fresh token must be for the same user")
        self.conn.principal, self.conn.token = fresh, message.token
        self.sign_out_at_expiry()
        if self.conn.upstream is not None:
            await self.conn.upstream.send(message.model_dump(exclude_none=True))
        else:
            self.conn.send({"type": "reauthed", "ref": message.ref, "expires_at": fresh.expires_at})

    def sign_out_at_expiry(self) -> None:
        conn = self.conn
        if conn.expiry is not None:
            conn.expiry.cancel()
        delay = max(0.0, self.who.expires_at - time.time())
        conn.expiry = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(
                conn.end_session("token_expired", "the token has expired; sign in again")
            ),
        )  # fmt: skip

    async def on_ping(self, message: Ping) -> None:
        self.conn.send({"type": "pong", "ref": message.ref})

    async def on_leave(self, message: Leave) -> None:
        await self.attendance.leave(self.conn)
        self.conn.send({"type": "left", "ref": message.ref})

    # joining ----------------------------------------------------------------------
    async def on_join(self, message: Join) -> None:
        if self.conn.session_id is not None:
            raise ApiError(409, "already_joined", "this connection already joined a session")
        session, part = await self.consults.session_for(self.who, message.session_id)
        if session.state == SessionState.ENDED:
            raise ApiError(409, "invalid_state", "the session has ended")
        session = await self.route(session, message)
        if session is None:
            return  # carried to the hosting node, which answers
        await self.take_place(session, part)
        await self.joined(session, part, message)

    async def route(self, session: Session, join: Join) -> Session | None:
        """The session to join here, or None when another node hosts it and this
        connection's signaling now goes there."""
        cluster = self.app[CLUSTER]
        location = await cluster.locate(session)
        if isinstance(location, Here):
            return session
        if isinstance(location, Remote):
            trust = self.app[TRUST]
            assert trust is not None  # another node exists only with a cluster secret
            upstream = await open_upstream(
                self.app[HTTP_CLIENT], location.internal_url, self.conn.token,
                self.conn.session_cookie, trust,
            )  # fmt: skip
            if upstream is not None:
                self.conn.upstream = upstream
                self.conn.upstream_task = asyncio.ensure_future(self.relay(upstream))
                await upstream.send(join.model_dump(exclude_none=True))
                return None
        # Lost, or its node refuses connections: it died before its heartbeat expired.
        assert isinstance(location, Lost | Remote)
        moved = await cluster.take_over(session, self.who)
        self.app[RECORDING].adopt(moved)
        return moved

    async def relay(self, upstream: Upstream) -> None:
        await upstream.relay(self.conn.send)
        if upstream.ws.close_code == 4401:  # the host signed it out (and said why)
            self.conn.close_outbox()
            await self.conn.ws.close(code=4401, message=b"unauthorized")
            return
        if not self.conn.ws.closed:  # the hosting node went away: the page reconnects
            lost = "the node hosting this session was lost; reconnecting"
            self.conn.send({"type": "error", "code": "node_lost", "ref": None, "message": lost})
            self.conn.close_outbox()
            await self.conn.ws.close(code=1012, message=b"node lost")

    async def take_place(self, session: Session, part: str | None) -> None:
        """This connection enters the session: an observer if there is room, a
        participant in place of their own earlier connection."""
        members = self.attendance.room(session.id).members
        if part is None:
            observers = sum(1 for m in members.values() if m.part is None)
            if observers >= self.app[SETTINGS].max_observers:
                raise ApiError(
                    409, "too_many_observers", "this session has its maximum of observers"
                )
        else:
            for other in list(members.values()):
                if other.part == part:
                    other.send({"type": "session.replaced", "session_id": session.id})
                    await self.attendance.leave(other, reason="replaced")
        self.conn.session_id, self.conn.part = session.id, part
        members[self.conn.id] = self.conn

    async def joined(self, session: Session, part: str | None, message: Join) -> None:
        who, recording = self.who, self.app[RECORDING]
        rejoined = part is not None and self.attendance.reclaim_place(session.id, who.sub)
        event = "participant.rejoined" if rejoined else (
            "participant.joined" if part else "observer.joined")  # fmt: skip
        self.app[AUDIT].record(event, who.public(), session_id=session.id,
                               consult_id=session.consult_id, part=part)  # fmt: skip
        consult = await self.app[STORE].get_consult(session.consult_id)
        if part is not None:
            if consult is not None and consult.state == ConsultState.ACCEPTED:
                consult = await self.consults.mark_live(consult.id) or consult
            await self.publish_presence()
            recording.participant_joined(who, session.id, self.attendance.participants(session.id))
            await recording.persist(session.id)
        roster = self.attendance.roster(session.id)
        self.conn.send({
            "type": "joined", "ref": message.ref, "session_id": session.id,
            "as": "observer" if part is None else "participant", "part": part,
            "consult": consult, "roster": roster,
            "recording": recording.state(session.id),
            "media_limits": media_limits(self.app[SETTINGS], who),
        })  # fmt: skip
        self.attendance.broadcast_roster(session.id, roster)
        self.attendance.broadcast_recording(session.id)

    # presence and chat --------------------------------------------------------------
    async def on_presence(self, message: Presence) -> None:
        """A specialist's on-call state, refreshed by the page every 10 s."""
        if self.who.role != "specialist":
            raise ApiError(403, "forbidden", "only specialists go on call")
        self.conn.presence = message.status
        await self.publish_presence()
        self.conn.send({"type": "presence.ok", "ref": message.ref, "status": self.effective()})

    def effective(self) -> str:
        if self.conn.session_id and self.conn.part:
            return "busy"  # in a live session
        return self.conn.presence or "available"

    async def publish_presence(self) -> None:
        if self.who.role == "specialist" and self.conn.presence is not None:
            await self.app[TRIAGE].set_presence(self.who, self.effective())

    async def on_chat(self, message: Chat) -> None:
        conn = self.conn
        if conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session to chat")
        await self.limits.hit("chat", user=self.who.sub)
        self.attendance.broadcast(conn.session_id, {
            "type": "chat", "session_id": conn.session_id, "from": conn.member(),
            "text": message.text, "at": time.time(),
        })  # fmt: skip
        self.app[AUDIT].record("chat.sent", self.who.public(), session_id=conn.session_id,
                               characters=len(message.text))  # fmt: skip
        conn.send({"type": "chat.ok", "ref": message.ref})

    # recording ----------------------------------------------------------------------
    async def on_recording(
        self, message: RecordingRequest | RecordingConsent | RecordingStop
    ) -> None:
        conn, recording = self.conn, self.app[RECORDING]
        if conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session first")
        if conn.part is None:
            raise ApiError(
                403, "forbidden", "observers cannot start, consent to or stop a recording"
            )
        present = self.attendance.participants(conn.session_id)
        if isinstance(message, RecordingRequest):
            session = await self.app[STORE].get_session(conn.session_id)
            if session is None:
                raise ApiError(404, "session_not_found", "no such session")
            recording.request(self.who, session, present)
        elif isinstance(message, RecordingConsent):
            recording.answer(self.who, conn.session_id, message.consent, present)
        else:
            recording.stop_by(self.who, conn.session_id)
        conn.send({"type": "recording.ok", "ref": message.ref})
        self.attendance.broadcast_recording(conn.session_id)
        await recording.persist(conn.session_id)

    # media --------------------------------------------------------------------------
    async def on_offer(self, message: Offer) -> None:
        conn = self.conn
        if conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session before sending an offer")
        await self.limits.hit("offer", user=self.who.sub, address=conn.address)
        settings = self.app[SETTINGS]
        try:
            answer = await self.app[MEDIA].connect(
                conn.session_id, conn.id, publish=conn.part, receive=RECEIVES[conn.part],
                offer_sdp=message.sdp,
                max_bitrate=settings.facility_video_bitrate.get(self.who.facility or ""),
            )  # fmt: skip
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

    async def on_view(self, message: View) -> None:
        """The page's tile size for one stream it receives (media.layers)."""
        if self.conn.session_id is None:
            raise ApiError(409, "not_joined", "join a session before reporting a view")
        if not self.app[MEDIA].set_view(self.conn.id, message.slot, message.role, message.height):
            raise ApiError(404, "no_such_stream", "this connection receives no such stream")
