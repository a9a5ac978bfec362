"""Verifying recordings at rest: every segment's authentication checked, nothing of
the plaintext kept or written, and the outcome kept beside the recording.

A segment is read a chunk at a time and each chunk's tag checked (the plaintext of
one chunk is in memory for that moment only). A segment the metadata lists as
published but that is not there is ``missing``; the metadata is sealed, so a segment
removed from the middle (or the end) of a recording shows, whatever the names of
those left. A segment that fails says why: ``authentication_failed``, ``truncated``
or ``malformed`` (see crypto.TamperedError).

The outcome is one sealed object per recording (``verify.enc``, see
recordings.layout), written whole, so a verification never reads and rewrites the
metadata a node may be updating at the same moment; the newest verification wins.
The vault's listing shows a recording whose last verification failed as
``tampered`` (with its ``recorded_state``) and every recording's ``verification``.
Removing ``verify.enc`` removes the mark until the next verification; the audit
trail keeps every verification that found a fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .crypto import MasterKeyError, TamperedError, seal, segment_chunks, unseal
from .errors import RecordingNotFound
from .layout import check_id, segment_name, verify_ad, verify_name
from .storage import Storage

if TYPE_CHECKING:
    from .vault import Audit, Vault

OK, TAMPERED, UNREADABLE = "ok", "tampered", "unreadable"


@dataclass(frozen=True)
class Failure:
    segment: int
    reason: str  # authentication_failed | truncated | malformed | missing

    def public(self) -> dict[str, Any]:
        return {"segment": self.segment, "reason": self.reason}


@dataclass(frozen=True)
class Verification:
    recording_id: str
    result: str  # ok | tampered; unreadable: the key or metadata could not be opened
    verified_at: float
    segments: int = 0  # segments checked (those present)
    failures: tuple[Failure, ...] = ()
    error: str | None = None  # why an unreadable recording could not be verified

    def public(self) -> dict[str, Any]:
        """What the verification record holds (and the listing shows)."""
        return {
            "result": self.result,
            "verified_at": self.verified_at,
            "segments": self.segments,
            "failures": [f.public() for f in self.failures],
        }


@dataclass
class Summary:
    """One verification run over several recordings."""

    verified: list[Verification] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(v.result == result for v in self.verified)

    @property
    def clean(self) -> bool:
        return all(v.result == OK for v in self.verified)


def check_segment(
    storage: Storage, data_key: bytes, recording_id: str, index: int
) -> Failure | None:
    """Authenticate one segment chunk by chunk, keeping nothing of it."""
    try:
        reader = storage.open(segment_name(recording_id, index))
    except FileNotFoundError:
        return Failure(index, "missing")
    try:
        chunks = segment_chunks(reader.read_at, reader.size, data_key, recording_id, index)
        for _plaintext in chunks:
            pass
    except TamperedError as exc:
        return Failure(index, exc.reason)
    finally:
        reader.close()
    return None


def verify(
    vault: Vault, recording_id: str, *, audit: Audit, repeat_ok: bool = True, **fields: Any
) -> Verification:
    """Verify one recording, keep the outcome beside it and audit it (also in the
    recording's journal) as ``recording.verified`` with its ``result`` and
    ``failures``; with ``repeat_ok`` False, a recording found ok as it was found last
    time is not audited again (a schedule would journal it at every pass).
    RecordingNotFound, MasterKeyError and TamperedError (the key or the metadata
    cannot be opened) are raised, and nothing is kept."""
    check_id(recording_id)
    data_key, meta = vault._open(recording_id)
    before = None if repeat_ok else read_record(vault.storage, recording_id, data_key)
    present = vault._segment_indices(recording_id)
    failures = [Failure(i, "missing") for i in sorted(set(meta["segment_indices"]) - set(present))]
    for index in present:
        if (failure := check_segment(vault.storage, data_key, recording_id, index)) is not None:
            failures.append(failure)
    failures.sort(key=lambda f: f.segment)
    outcome = Verification(
        recording_id, TAMPERED if failures else OK, vault.clock(), len(present), tuple(failures)
    )
    if not vault._exists(recording_id):  # deleted meanwhile: its segments went with it
        raise RecordingNotFound(f"recording {recording_id} was deleted while it was verified")
    record = {**outcome.public(), "by": fields.get("by") or fields.get("actor")}
    blob = seal(data_key, json.dumps(record, default=str).encode(), verify_ad(recording_id))
    vault.storage.put(verify_name(recording_id), blob)
    public = outcome.public()
    if before is not None and before.get("result") == outcome.result == OK:
        return outcome
    vault._audit(audit, "recording.verified", recording_id, {
        **fields, "result": outcome.result, "segments": public["segments"],
        "failures": public["failures"],
    })  # fmt: skip
    return outcome


def verify_many(
    vault: Vault, recording_ids: Iterable[str] | None, *, audit: Audit, **fields: Any
) -> Summary:
    """Verify the given recordings (all when None). One that cannot be opened is
    ``unreadable`` (and not marked: without its key nothing can be sealed for it);
    one deleted meanwhile (or never there) is left out."""
    summary = Summary()
    ids = [r["recording_id"] for r in vault.list()] if recording_ids is None else recording_ids
    for recording_id in ids:
        try:
            summary.verified.append(verify(vault, recording_id, audit=audit, **fields))
        except RecordingNotFound:
            continue
        except (MasterKeyError, TamperedError) as exc:
            summary.verified.append(
                Verification(recording_id, UNREADABLE, vault.clock(), error=str(exc))
            )
    return summary


def read_record(storage: Storage, recording_id: str, data_key: bytes) -> dict | None:
    """The recording's last verification, or None; an altered record is a
    TamperedError, as altered metadata is."""
    try:
        blob = storage.read(verify_name(recording_id))
    except FileNotFoundError:
        return None
    what = f"the verification record of recording {recording_id}"
    return json.loads(unseal(data_key, blob, verify_ad(recording_id), what))


def with_verification(public: dict, record: dict | None) -> dict:
    """The listing's view of a recording, with its last verification: state
    ``tampered`` (the state it was recorded in kept as ``recorded_state``) when that
    verification failed."""
    if record is None:
        return public
    public["verification"] = record
    if record.get("result") == TAMPERED:
        public["recorded_state"] = public["state"]
        public["state"] = TAMPERED
    return public


def recorded_state(public: dict) -> str:
    """The state a recording was recorded in, whatever its verification says."""
    return public.get("recorded_state", public["state"])
