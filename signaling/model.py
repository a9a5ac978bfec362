"""The typed core: urgency and its order, the consult and session state machines
(one transition table each), and the records every layer passes around.

The stores turn these records into JSON and back (``signaling.store.live``);
everything else reads their attributes. Records are msgspec structs: a consult is
converted from its stored form in about half a microsecond (pydantic: ~5 µs), and
that happens several times on every join.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec


class Urgency(StrEnum):
    """How soon a consult must reach a specialist. Declared in queue order."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def rank(self) -> int:
        """0 is seen first."""
        return _URGENCY_RANK[self]

    @property
    def default_deadline_s(self) -> float:
        """How long it may wait before it escalates (half-way it is announced again);
        ``JISR_DEADLINE_<URGENCY>_S`` overrides it."""
        return _DEFAULT_DEADLINE_S[self]


_URGENCY_RANK = {urgency: rank for rank, urgency in enumerate(Urgency)}
_DEFAULT_DEADLINE_S = {Urgency.CRITICAL: 300.0, Urgency.URGENT: 1800.0, Urgency.ROUTINE: 86400.0}


class ConsultState(StrEnum):
    WAITING = "waiting"
    ACCEPTED = "accepted"
    LIVE = "live"
    ENDED = "ended"
    CANCELLED = "cancelled"


class SessionState(StrEnum):
    LIVE = "live"
    INTERRUPTED = "interrupted"  # its node died; a participant reconnecting takes it over
    ENDED = "ended"


@dataclass(frozen=True)
class Transition:
    """A change a record may undergo: allowed from ``sources``; ``target`` is the
    state it leads to, or None when the state stays what it was (an update)."""

    name: str
    sources: frozenset[StrEnum]
    target: StrEnum | None


def _table(machine: type) -> dict[str, Transition]:
    return {t.name: t for t in vars(machine).values() if isinstance(t, Transition)}


_OPEN = frozenset({ConsultState.WAITING, ConsultState.ACCEPTED, ConsultState.LIVE})
_WAITING = frozenset({ConsultState.WAITING})


class ConsultChange:
    """Every change of a consult after it is created (as ``waiting``)."""

    ACCEPT = Transition("accept", _WAITING, ConsultState.ACCEPTED)
    CANCEL = Transition("cancel", _WAITING, ConsultState.CANCELLED)
    GO_LIVE = Transition("go_live", frozenset({ConsultState.ACCEPTED}), ConsultState.LIVE)
    END = Transition(
        "end", frozenset({ConsultState.ACCEPTED, ConsultState.LIVE}), ConsultState.ENDED
    )
    # A session ended first (the specialist pressed End) still takes its report.
    REPORT = Transition("report", _OPEN - _WAITING | {ConsultState.ENDED}, ConsultState.ENDED)
    # Declines, transfers, re-announcements and escalations: still waiting.
    UPDATE_WAITING = Transition("update_waiting", _WAITING, None)
    ATTACH = Transition("attach", _OPEN, None)


class SessionChange:
    """Every change of a session after it is created (as ``live``, with its accept)."""

    END = Transition(
        "end", frozenset({SessionState.LIVE, SessionState.INTERRUPTED}), SessionState.ENDED
    )
    INTERRUPT = Transition("interrupt", frozenset({SessionState.LIVE}), SessionState.INTERRUPTED)
    RESUME = Transition("resume", frozenset({SessionState.INTERRUPTED}), SessionState.LIVE)
    # Taken over by another node (compare-and-set on its node as well).
    REHOME = Transition(
        "rehome", frozenset({SessionState.LIVE, SessionState.INTERRUPTED}), SessionState.LIVE
    )
    SAVE_RECORDING = Transition("save_recording", frozenset({SessionState.LIVE}), None)
    MEDIA_STARTED = Transition("media_started", frozenset({SessionState.LIVE}), None)


CONSULT_TRANSITIONS = _table(ConsultChange)
SESSION_TRANSITIONS = _table(SessionChange)
CONSULT_OPEN_STATES = _OPEN
CONSULT_TERMINAL_STATES = frozenset(ConsultState) - _OPEN
SESSION_ACTIVE_STATES = frozenset({SessionState.LIVE, SessionState.INTERRUPTED})
SESSION_TERMINAL_STATES = frozenset({SessionState.ENDED})


