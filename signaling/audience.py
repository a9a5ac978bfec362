"""Who hears of a consult change: each connection is filed under the groups it
belongs to (an organisation's overseers, a facility, a specialty, a person), a
change is weighed only for the groups it concerns, and ``notification`` decides
what each of those connections gets."""

from __future__ import annotations

from typing import Any

from .access import may_take
from .connection import Connection
from .model import Consult, ConsultState


def overseers(organisation: str, sharing: bool = False) -> tuple[str, ...]:
    """An organisation's supervisors and admins; ``sharing``: those taking batches,
    who get consult changes as SharedPushes."""
    return ("overseers", organisation, "shared") if sharing else ("overseers", organisation)


def notification(conn: Connection, consult: Consult) -> str | None:
    """Which form of a consult change this connection gets: "full", "stub" (a
    specialist whose queue held it learns only that it left the queue), or None."""
    who = conn.principal
    if who.is_overseer:
        return "full" if who.organisation in consult.organisations else None
    if who.role == "referrer":
        return "full" if consult.facility == who.facility else None
    if who.role == "specialist":
        if consult.specialist_sub == who.sub:
            return "full"
        if consult.state == ConsultState.WAITING:  # new work: only to those free to take it
            return "full" if conn.on_call and may_take(who, consult) else None
        return "stub" if consult.specialty in who.specialties else None
    return None


def stub(consult: Consult) -> dict[str, Any]:
    """What a colleague learns of a consult that left their queue: no summary, no
    patient, no session."""
    return {
        "id": consult.id, "state": consult.state, "specialty": consult.specialty,
        "urgency": consult.urgency, "facility": consult.facility,
        "created_at": consult.created_at,
    }  # fmt: skip


def audience_keys(conn: Connection) -> list[tuple[str, ...]]:
    """The groups a connection is filed under: a consult change is weighed (by
    ``notification``) only for the connections of the groups it concerns, not for
    every connection of the node."""
    who = conn.principal
    if who.is_overseer:
        return [overseers(who.organisation, conn.batch)]
    keys = [("sub", who.sub)]
    if who.role == "referrer":
        keys.append(("facility", who.facility))
    elif who.role == "specialist":
        keys += [("specialty", specialty) for specialty in who.specialties]
    return keys


def concerned_keys(consult: Consult) -> list[tuple[str, ...]]:
    """The groups that may see a change of ``consult``: its organisations'
    overseers, its facility, its specialty, its specialist and those it was
    escalated to."""
    subs = [consult.specialist_sub, *consult.offered_to]
    orgs = sorted(consult.organisations)
    return [
        *(overseers(org) for org in orgs),
        *(overseers(org, sharing=True) for org in orgs),
        ("facility", consult.facility),
        ("specialty", consult.specialty),
        *(("sub", sub) for sub in subs if sub),
    ]
