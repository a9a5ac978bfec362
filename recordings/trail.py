"""A recording's audit journal: every audited action on it (playback, export,
verification, interruption, a failed deletion), kept with the recording, whoever
took it: a node, or a ``jisr recordings`` command on the same storage.

Each event is an object of its own, sealed with the recording's data key, under a
name no other writer takes (its time, a random part and its origin, see
recordings.layout): a node and a command append at the same moment without reading
or rewriting anything of each other's. The name is the event's associated data, so
an event cannot be altered, moved to another recording or passed off as another
origin's unseen. Deleting the recording shreds its journal with it (one key).

An event a command journals also leaves a pointer in the relay inbox; a node writes
the event to its own audit log (``relay``) and drops the pointer, so the server's
trail holds what commands did as well as what it did itself.

Not detected: an event object removed whole (each stands alone; a chain would need
one writer). The audit log lines keep their own copy.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from .crypto import MasterKeyError, TamperedError, seal, unseal
from .errors import RecordingNotFound
from .layout import RECORDING_ID, RELAY_INBOX, TRAIL
from .storage import Storage

ORIGINS = ("node", "cli")
UNREADABLE = "trail.unreadable"  # an event that failed verification, as the journal lists it

log = structlog.get_logger("jisr.recordings")


def _ad(name: str) -> bytes:
    return b"jisr.trail.v1\0" + name.encode()


@dataclass(frozen=True)
class Pointer:
    """An event a command journalled, not yet in a server's audit log."""

    name: str  # the pointer object
    recording_id: str
    trail_id: str  # the event object's name in the recording's folder, without .enc

    @property
    def event_name(self) -> str:
        return f"{self.recording_id}/{self.trail_id}.enc"


class Trail:
    def __init__(
        self, storage: Storage, data_key: Callable[[str], bytes], *, origin: str = "node"
    ) -> None:
        """``data_key(recording_id)``: the recording's key, or RecordingNotFound."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        self.storage = storage
        self.origin = origin
        self._data_key = data_key

    def append(self, recording_id: str, event: str, fields: dict[str, Any]) -> str | None:
        """Journal one event; its ``trail_id``, or None when the recording has no key
        (it never existed, or was deleted: nothing is left to attach it to)."""
        try:
            key = self._data_key(recording_id)
        except RecordingNotFound:
            return None
        trail_id = f"trail-{time.time_ns():020d}-{secrets.token_hex(4)}-{self.origin}"
        name = f"{recording_id}/{trail_id}.enc"
        body = json.dumps({"event": event, **fields}, default=str).encode()
        self.storage.put(name, seal(key, body, _ad(name)))
        if self.origin == "cli":
            self.storage.put(f"{RELAY_INBOX}/{recording_id}.{trail_id}", b"")
        return trail_id

    def record(self, recording_id: str, event: str, fields: dict[str, Any]) -> None:
        """``append`` for the vault's audit: a journal that cannot be written does
        not undo the action (its audit line is written already); it is logged."""
        try:
            self.append(recording_id, event, fields)
        except (OSError, MasterKeyError, TamperedError) as exc:
            log.warning(
                "recording.trail_failed", recording_id=recording_id, kind=event,
                error_type=type(exc).__name__,
            )  # fmt: skip

    def events(self, recording_id: str) -> list[dict[str, Any]]:
        """The journal, oldest first, each event with its ``trail_id`` and ``origin``;
        one that fails verification is listed as ``trail.unreadable``."""
        key = self._data_key(recording_id)
        events = []
        for name in self.storage.list(f"{recording_id}/trail-"):
            trail_id = name.rpartition("/")[2].removesuffix(".enc")
            if not TRAIL.fullmatch(f"{trail_id}.enc"):
                continue
            try:
                events.append(self._read(name, key))
            except FileNotFoundError:
                continue  # deleted meanwhile
            except TamperedError:
                events.append({"event": UNREADABLE, "trail_id": trail_id})
        return events

    def _read(self, name: str, key: bytes) -> dict[str, Any]:
        trail_id = name.rpartition("/")[2].removesuffix(".enc")
        what = f"event {trail_id} of the journal of recording {name.partition('/')[0]}"
        entry = json.loads(unseal(key, self.storage.read(name), _ad(name), what))
        if not isinstance(entry, dict) or not isinstance(entry.get("event"), str):
            raise TamperedError(f"{what} is not an event", "malformed")
        entry.update(trail_id=trail_id, origin=trail_id.rpartition("-")[2])
        return entry

    # relaying commands' events into a server's audit log -------------------------

    def pending(self) -> list[Pointer]:
        pointers = []
        for name in self.storage.list(f"{RELAY_INBOX}/"):
            recording_id, _, trail_id = name.partition("/")[2].partition(".")
            if RECORDING_ID.fullmatch(recording_id) and TRAIL.fullmatch(f"{trail_id}.enc"):
                pointers.append(Pointer(name, recording_id, trail_id))
        return pointers

    def relay(self, emit: Callable[[str, dict[str, Any]], None]) -> int:
        """Hand each event a command journalled to ``emit(event, fields)`` once, then
        drop its pointer; how many were handed. An event whose recording is gone is
        dropped (the command's own output had it); one this node cannot open yet (a
        key rotation under way) waits. Two nodes relaying at the same moment may
        both hand one on: both lines carry its ``trail_id``."""
        relayed = 0
        for pointer in self.pending():
            try:
                entry = self._read(pointer.event_name, self._data_key(pointer.recording_id))
            except (RecordingNotFound, FileNotFoundError):
                entry = None
            except MasterKeyError:
                continue
            except TamperedError as exc:
                log.warning("recording.trail_unrelayed", recording_id=pointer.recording_id,
                            reason=exc.reason)  # fmt: skip
                entry = None
            if entry is not None:
                emit(entry.pop("event"), entry)
                relayed += 1
            try:
                self.storage.delete(pointer.name)
            except FileNotFoundError:
                pass  # another node relayed it at the same moment
        return relayed
