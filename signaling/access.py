"""Who may see or do what with a consult, a session and what belongs to them.
Every rule is checked on the server, whatever a page shows or hides."""

from __future__ import annotations

from .auth import Principal
from .errors import ApiError
from .model import Consult, ConsultState, Session


def can_see_consult(who: Principal, consult: Consult) -> bool:
    if who.sees_everything:
        return True
    if who.role == "referrer":
        return consult.facility == who.facility
    if who.role == "specialist":
        mine = consult.specialist_sub == who.sub
        return mine or (consult.state == ConsultState.WAITING and may_take(who, consult))
    return False


def may_take(who: Principal, consult: Consult) -> bool:
    """A specialist of the consult's specialty who has not declined it, or one it
    was escalated to."""
    if who.sub in consult.offered_to:
        return True
    declined = {d.sub for d in consult.declines}
    return consult.specialty in who.specialties and who.sub not in declined


def may_accept(who: Principal, consult: Consult) -> bool:
    return consult.specialty in who.specialties or who.sub in consult.offered_to


def may_read_attachments(who: Principal, consult: Consult) -> bool:
    """The referring facility, the accepting specialist, supervisors and admins."""
    if who.sees_everything:
        return True
    if who.role == "referrer":
        return consult.facility == who.facility
    return consult.specialist_sub == who.sub


def may_see_session(who: Principal, session: Session) -> bool:
    return who.sees_everything or who.role != "referrer" or session.facility == who.facility


def session_part(who: Principal, session: Session) -> str | None:
    """The publisher slot ``who`` takes in a session: "referrer", "specialist",
    None for an observer. Raises forbidden for anyone else."""
    if who.role == "referrer" and session.referrer.sub == who.sub:
        return "referrer"
    if who.role == "specialist" and session.specialist.sub == who.sub:
        return "specialist"
    if who.sees_everything:
        return None
    raise ApiError(403, "forbidden", "you are not part of this session")


def may_play(who: Principal, participants: list[dict]) -> bool:
    """A recording: the participants of its session, supervisors and admins."""
    return who.sees_everything or any(p.get("sub") == who.sub for p in participants)
