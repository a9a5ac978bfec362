"""Consent-gated recording of a session: who may ask, who must agree, and when
the recorder runs. The server enforces every rule; pages only show the state.

States: idle → requested → recording ⇄ paused → stopped (or back to idle when
someone declines). Every present participant must consent before recording
starts; a participant who joins later must consent or recording pauses;
anyone's withdrawal stops it. Observers never consent and never start it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from media import MediaSubscriptions
from recordings.recorder import SessionRecorder
from recordings.vault import Vault

from .auth import Principal
from .errors import ApiError
from .logs import Audit
from .model import Person, RecordingSnapshot, Session, SessionChange
from .store import LiveState, StoreError, StoreUnavailable

log = structlog.get_logger("jisr.recording")
ACTIVE = ("requested", "recording", "paused")


@dataclass
class SessionRecording:
    session_id: str
    consult_id: str
    facility: str | None = None
    organisations: list[str] = field(default_factory=list)  # whose overseers may play it
    state: str = "idle"  # idle | requested | recording | paused | stopped
    recording_id: str | None = None
    requested_by: Person | None = None
    consents: dict[str, bool | None] = field(default_factory=dict)  # sub -> answer
    names: dict[str, str] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # the consent record
    recorder: SessionRecorder | None = None
    handle: object | None = None
    started_at: float | None = None

    def snapshot(self) -> RecordingSnapshot:
        """What another node needs to carry on if this one is lost (kept in the store
        with the session)."""
        return RecordingSnapshot(
            state=self.state, recording_id=self.recording_id, requested_by=self.requested_by,
            consents=dict(self.consents), names=dict(self.names), history=list(self.history),
            started_at=self.started_at,
        )  # fmt: skip

    def public(self) -> dict:
        return {
            "state": self.state,
            "recording_id": self.recording_id,
            "requested_by": self.requested_by,
            "consents": [
                {"sub": sub, "name": self.names.get(sub, sub), "consent": answer}
                for sub, answer in self.consents.items()
            ],
        }


class RecordingService:
    """One per node; holds the recording state of the sessions this node hosts."""

    def __init__(
        self,
        vault: Vault | None,
        media: MediaSubscriptions,
        audit: Audit,
        *,
        segment_s: float = 10.0,
        wall: Callable[[], float] = time.time,
        node_id: str = "",
        store: LiveState | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store  # where each session's recording state is kept for other nodes
        self.vault = vault  # None: recording is not configured on this node
        self.media = media
        self.audit = audit
        self.segment_s = segment_s
        self.wall = wall
        self.sessions: dict[str, SessionRecording] = {}
        self.unsaved: set[str] = set()  # sessions whose latest state the store missed
        # Told of each recording started and finished (the record store's index).
        self.indexer: Callable[..., None] | None = None

    def _index(self, rec: SessionRecording, state: str, **times: float | None) -> None:
        if self.indexer is not None and rec.recording_id is not None:
            self.indexer(id=rec.recording_id, session_id=rec.session_id,
                         consult_id=rec.consult_id, state=state,
                         started_at=rec.started_at, **times)  # fmt: skip

    def state(self, session_id: str) -> dict:
        rec = self.sessions.get(session_id)
        return rec.public() if rec else {"state": "idle", "consents": [], "recording_id": None}

    def _record(self, rec: SessionRecording, event: str, who: Principal | None, **fields) -> None:
        entry = {"event": event, "at": self.wall(), "by": who.ref() if who else None, **fields}
        rec.history.append(entry)
        self.audit.record(
            event, who.public() if who else None, session_id=rec.session_id,
            recording_id=rec.recording_id, **fields,
        )  # fmt: skip

    def request(
        self, who: Principal, session: Session, participants: list[Principal]
    ) -> SessionRecording:
        """A participant asks to record; every present participant is asked."""
        if self.vault is None:
            raise ApiError(
                503, "recording_unavailable", "recording is not configured on this server"
            )
        rec = self.sessions.get(session.id)
        if rec is not None and rec.state in ACTIVE:
            raise ApiError(409, "invalid_state", f"recording is already {rec.state}")
        rec = SessionRecording(
            session.id, session.consult_id, session.facility, sorted(session.organisations)
        )
        self.sessions[session.id] = rec
        rec.state = "requested"
        rec.requested_by = who.person()
        for person in participants:
            rec.consents[person.sub] = None
            rec.names[person.sub] = person.name
        rec.consents[who.sub] = True  # asking is consenting
        self._record(rec, "recording.requested", who)
        self._record(rec, "recording.consented", who)
        self._maybe_start(rec, participants)
        return rec

    def answer(
        self, who: Principal, session_id: str, consent: bool, participants: list[Principal]
    ) -> SessionRecording:
        rec = self.sessions.get(session_id)
        if rec is None or rec.state not in ACTIVE:
            raise ApiError(409, "invalid_state", "no recording is waiting for consent")
        if who.sub not in rec.consents:
            rec.consents[who.sub] = None
            rec.names[who.sub] = who.name
        if not consent:
            rec.consents[who.sub] = False
            self._record(
                rec,
                "recording.declined" if rec.state == "requested" else "recording.withdrawn",
                who,
            )
            self.stop(rec, reason="consent_withdrawn" if rec.recording_id else "declined")
            return rec
        rec.consents[who.sub] = True
        self._record(rec, "recording.consented", who)
        self._maybe_start(rec, participants)
        return rec

    def participant_joined(
        self, who: Principal, session_id: str, participants: list[Principal]
    ) -> SessionRecording | None:
        """A participant whose consent is not on record pauses the recording."""
        rec = self.sessions.get(session_id)
        if rec is None or rec.state not in ACTIVE:
            return None
        if rec.consents.get(who.sub) is True:
            self._maybe_start(rec, participants)
            return rec
        rec.consents[who.sub] = None
        rec.names[who.sub] = who.name
        if rec.state == "recording":
            rec.recorder.pause()
            rec.state = "paused"
            self._record(
                rec,
                "recording.paused",
                None,
                reason="participant_without_consent",
                waiting_for=who.sub,
            )
        return rec

    def _maybe_start(self, rec: SessionRecording, participants: list[Principal]) -> None:
        present = {p.sub for p in participants}
        if not present or any(rec.consents.get(sub) is not True for sub in present):
            return
        if rec.state == "requested":
            self._start(rec)
        elif rec.state == "paused":
            rec.recorder.resume()
            rec.state = "recording"
            self._record(rec, "recording.resumed", None)

    def _start(self, rec: SessionRecording) -> None:
        rec.recording_id = "r_" + secrets.token_hex(10)
        rec.started_at = self.wall()
        rec.handle = self.vault.create(
            rec.recording_id,
            {
                "session_id": rec.session_id,
                "consult_id": rec.consult_id,
                "participants": [{"sub": s, "name": rec.names.get(s, s)} for s in rec.consents],
                "consent_record": list(rec.history),
                "started_at": rec.started_at,
                "node": self.node_id,
                "facility": rec.facility,
                "organisations": rec.organisations,
            },
        )
        rec.recorder = SessionRecorder(
            self.media, rec.session_id, rec.handle.open_segment, segment_s=self.segment_s,
            wall=self.wall,
        )  # fmt: skip
        rec.recorder.start()
        rec.state = "recording"
        self._record(rec, "recording.started", None)
        self._index(rec, "recording")

    def stop(self, rec: SessionRecording, reason: str, who: Principal | None = None) -> None:
        if rec.recorder is not None:
            rec.recorder.stop()
            duration = rec.recorder.last_pts / 1000
            rec.recorder = None
            rec.state = "stopped"
            self._record(
                rec, "recording.stopped", who, reason=reason, duration_s=round(duration, 1)
            )
            # Everyone who consented at any point, late joiners included, may play it.
            consented = {e["by"]["sub"] for e in rec.history if e["event"] == "recording.consented"}
            participants = [{"sub": sub, "name": rec.names.get(sub, sub)} for sub in consented]
            ended_at = self.wall()
            rec.handle.finish(
                state="complete", ended_at=ended_at, duration_s=duration,
                consent_record=list(rec.history), participants=participants,
            )  # fmt: skip
            self._index(rec, "complete", ended_at=ended_at, duration_s=duration)
        else:
            rec.state = "idle"
            self._record(rec, "recording.cancelled", who, reason=reason)

    def stop_by(self, who: Principal, session_id: str) -> SessionRecording:
        rec = self.sessions.get(session_id)
        if rec is None or rec.state not in ACTIVE:
            raise ApiError(409, "invalid_state", "nothing is being recorded")
        self.stop(rec, reason="stopped_by_participant", who=who)
        return rec

    def session_closed(self, session_id: str) -> None:
        rec = self.sessions.pop(session_id, None)
        if rec is not None and rec.state in ACTIVE:
            self.stop(rec, reason="session_ended")

    def close(self) -> None:
        for session_id in list(self.sessions):
            self.session_closed(session_id)

    # surviving the loss of this node -----------------------------------------
    async def persist(self, session_id: str) -> None:
        """Keep the session's recording state with the session in the store, so that
        the node that takes the session over if this one dies can continue it."""
        rec = self.sessions.get(session_id)
        if rec is None or self.store is None:
            self.unsaved.discard(session_id)
            return
        try:
            await self.store.change_session(
                session_id, SessionChange.SAVE_RECORDING, recording=rec.snapshot()
            )
        except StoreUnavailable as exc:  # the recording goes on; saved once the store is back
            self.unsaved.add(session_id)
            log.warning("recording.state_not_saved", session_id=session_id, error=str(exc))
            return
        except StoreError as exc:  # the session is no longer live: nothing to continue
            log.warning("recording.state_not_saved", session_id=session_id, error=str(exc))
        self.unsaved.discard(session_id)

    async def persist_unsaved(self) -> None:
        """Save the states the store missed while it was down (on every heartbeat
        that reaches it), so a node lost after an outage can still be taken over."""
        for session_id in list(self.unsaved):
            await self.persist(session_id)

    def adopt(self, session: Session) -> SessionRecording | None:
        """This node took over a session whose node was lost: a recording that was
        running there continues here as a new part of the same recording, paused
        until the participants (whose consent is on record) are back."""
        saved = session.recording
        if saved is None or saved.state not in ACTIVE or session.id in self.sessions:
            return None
        rec = SessionRecording(
            session.id, session.consult_id, session.facility, sorted(session.organisations),
            state=saved.state,
            recording_id=saved.recording_id, requested_by=saved.requested_by,
            consents=dict(saved.consents), names=dict(saved.names),
            history=list(saved.history), started_at=saved.started_at,
        )  # fmt: skip
        self.sessions[rec.session_id] = rec
        if rec.state == "requested":
            return rec  # still asking: the answers come to this node now
        if self.vault is None:
            rec.state = "stopped"
            log.error("recording.lost", session_id=rec.session_id, reason="no vault here")
            return rec
        try:
            rec.handle, meta = self.vault.resume(rec.recording_id, node=self.node_id)
        except Exception as exc:  # noqa: BLE001 - deleted or unreadable: the call goes on
            rec.state = "stopped"
            log.error("recording.lost", session_id=rec.session_id, error=str(exc))
            return rec
        rec.recorder = SessionRecorder(
            self.media, rec.session_id, rec.handle.open_segment, segment_s=self.segment_s,
            wall=self.wall, started_at=meta["started_at"], first_segment=rec.handle.next_segment,
        )  # fmt: skip
        rec.recorder.start()
        rec.recorder.pause()
        rec.state = "paused"
        self._record(
            rec, "recording.continued", None, reason="node_lost", part=len(meta["parts"]),
            first_segment=rec.handle.next_segment,
        )  # fmt: skip
        return rec
