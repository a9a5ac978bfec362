"""The case packet: files a referrer attaches to a consult (ECG as PDF, echo or
angiography stills as JPEG/PNG, DICOM), checked by content and size, stored
encrypted at rest with a data key per file wrapped by the master key."""

from __future__ import annotations

import hashlib
import secrets
import time

from recordings.crypto import (
    MasterKey,
    new_data_key,
    seal,
    unseal,
    unwrap_data_key,
    wrap_data_key,
)
from recordings.storage import Storage

from .auth import Principal
from .errors import ApiError

# What each accepted type must look like inside, whatever its name or declared type.
TYPES = {
    "application/pdf": lambda data: data.startswith(b"%PDF-"),
    "image/jpeg": lambda data: data.startswith(b"\xff\xd8\xff"),
    "image/png": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
    "application/dicom": lambda data: data[128:132] == b"DICM",
}
OPEN_STATES = ("waiting", "accepted", "live")


def sniff(data: bytes) -> str | None:
    return next((kind for kind, looks_like in TYPES.items() if looks_like(data)), None)


def may_read(who: Principal, consult: dict) -> bool:
    """The referring facility, the accepting specialist, supervisors and admins."""
    if who.sees_everything:
        return True
    if who.role == "referrer":
        return consult["facility"] == who.facility
    return (consult.get("specialist") or {}).get("sub") == who.sub


class CasePacket:
    def __init__(self, store, storage: Storage | None, master: MasterKey | None, audit,
                 *, max_bytes: int) -> None:  # fmt: skip
        self.store = store
        self.storage = storage
        self.master = master
        self.audit = audit
        self.max_bytes = max_bytes

    def _available(self) -> None:
        if self.storage is None or self.master is None:
            raise ApiError(503, "attachments_unavailable", "attachments are not configured")

    async def add(self, who: Principal, consult: dict, filename: str, declared: str,
                  data: bytes) -> dict:  # fmt: skip
        self._available()
        if who.role != "referrer" or consult["facility"] != who.facility:
            raise ApiError(403, "forbidden", "only the referring facility attaches files")
        if consult["state"] not in OPEN_STATES:
            raise ApiError(409, "invalid_state", f"the consult is {consult['state']}")
        if len(data) > self.max_bytes:
            raise ApiError(413, "too_large", f"attachments are limited to {self.max_bytes} bytes")
        kind = sniff(data)
        if kind is None:
            raise ApiError(
                415, "unsupported_type", "only PDF, JPEG, PNG and DICOM files can be attached"
            )
        if declared not in (kind, "application/octet-stream", ""):
            raise ApiError(415, "unsupported_type", f"the file is {kind}, not {declared}")
        attachment_id = "a_" + secrets.token_hex(10)
        key = new_data_key()
        self.storage.put(f"{attachment_id}/key", wrap_data_key(self.master, attachment_id, key))
        self.storage.put(f"{attachment_id}/data", seal(key, data, attachment_id.encode()))
        entry = {
            "id": attachment_id,
            "filename": filename[:200] or "attachment",
            "content_type": kind,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "by": who.ref(),
            "at": time.time(),
        }
        try:
            updated = await self.store.transition_consult(
                consult["id"], from_states=OPEN_STATES, to_state=consult["state"],
                fields={"attachments": [*consult.get("attachments", []), entry]},
            )  # fmt: skip
        except Exception:
            self.storage.delete(f"{attachment_id}/key", shred=True)  # nothing half-stored
            self.storage.delete(f"{attachment_id}/data")
            raise
        self.audit.record(
            "attachment.added", who.public(), consult_id=consult["id"],
            attachment_id=attachment_id, sha256=entry["sha256"], size=len(data),
        )  # fmt: skip
        await self.store.publish({"type": "consult.updated", "consult": updated})
        return entry

    def read(self, who: Principal, consult: dict, attachment_id: str) -> tuple[dict, bytes]:
        self._available()
        entry = next((a for a in consult.get("attachments", []) if a["id"] == attachment_id), None)
        if entry is None or not may_read(who, consult):
            raise ApiError(404, "attachment_not_found", "no such attachment")
        key = unwrap_data_key(self.master, attachment_id, self.storage.read(f"{attachment_id}/key"))
        data = unseal(key, self.storage.read(f"{attachment_id}/data"), attachment_id.encode(),
                      "attachment")  # fmt: skip
        self.audit.record("attachment.viewed", who.public(), consult_id=consult["id"],
                          attachment_id=attachment_id)  # fmt: skip
        return entry, data
