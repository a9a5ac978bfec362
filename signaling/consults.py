"""The consult lifecycle: create, accept, cancel, decline, transfer, report, end.
Who may do what is in ``access``; the states and their transitions in ``model``.
A transition the store refuses propagates as ``TransitionRefused`` and is turned
into the API's ``409`` in one place (``errors.refused``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable

from .access import can_see_consult, may_accept, may_see_session, may_take, session_part
from .auth import Principal
from .errors import ApiError, forbidden
from .logs import Audit
from .model import (
    Consult,
    ConsultChange,
    ConsultState,
    ConsultUpdated,
    Decline,
    Report,
    Session,
    SessionChange,
    SessionEnded,
    SessionState,
    Transfer,
    to_json,
)
from .protocol import ConsultReport, NewConsult
from .store import LiveState, NotFound, TransitionRefused
from .triage import Triage

Clock = Callable[[], float]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'y')}"


def consult_not_found() -> ApiError:
    return ApiError(404, "consult_not_found", "no such consult")


def session_not_found() -> ApiError:
    return ApiError(404, "session_not_found", "no such session")


def report_digest(report: Report) -> str:
    """The SHA-256 of the report as canonical JSON, kept with it and audited."""
    canonical = json.dumps(to_json(report), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ConsultService:
    def __init__(
        self,
        state: LiveState,
        audit: Audit,
        *,
        place_session: Callable[[], Awaitable[str]],
        specialties: list[str],
        clock: Clock = time.time,
        triage: Triage | None = None,
        max_waiting: int = 20,
        routing: dict[str, list[str]] | None = None,
    ) -> None:
        """``place_session``: the cluster's choice of node for a new session."""
        self.state = state
        self.audit = audit
        self.place_session = place_session
        self.specialties = specialties
        self.clock = clock
        self.triage = triage
        self.max_waiting = max_waiting  # consults one referrer may have waiting
        # organisation -> the organisations whose specialists take its consults
        self.routing = routing or {}

    async def _announce(self, consult: Consult) -> None:
        await self.state.publish(ConsultUpdated(consult=consult))

    async def create(self, who: Principal, body: NewConsult) -> Consult:
        if who.role != "referrer":
            raise forbidden("only a referrer creates consults")
        if body.specialty not in self.specialties:
            raise ApiError(400, "unknown_specialty", f"unknown specialty {body.specialty!r}")
        await self._check_waiting_cap(who)
        consult = Consult(
            id=new_id("c"), state=ConsultState.WAITING, specialty=body.specialty,
            urgency=body.urgency, summary=body.summary, patient_ref=body.patient_ref,
            facility=who.facility or "", referrer=who.person(), created_at=self.clock(),
            organisation=who.organisation, routed_to=self.routing.get(who.organisation, []),
        )  # fmt: skip
        await self.state.create_consult(consult)
        self.audit.record(
            "consult.created", who.public(), consult_id=consult.id, urgency=consult.urgency,
            specialty=consult.specialty, facility=who.facility,
        )  # fmt: skip
        if self.triage is not None:
            await self.triage.consult_created(consult)
        await self._announce(consult)
        return consult

    async def _check_waiting_cap(self, who: Principal) -> None:
        """One referrer cannot flood the queue specialists rely on."""
        waiting = await self.state.list_consults(
            states=[ConsultState.WAITING], facility=who.facility
        )
        if sum(1 for c in waiting if c.referrer.sub == who.sub) >= self.max_waiting:
            raise ApiError(
                429, "too_many_waiting",
                f"you already have {self.max_waiting} consults waiting; cancel one or wait",
            )  # fmt: skip

    async def visible(self, who: Principal) -> list[Consult]:
        if who.role == "referrer":
            return await self.state.list_consults(facility=who.facility, states=list(ConsultState))
        if who.role == "specialist":
            waiting = await self.state.list_consults(states=[ConsultState.WAITING])
            taken = await self.state.list_consults(
                states=[ConsultState.ACCEPTED, ConsultState.LIVE]
            )
            mine = [c for c in taken if c.specialist_sub == who.sub]
            return mine + [c for c in waiting if may_take(who, c)]
        return [c for c in await self.state.list_consults() if can_see_consult(who, c)]

    async def positions(self, consults: list[Consult]) -> dict[str, int]:
        """Each waiting consult's place in its specialty's queue (1 = next)."""
        specialties = {c.specialty for c in consults if c.state == ConsultState.WAITING}
        if not specialties:
            return {}
        queue = await self.state.list_consults(
            states=[ConsultState.WAITING], specialties=specialties
        )
        place: dict[str, int] = {}
        counts: dict[str, int] = {}
        for c in queue:
            counts[c.specialty] = counts.get(c.specialty, 0) + 1
            place[c.id] = counts[c.specialty]
        return place

    async def get(self, who: Principal, consult_id: str) -> Consult:
        consult = await self.state.get_consult(consult_id)
        if consult is None or not can_see_consult(who, consult):
            raise consult_not_found()
        return consult

    async def accept(self, who: Principal, consult_id: str) -> tuple[Consult, Session]:
        if who.role != "specialist":
            raise forbidden("only a specialist accepts consults")
        consult = await self.state.get_consult(consult_id)
        if consult is None or not may_accept(who, consult):
            raise consult_not_found()
        now = self.clock()
        session = Session(
            id=new_id("s"), consult_id=consult_id, state=SessionState.LIVE,
            node=await self.place_session(), facility=consult.facility,
            specialty=consult.specialty, referrer=consult.referrer, specialist=who.person(),
            created_at=now, organisation=consult.organisation,
            specialist_organisation=who.organisation,
        )  # fmt: skip
        try:
            consult = await self.state.accept_consult(
                consult_id, session, specialist=who.person(), session_id=session.id,
                accepted_at=now, specialist_organisation=who.organisation,
            )  # fmt: skip
        except NotFound:
            raise consult_not_found() from None
        self.audit.record(
            "consult.accepted", who.public(), consult_id=consult_id, session_id=session.id,
            waited_s=round(now - consult.created_at, 3),
        )  # fmt: skip
        await self._announce(consult)
        if self.triage is not None:
            await self.triage.consult_taken(consult)
        return consult, session

    async def cancel(self, who: Principal, consult_id: str) -> Consult:
        if who.role != "referrer":
            raise forbidden("only the referring facility cancels a consult")
        await self.get(who, consult_id)
        try:
            consult = await self.state.change_consult(
                consult_id, ConsultChange.CANCEL, cancelled_at=self.clock()
            )
        except NotFound:
            raise consult_not_found() from None
        self.audit.record("consult.cancelled", who.public(), consult_id=consult_id)
        await self._announce(consult)
        if self.triage is not None:
            await self.triage.consult_taken(consult)
        return consult

    async def session_for(self, who: Principal, session_id: str) -> tuple[Session, str | None]:
        """The session and the slot ``who`` takes in it (None: observer)."""
        session = await self.state.get_session(session_id)
        if session is None or not may_see_session(who, session):
            raise session_not_found()
        return session, session_part(who, session)

    async def mark_live(self, consult_id: str) -> Consult | None:
        """The consult, live now (None if it had already moved on)."""
        with contextlib.suppress(TransitionRefused, NotFound):
            consult = await self.state.change_consult(consult_id, ConsultChange.GO_LIVE)
            await self._announce(consult)
            return consult
        return None

    async def live_sessions(self, who: Principal) -> list[Session]:
        if not who.is_overseer:
            raise forbidden("only supervisors list live sessions")
        return [s for s in await self.state.list_sessions() if may_see_session(who, s)]

    async def end(self, who: Principal, session_id: str) -> Session:
        session, part = await self.session_for(who, session_id)
        if part is None and who.role != "admin":
            raise forbidden("observers cannot end a session")
        reason = "ended_by_participant" if part is not None else "ended_by_admin"
        now = self.clock()
        session = await self.state.change_session(
            session_id, SessionChange.END, ended_at=now, ended_by=who.person()
        )
        with contextlib.suppress(TransitionRefused, NotFound):
            consult = await self.state.change_consult(
                session.consult_id, ConsultChange.END, ended_at=now
            )
            await self._announce(consult)
        self.audit.record("session.ended", who.public(), session_id=session_id, reason=reason)
        await self.state.publish(
            SessionEnded(session_id=session_id, reason=reason, by=who.person(), part=part)
        )
        return session

    async def _waiting_for(self, who: Principal, consult_id: str) -> Consult:
        if who.role != "specialist":
            raise forbidden("only a specialist declines or transfers a consult")
        consult = await self.state.get_consult(consult_id)
        if consult is None or not may_take(who, consult):
            raise consult_not_found()
        if consult.state != ConsultState.WAITING:
            raise TransitionRefused("consult", ConsultChange.UPDATE_WAITING, consult.state)
        return consult

    async def decline(self, who: Principal, consult_id: str, reason: str) -> Consult:
        consult = await self._waiting_for(who, consult_id)
        entry = Decline(sub=who.sub, name=who.name, reason=reason, at=self.clock())
        consult = await self.state.change_consult(
            consult_id, ConsultChange.UPDATE_WAITING, declines=[*consult.declines, entry]
        )
        self.audit.record("consult.declined", who.public(), consult_id=consult_id, note=reason)
        await self._announce(consult)
        return consult

    async def transfer(
        self, who: Principal, consult_id: str, specialty: str, reason: str
    ) -> Consult:
        consult = await self._waiting_for(who, consult_id)
        if specialty not in self.specialties:
            raise ApiError(400, "unknown_specialty", f"unknown specialty {specialty!r}")
        if specialty == consult.specialty:
            raise ApiError(400, "bad_request", "the consult is already for that specialty")
        entry = Transfer(
            sub=who.sub, name=who.name, from_specialty=consult.specialty, to=specialty,
            reason=reason, at=self.clock(),
        )  # fmt: skip
        consult = await self.state.change_consult(
            consult_id, ConsultChange.UPDATE_WAITING, specialty=specialty,
            transfers=[*consult.transfers, entry],
        )  # fmt: skip
        self.audit.record("consult.transferred", who.public(), consult_id=consult_id,
                          to_specialty=specialty, note=reason)  # fmt: skip
        await self._announce(consult)
        return consult

    async def report(self, who: Principal, consult_id: str, body: ConsultReport) -> Consult:
        """The accepting specialist's structured report closes the consult; its hash
        goes into the audit trail, bound to the specialist's identity."""
        consult = await self.state.get_consult(consult_id)
        if consult is None or not can_see_consult(who, consult):
            raise consult_not_found()
        if who.role != "specialist" or consult.specialist_sub != who.sub:
            raise forbidden("only the accepting specialist writes the consult report")
        if consult.report is not None:
            raise ApiError(409, "invalid_state", "this consult already has its report")
        now = self.clock()
        report = Report(
            **body.model_dump(mode="json"), consult_id=consult_id, specialist=who.person(),
            written_at=now,
        )  # fmt: skip
        digest = report_digest(report)
        consult = await self.state.change_consult(
            consult_id, ConsultChange.REPORT, report=report, report_sha256=digest,
            ended_at=consult.ended_at or now,
        )  # fmt: skip
        self.audit.record("consult.reported", who.public(), consult_id=consult_id,
                          report_sha256=digest)  # fmt: skip
        await self._announce(consult)
        if consult.session_id:
            with contextlib.suppress(TransitionRefused, NotFound):
                await self.state.change_session(
                    consult.session_id, SessionChange.END, ended_at=now, ended_by=who.person()
                )
                await self.state.publish(
                    SessionEnded(
                        session_id=consult.session_id, reason="reported", by=who.person(),
                        part="specialist",
                    )  # fmt: skip
                )
        return consult
