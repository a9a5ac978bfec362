"""Who may see or do what with a consult, a session and what belongs to them.
Every rule is checked on the server, whatever a page shows or hides.

Supervisors and admins oversee their own organisation: its facilities' consults,
and consults routed to its specialists. A consult between two organisations is
seen by both sides' supervisors and nobody else's."""

from __future__ import annotations

from .auth import Principal
from .errors import ApiError
from .model import Consult, ConsultState, Session


def oversees(who: Principal, organisations: set[str] | list[str]) -> bool:
    return who.is_overseer and who.organisation in organisations


def can_see_consult(who: Principal, consult: Consult) -> bool:
    if who.is_overseer:
        return oversees(who, consult.organisations)
    if who.role == "referrer":
        return consult.facility == who.facility
    if who.role == "specialist":
        mine = consult.specialist_sub == who.sub
        return mine or (consult.state == ConsultState.WAITING and may_take(who, consult))
    return False


def routed_to(who: Principal, consult: Consult) -> bool:
    return who.organisation in consult.routed_to or who.organisation == consult.organisation


def may_take(who: Principal, consult: Consult) -> bool:
    """A specialist of the consult's specialty, of an organisation it is routed to,
    who has not declined it; or one it was escalated to."""
    if who.sub in consult.offered_to:
        return True
    declined = {d.sub for d in consult.declines}
    return (
        consult.specialty in who.specialties
        and who.sub not in declined
        and routed_to(who, consult)
    )


def may_accept(who: Principal, consult: Consult) -> bool:
    return who.sub in consult.offered_to or (
        consult.specialty in who.specialties and routed_to(who, consult)
    )


def may_read_attachments(who: Principal, consult: Consult) -> bool:
    """The referring facility, the accepting specialist, its overseers."""
    if who.is_overseer:
        return oversees(who, consult.organisations)
    if who.role == "referrer":
        return consult.facility == who.facility
    return consult.specialist_sub == who.sub


def may_see_session(who: Principal, session: Session) -> bool:
    if who.is_overseer:
        return oversees(who, session.organisations)
    return who.role != "referrer" or session.facility == who.facility


def session_part(who: Principal, session: Session) -> str | None:
    """The publisher slot ``who`` takes in a session: "referrer", "specialist",
    None for an observer. Raises forbidden for anyone else."""
    if who.role == "referrer" and session.referrer.sub == who.sub:
        return "referrer"
    if who.role == "specialist" and session.specialist.sub == who.sub:
        return "specialist"
    if who.is_overseer:
        return None
    raise ApiError(403, "forbidden", "you are not part of this session")


def may_play(who: Principal, record: dict) -> bool:
    """A recording: the participants of its session, its organisations' overseers
    (recordings made before organisations were kept belong to "local")."""
    if who.is_overseer:
        return oversees(who, record.get("organisations") or ["local"])
    return any(p.get("sub") == who.sub for p in record.get("participants", []))