# records -----------------------------------------------------------------------


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Unknown fields in a stored record are ignored: a newer node may add some."""


class Person(Record):
    """Who did something, as kept in a record."""

    sub: str
    name: str


class Decline(Record):
    sub: str
    name: str
    reason: str
    at: float


class Transfer(Record):
    sub: str
    name: str
    from_specialty: str = msgspec.field(name="from")
    to: str
    reason: str
    at: float


class Attachment(Record):
    id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    by: Person
    at: float


class Report(Record):
    findings: str
    assessment: str
    recommendation: str
    follow_up_urgency: str  # an Urgency, or "none"
    consult_id: str
    specialist: Person
    written_at: float


class Consult(Record):
    id: str
    state: ConsultState
    specialty: str
    urgency: Urgency
    summary: str
    patient_ref: str
    facility: str
    referrer: Person
    created_at: float
    specialist: Person | None = None
    session_id: str | None = None
    accepted_at: float | None = None
    cancelled_at: float | None = None
    ended_at: float | None = None
    attachments: list[Attachment] = []
    declines: list[Decline] = []
    transfers: list[Transfer] = []
    offered_to: list[str] = []  # subs it was escalated to
    escalated_at: float | None = None
    reannounced_at: float | None = None
    report: Report | None = None
    report_sha256: str | None = None
    organisation: str = "local"  # the referring organisation's
    routed_to: list[str] = []  # organisations whose specialists may take it
    specialist_organisation: str | None = None  # once accepted
    # Counts its changes (the stores add one at each): the record store keeps a
    # consult's history in this order, whichever node's outbox delivers it first.
    version: int = 0

    @property
    def specialist_sub(self) -> str | None:
        return self.specialist.sub if self.specialist else None

    @property
    def organisations(self) -> set[str]:
        """Whose supervisors oversee it: the referring organisation's, and while it
        waits those it is routed to, once taken the specialist's."""
        if self.specialist_organisation is not None:
            return {self.organisation, self.specialist_organisation}
        return {self.organisation, *self.routed_to}

    @property
    def queue_key(self) -> tuple[int, float, str]:
        """Queue order: critical, then urgent, then routine; oldest first; then id."""
        return (self.urgency.rank, self.created_at, self.id)


class RecordingSnapshot(Record):
    """A session's recording state, kept with the session so that the node taking it
    over can continue the recording (signaling.recording)."""

    state: str
    recording_id: str | None = None
    requested_by: Person | None = None
    consents: dict[str, bool | None] = {}  # sub -> answer (None: not yet)
    names: dict[str, str] = {}
    history: list[dict[str, Any]] = []  # the consent record, as the vault keeps it
    started_at: float | None = None


class Session(Record):
    id: str
    consult_id: str
    state: SessionState
    node: str | None  # the node hosting its media
    facility: str
    specialty: str
    referrer: Person
    specialist: Person
    created_at: float
    ended_at: float | None = None
    ended_by: Person | None = None
    interrupted_at: float | None = None
    media_started_at: float | None = None  # both participants' media first connected
    recording: RecordingSnapshot | None = None
    organisation: str = "local"  # the referring organisation's
    specialist_organisation: str = "local"

    @property
    def organisations(self) -> set[str]:
        return {self.organisation, self.specialist_organisation}


class NodeInfo(Record):
    """A node's entry in the node map, refreshed by its heartbeat."""

    node: str
    internal_url: str = ""  # where other nodes reach it
    sessions: int = 0
    capacity: int = 1 << 30  # sessions it may host (JISR_MAX_SESSIONS_PER_NODE)
    expires: int = 0  # epoch ms: the entry is not to be trusted after this
    signature: str = ""  # HMAC of the entry under the cluster secret (cluster.trust)


class PresenceInfo(Record):
    """A specialist's on-call state, refreshed by the page."""

    status: str  # available | busy | off
    name: str
    specialties: list[str]
    at: float
    organisation: str = "local"


# events between nodes (Store.publish / subscribe) ------------------------------------


class ConsultUpdated(Record, tag="consult.updated", tag_field="type"):
    consult: Consult


class ConsultReannounced(Record, tag="consult.reannounced", tag_field="type"):
    consult: Consult


class ConsultEscalated(Record, tag="consult.escalated", tag_field="type"):
    consult: Consult


class SessionEnded(Record, tag="session.ended", tag_field="type"):
    session_id: str
    reason: str
    # Who ended it and in which part ("referrer", "specialist"; None: an admin), so
    # every page can say who ended the session; None when no one did (e.g. expiry).
    by: Person | None = None
    part: str | None = None


class TokenRevoked(Record, tag="token.revoked", tag_field="type"):
    token_id: str
    until: float  # when it would have expired anyway


Event = ConsultUpdated | ConsultReannounced | ConsultEscalated | SessionEnded | TokenRevoked


def to_json(record: Record) -> dict[str, Any]:
    """A record as JSON-able builtins (what the stores keep and the wire carries)."""
    return msgspec.to_builtins(record)


def replace(record: Any, **changes: Any) -> Any:
    return msgspec.structs.replace(record, **changes)
