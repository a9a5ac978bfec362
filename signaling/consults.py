"""The consult lifecycle and who may see or change what. Every rule is checked
here, on the server, whatever a page shows or hides."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable

from .auth import Principal
from .errors import ApiError, forbidden
from .logs import Audit
from .protocol import NewConsult
from .store import Conflict, NotFound, Store, StoreUnavailable
from .triage import Triage

Clock = Callable[[], float]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'y')}"


def can_see_consult(who: Principal, consult: dict) -> bool:
    if who.sees_everything:
        return True
    if who.role == "referrer":
        return consult["facility"] == who.facility
    if who.role == "specialist":
        mine = (consult.get("specialist") or {}).get("sub") == who.sub
        return mine or (consult["state"] == "waiting" and may_take(who, consult))
    return False


def may_take(who: Principal, consult: dict) -> bool:
    """A specialist of the consult's specialty who has not declined it, or one it
    was escalated to."""
    if who.sub in consult.get("offered_to", []):
        return True
    declined = {d["sub"] for d in consult.get("declines", [])}
    return consult["specialty"] in who.specialties and who.sub not in declined


def session_part(who: Principal, session: dict) -> str | None:
    """The publisher slot ``who`` takes in a session: "referrer", "specialist",
    None for an observer. Raises forbidden for anyone else."""
    if who.role == "referrer" and session["referrer"]["sub"] == who.sub:
        return "referrer"
    if who.role == "specialist" and session["specialist"]["sub"] == who.sub:
        return "specialist"
    if who.sees_everything:
        return None
    raise ApiError(403, "forbidden", "you are not part of this session")


def consult_not_found() -> ApiError:
    return ApiError(404, "consult_not_found", "no such consult")


def session_not_found() -> ApiError:
    return ApiError(404, "session_not_found", "no such session")


class ConsultService:
    def __init__(
        self,
        store: Store,
        audit: Audit,
        *,
        node_id: str,
        specialties: list[str],
        clock: Clock = time.time,
        triage: Triage | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.node_id = node_id
        self.specialties = specialties
        self.clock = clock
        self.triage = triage

    async def place_session(self) -> str:
        """The live node hosting the fewest sessions (this one on a tie, or when the
        node map cannot be read): a session's media lives on exactly one node."""
        try:
            nodes = await self.store.list_nodes()
        except StoreUnavailable:
            return self.node_id
        load = {node: info.get("sessions", 0) for node, info in nodes.items()}
        load.setdefault(self.node_id, 0)
        return min(load, key=lambda node: (load[node], node != self.node_id, node))

    async def _announce(self, consult: dict) -> None:
        await self.store.publish({"type": "consult.updated", "consult": consult})

    async def create(self, who: Principal, body: NewConsult) -> dict:
        if who.role != "referrer":
            raise forbidden("only a referrer creates consults")
        if body.specialty not in self.specialties:
            raise ApiError(400, "unknown_specialty", f"unknown specialty {body.specialty!r}")
        consult = {
            "id": new_id("c"),
            "state": "waiting",
            "specialty": body.specialty,
            "urgency": body.urgency,
            "summary": body.summary,
            "patient_ref": body.patient_ref,
            "facility": who.facility,
            "referrer": who.ref(),
            "specialist": None,
            "session_id": None,
            "created_at": self.clock(),
            "accepted_at": None,
            "cancelled_at": None,
            "ended_at": None,
        }
        await self.store.create_consult(consult)
        self.audit.record(
            "consult.created",
            who.public(),
            consult_id=consult["id"],
            urgency=consult["urgency"],
            specialty=consult["specialty"],
            facility=who.facility,
        )
        if self.triage is not None:
            await self.triage.consult_created(consult)
        await self._announce(consult)
        return consult

    async def visible(self, who: Principal) -> list[dict]:
        if who.role == "referrer":
            mine = await self.store.list_consults(
                facility=who.facility, states=["waiting", "accepted", "live", "ended", "cancelled"]
            )
            return await self.with_positions(mine)
        if who.role == "specialist":
            queue = [
                c for c in await self.store.list_consults(states=["waiting"]) if may_take(who, c)
            ]
            mine = [
                c
                for c in await self.store.list_consults(states=["accepted", "live"])
                if (c.get("specialist") or {}).get("sub") == who.sub
            ]
            return mine + queue
        return await self.store.list_consults()

    async def get(self, who: Principal, consult_id: str) -> dict:
        consult = await self.store.get_consult(consult_id)
        if consult is None or not can_see_consult(who, consult):
            raise consult_not_found()
        return consult

    async def accept(self, who: Principal, consult_id: str) -> tuple[dict, dict]:
        if who.role != "specialist":
            raise forbidden("only a specialist accepts consults")
        consult = await self.store.get_consult(consult_id)
        if consult is None or not (
            consult["specialty"] in who.specialties or who.sub in consult.get("offered_to", [])
        ):
            raise consult_not_found()
        now = self.clock()
        session = {
            "id": new_id("s"),
            "consult_id": consult_id,
            "state": "live",
            "node": await self.place_session(),
            "facility": consult["facility"],
            "specialty": consult["specialty"],
            "referrer": consult["referrer"],
            "specialist": who.ref(),
            "created_at": now,
            "ended_at": None,
        }
        fields = {"specialist": who.ref(), "session_id": session["id"], "accepted_at": now}
        try:
            consult = await self.store.accept_consult(consult_id, fields=fields, session=session)
        except Conflict as exc:
            if exc.current_state in ("accepted", "live", "ended"):
                raise ApiError(
                    409, "already_accepted", "another specialist accepted this consult"
                ) from None
            raise ApiError(409, "invalid_state", f"the consult is {exc.current_state}") from None
        except NotFound:
            raise consult_not_found() from None
        self.audit.record(
            "consult.accepted",
            who.public(),
            consult_id=consult_id,
            session_id=session["id"],
            waited_s=round(now - consult["created_at"], 3),
        )
        await self._announce(consult)
        if self.triage is not None:
            await self.triage.consult_taken(consult)
        return consult, session

    async def cancel(self, who: Principal, consult_id: str) -> dict:
        if who.role != "referrer":
            raise forbidden("only the referring facility cancels a consult")
        await self.get(who, consult_id)
        try:
            consult = await self.store.transition_consult(
                consult_id,
                from_states=["waiting"],
                to_state="cancelled",
                fields={"cancelled_at": self.clock()},
            )
        except Conflict as exc:
            raise ApiError(
                409, "invalid_state", f"the consult is already {exc.current_state}"
            ) from None
        except NotFound:
            raise consult_not_found() from None
        self.audit.record("consult.cancelled", who.public(), consult_id=consult_id)
        await self._announce(consult)
        if self.triage is not None:
            await self.triage.consult_taken(consult)
        return consult

    async def session_for(self, who: Principal, session_id: str) -> tuple[dict, str | None]:
        """The session and the slot ``who`` takes in it (None: observer)."""
        session = await self.store.get_session(session_id)
        if session is None:
            raise session_not_found()
        if (
            not who.sees_everything
            and who.role == "referrer"
            and session["facility"] != who.facility
        ):
            raise session_not_found()
        return session, session_part(who, session)

    async def mark_live(self, consult_id: str) -> None:
        try:
            consult = await self.store.transition_consult(
                consult_id, from_states=["accepted"], to_state="live", fields={}
            )
        except (Conflict, NotFound):
            return
        await self._announce(consult)

    async def watch_nodes(self) -> None:
        """Sessions whose node is gone (its heartbeat key expired) are marked
        ``interrupted`` until a participant reconnects and a live node takes them
        over; this node's own sessions, marked so while its heartbeat could not
        reach the store, are live again. Every node runs this; the store's
        compare-and-set makes the marking happen once."""
        nodes = await self.store.list_nodes()
        for session in await self.store.list_sessions():
            mine, hosted = session.get("node") == self.node_id, session.get("node") in nodes
            if session["state"] == "live" and not hosted and not mine:
                change = ("live", "interrupted", {"interrupted_at": self.clock()})
            elif session["state"] == "interrupted" and mine:
                change = ("interrupted", "live", {})
            else:
                continue
            try:
                await self.store.transition_session(
                    session["id"], from_states=[change[0]], to_state=change[1], fields=change[2]
                )
            except (Conflict, NotFound):
                continue
            self.audit.record(
                f"session.{change[1]}", None, session_id=session["id"], node=session.get("node")
            )

    async def live_sessions(self, who: Principal) -> list[dict]:
        if not who.sees_everything:
            raise forbidden("only supervisors list live sessions")
        return await self.store.list_sessions()

    async def end(self, who: Principal, session_id: str) -> dict:
        session, part = await self.session_for(who, session_id)
        if part is None and who.role != "admin":
            raise forbidden("observers cannot end a session")
        reason = "ended_by_participant" if part is not None else "ended_by_admin"
        now = self.clock()
        try:
            session = await self.store.transition_session(
                session_id,
                from_states=["live", "interrupted"],
                to_state="ended",
                fields={"ended_at": now, "ended_by": who.ref()},
            )
        except Conflict as exc:
            raise ApiError(
                409, "invalid_state", f"the session is already {exc.current_state}"
            ) from None
        try:
            consult = await self.store.transition_consult(
                session["consult_id"],
                from_states=["accepted", "live"],
                to_state="ended",
                fields={"ended_at": now},
            )
            await self._announce(consult)
        except (Conflict, NotFound):
            pass
        self.audit.record("session.ended", who.public(), session_id=session_id, reason=reason)
        await self.store.publish(
            {"type": "session.ended", "session_id": session_id, "reason": reason}
        )
        return session

    async def with_positions(self, consults: list[dict]) -> list[dict]:
        """Each waiting consult's place in its specialty's queue (1 = next)."""
        waiting = [c for c in consults if c["state"] == "waiting"]
        if not waiting:
            return consults
        queue = await self.store.list_consults(
            states=["waiting"], specialties={c["specialty"] for c in waiting}
        )
        place: dict[str, int] = {}
        counts: dict[str, int] = {}
        for c in queue:
            counts[c["specialty"]] = counts.get(c["specialty"], 0) + 1
            place[c["id"]] = counts[c["specialty"]]
        return [{**c, "position": place.get(c["id"])} if c["state"] == "waiting" else c
                for c in consults]  # fmt: skip

    async def _waiting_for(self, who: Principal, consult_id: str) -> dict:
        if who.role != "specialist":
            raise forbidden("only a specialist declines or transfers a consult")
        consult = await self.store.get_consult(consult_id)
        if consult is None or not may_take(who, consult):
            raise consult_not_found()
        if consult["state"] != "waiting":
            raise ApiError(409, "invalid_state", f"the consult is {consult['state']}")
        return consult

    async def decline(self, who: Principal, consult_id: str, reason: str) -> dict:
        consult = await self._waiting_for(who, consult_id)
        entry = {**who.ref(), "reason": reason, "at": self.clock()}
        consult = await self._update_waiting(
            consult_id, {"declines": [*consult.get("declines", []), entry]}
        )
        self.audit.record("consult.declined", who.public(), consult_id=consult_id, reason=reason)
        await self._announce(consult)
        return consult

    async def transfer(self, who: Principal, consult_id: str, specialty: str, reason: str) -> dict:
        consult = await self._waiting_for(who, consult_id)
        if specialty not in self.specialties:
            raise ApiError(400, "unknown_specialty", f"unknown specialty {specialty!r}")
        if specialty == consult["specialty"]:
            raise ApiError(400, "bad_request", "the consult is already for that specialty")
        entry = {**who.ref(), "from": consult["specialty"], "to": specialty, "reason": reason,
                 "at": self.clock()}  # fmt: skip
        consult = await self._update_waiting(
            consult_id,
            {"specialty": specialty, "transfers": [*consult.get("transfers", []), entry]},
        )
        self.audit.record("consult.transferred", who.public(), consult_id=consult_id,
                          to_specialty=specialty, reason=reason)  # fmt: skip
        await self._announce(consult)
        return consult

    async def _update_waiting(self, consult_id: str, fields: dict) -> dict:
        try:
            return await self.store.transition_consult(
                consult_id, from_states=["waiting"], to_state="waiting", fields=fields
            )
        except Conflict as exc:
            raise ApiError(409, "invalid_state", f"the consult is {exc.current_state}") from None

    async def report(self, who: Principal, consult_id: str, report: dict) -> dict:
        """The accepting specialist's structured report closes the consult; its hash
        goes into the audit trail, bound to the specialist's identity."""
        consult = await self.store.get_consult(consult_id)
        if consult is None or not can_see_consult(who, consult):
            raise consult_not_found()
        if who.role != "specialist" or (consult.get("specialist") or {}).get("sub") != who.sub:
            raise forbidden("only the accepting specialist writes the consult report")
        now = self.clock()
        body = {**report, "consult_id": consult_id, "specialist": who.ref(), "written_at": now}
        digest = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        if consult.get("report"):
            raise ApiError(409, "invalid_state", "this consult already has its report")
        # A session ended first (the specialist pressed End) still takes its report.
        try:
            consult = await self.store.transition_consult(
                consult_id, from_states=["accepted", "live", "ended"], to_state="ended",
                fields={"report": body, "report_sha256": digest,
                        "ended_at": consult.get("ended_at") or now},
            )  # fmt: skip
        except Conflict as exc:
            raise ApiError(
                409, "invalid_state", f"the consult is already {exc.current_state}"
            ) from None
        self.audit.record("consult.reported", who.public(), consult_id=consult_id,
                          report_sha256=digest)  # fmt: skip
        await self._announce(consult)
        session_id = consult.get("session_id")
        if session_id:
            with contextlib.suppress(Conflict, NotFound):
                await self.store.transition_session(
                    session_id, from_states=["live", "interrupted"], to_state="ended",
                    fields={"ended_at": now, "ended_by": who.ref()},
                )  # fmt: skip
                await self.store.publish(
                    {"type": "session.ended", "session_id": session_id, "reason": "reported"}
                )
        return consult
