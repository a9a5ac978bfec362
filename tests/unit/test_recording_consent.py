"""The consent rules of recording, enforced by the server."""

from __future__ import annotations

import pytest

from media import MediaNode
from signaling.auth import Principal
from signaling.errors import ApiError
from signaling.logs import Audit
from signaling.model import Session, SessionState, to_json
from signaling.recording import RecordingService
from signaling.store import StoreUnavailable

REFERRER = Principal("dr-amal", "Amal", "referrer", "hospital-a")
SPECIALIST = Principal("dr-karim", "Karim", "specialist", None, ("cardiology",))
SESSION = Session(
    id="s_1", consult_id="c_1", state=SessionState.LIVE, node="n", facility="hospital-a",
    specialty="cardiology", referrer=REFERRER.person(), specialist=SPECIALIST.person(),
    created_at=1.0,
)  # fmt: skip


class FakeHandle:
    def __init__(self) -> None:
        self.segments: list[int] = []
        self.finished: dict | None = None

    def open_segment(self, index: int):
        self.segments.append(index)
        raise AssertionError("no media flows in these tests")

    def finish(self, **fields) -> None:
        self.finished = fields


class FakeVault:
    def __init__(self) -> None:
        self.created: dict[str, dict] = {}
        self.handles: dict[str, FakeHandle] = {}

    def create(self, recording_id: str, metadata: dict) -> FakeHandle:
        self.created[recording_id] = metadata
        self.handles[recording_id] = FakeHandle()
        return self.handles[recording_id]


class Events:
    def __init__(self) -> None:
        self.names: list[str] = []

    def record(self, event: str, actor=None, **fields) -> None:
        self.names.append(event)


@pytest.fixture
def service():
    events = Events()
    service = RecordingService(FakeVault(), MediaNode(), events)  # type: ignore[arg-type]
    service.events = events
    return service


def test_never_starts_with_one_consent_missing(service):
    rec = service.request(REFERRER, SESSION, [REFERRER, SPECIALIST])
    assert rec.state == "requested" and rec.recorder is None
    assert service.vault.created == {}
    rec = service.answer(SPECIALIST, "s_1", True, [REFERRER, SPECIALIST])
    assert rec.state == "recording" and rec.recording_id in service.vault.created
    record = service.vault.created[rec.recording_id]["consent_record"]
    assert [e["event"] for e in record] == [
        "recording.requested",
        "recording.consented",
        "recording.consented",
    ]
    assert service.events.names[-1] == "recording.started"


def test_decline_cancels_the_request(service):
    service.request(REFERRER, SESSION, [REFERRER, SPECIALIST])
    rec = service.answer(SPECIALIST, "s_1", False, [REFERRER, SPECIALIST])
    assert rec.state == "idle" and service.vault.created == {}
    assert "recording.declined" in service.events.names


def test_late_joiner_pauses_until_they_consent(service):
    service.request(REFERRER, SESSION, [REFERRER])  # alone in the session: starts at once
    rec = service.sessions["s_1"]
    assert rec.state == "recording"
    service.participant_joined(SPECIALIST, "s_1", [REFERRER, SPECIALIST])
    assert rec.state == "paused" and rec.recorder.paused
    service.answer(SPECIALIST, "s_1", True, [REFERRER, SPECIALIST])
    assert rec.state == "recording" and not rec.recorder.paused
    assert service.events.names[-1] == "recording.resumed"


def test_withdrawal_stops_the_recording(service):
    service.request(REFERRER, SESSION, [REFERRER, SPECIALIST])
    rec = service.answer(SPECIALIST, "s_1", True, [REFERRER, SPECIALIST])
    handle = service.vault.handles[rec.recording_id]
    service.answer(REFERRER, "s_1", False, [REFERRER, SPECIALIST])
    assert rec.state == "stopped" and handle.finished["state"] == "complete"
    assert {"recording.withdrawn", "recording.stopped"} <= set(service.events.names)


def test_unconfigured_and_repeated_requests_are_refused(service):
    service.request(REFERRER, SESSION, [REFERRER, SPECIALIST])
    with pytest.raises(ApiError) as caught:
        service.request(SPECIALIST, SESSION, [REFERRER, SPECIALIST])
    assert caught.value.code == "invalid_state"
    unconfigured = RecordingService(None, MediaNode(), Audit("n"))
    with pytest.raises(ApiError) as caught:
        unconfigured.request(REFERRER, SESSION, [REFERRER])
    assert caught.value.code == "recording_unavailable"


class FlakyStore:
    """A store that can be down: what a heartbeat's retry finds when it is back."""

    def __init__(self) -> None:
        self.down = False
        self.saved: dict[str, dict] = {}

    async def change_session(self, session_id, transition, *, recording):
        if self.down:
            raise StoreUnavailable("redis is down")
        self.saved[session_id] = to_json(recording)


async def test_recording_state_missed_by_a_down_store_is_saved_when_it_returns(service):
    store = service.store = FlakyStore()
    rec = service.request(REFERRER, SESSION, [REFERRER, SPECIALIST])
    await service.persist("s_1")
    assert store.saved["s_1"]["state"] == "requested"

    store.down = True
    service.answer(SPECIALIST, "s_1", True, [REFERRER, SPECIALIST])
    await service.persist("s_1")  # logged and kept for later; the recording goes on
    assert rec.state == "recording" and store.saved["s_1"]["state"] == "requested"
    await service.persist_unsaved()  # a heartbeat while the store is still down
    assert service.unsaved == {"s_1"}

    store.down = False
    await service.persist_unsaved()  # the first heartbeat that reaches it
    assert store.saved["s_1"]["state"] == "recording"
    assert store.saved["s_1"]["recording_id"] == rec.recording_id
    assert service.unsaved == set()
