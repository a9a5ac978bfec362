"""The case packet: files a referrer attaches to a consult (ECG as PDF, echo or
angiography stills as JPEG/PNG, DICOM), checked by content and size, stored
encrypted at rest with a data key per file held in the node's keyring.

An upload streams to its encrypted file as it arrives: never whole in memory, the
size limit counted on the bytes actually read, the SHA-256 of the whole file, and
nothing kept of an upload that is refused or cut short."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterable

from recordings.crypto import (
    MasterKeyError,
    SegmentWriter,
    TamperedError,
    decrypt_segment,
    unseal,
)
from recordings.keyring import KeyNotFound, Keyring, Shelf
from recordings.storage import Storage

from .access import may_read_attachments
from .auth import Principal
from .errors import ApiError
from .logs import Audit, get_logger
from .model import CONSULT_OPEN_STATES, Attachment, Consult, ConsultChange, ConsultUpdated
from .store import LiveState

log = get_logger()

KIND = "attachment"  # the case packet's shelf in the keyring
KEY_OBJECT = "key"
DATA_OBJECT = "data"
SNIFF_BYTES = 132  # enough to recognise every accepted type (DICOM's magic is at 128)

# What each accepted type must look like inside, whatever its name or declared type.
TYPES = {
    "application/pdf": lambda data: data.startswith(b"%PDF-"),
    "image/jpeg": lambda data: data.startswith(b"\xff\xd8\xff"),
    "image/png": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
    "application/dicom": lambda data: data[128:132] == b"DICM",
}


class UploadCut(Exception):
    """The client stopped sending before its body was complete."""


def sniff(data: bytes) -> str | None:
    return next((kind for kind, looks_like in TYPES.items() if looks_like(data)), None)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"attachments are limited to {limit} bytes")


async def _head(body: AsyncIterable[bytes], limit: int) -> tuple[bytes, bool]:
    """The first SNIFF_BYTES of the body (fewer if it is shorter), and whether the
    body ended there."""
    head = bytearray()
    async for chunk in body:
        head += chunk
        if len(head) > limit:
            raise too_large(limit)
        if len(head) >= SNIFF_BYTES:
            return bytes(head), False
    return bytes(head), True


class CasePacket:
    def __init__(self, state: LiveState, storage: Storage | None, keyring: Keyring | None,
                 audit: Audit, *, max_bytes: int, max_files: int = 50) -> None:  # fmt: skip
        self.state = state
        self.storage = storage
        self.keyring = keyring
        self.audit = audit
        self.max_bytes = max_bytes
        self.max_files = max_files  # per consult
        if storage is not None and keyring is not None:
            keyring.add_shelf(Shelf(KIND, storage, KEY_OBJECT))

    def _available(self) -> tuple[Storage, Keyring]:
        if self.storage is None or self.keyring is None:
            raise ApiError(503, "attachments_unavailable", "attachments are not configured")
        return self.storage, self.keyring

    def check_may_add(self, who: Principal, consult: Consult) -> None:
        """Everything that refuses an upload before a byte of it is read."""
        self._available()
        if who.role != "referrer" or consult.facility != who.facility:
            raise ApiError(403, "forbidden", "only the referring facility attaches files")
        if consult.state not in CONSULT_OPEN_STATES:
            raise ApiError(409, "invalid_state", f"the consult is {consult.state}")
        if len(consult.attachments) >= self.max_files:
            raise ApiError(
                409, "too_many_attachments", f"a consult holds at most {self.max_files} files"
            )

    async def add(self, who: Principal, consult: Consult, filename: str, declared: str,
                  body: AsyncIterable[bytes]) -> Attachment:  # fmt: skip
        """Store the file ``body`` yields, chunk by chunk, encrypted; raises
        ApiError (413, 415, …) or UploadCut, and then nothing is kept."""
        self.check_may_add(who, consult)
        storage, keyring = self._available()
        head, ended = await _head(body, self.max_bytes)
        kind = sniff(head)
        if kind is None:
            raise ApiError(
                415, "unsupported_type", "only PDF, JPEG, PNG and DICOM files can be attached"
            )
        if declared not in (kind, "application/octet-stream", ""):
            raise ApiError(415, "unsupported_type", f"the file is {kind}, not {declared}")
        attachment_id = "a_" + secrets.token_hex(10)
        digest, size, writer = hashlib.sha256(head), len(head), None
        try:
            data_key = keyring.create(KIND, attachment_id)
            writer = SegmentWriter(
                storage.create(f"{attachment_id}/{DATA_OBJECT}"), data_key, attachment_id, 0
            )
            writer.write(head)
            if not ended:
                async for chunk in body:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    digest.update(chunk)
                    writer.write(chunk)
            await asyncio.to_thread(writer.close)  # fsync: off the event loop
            entry = Attachment(
                id=attachment_id, filename=filename[:200] or "attachment", content_type=kind,
                size=size, sha256=digest.hexdigest(), by=who.person(), at=time.time(),
            )  # fmt: skip
            updated = await self.state.change_consult(
                consult.id, ConsultChange.ATTACH, attachments=[*consult.attachments, entry]
            )
        except BaseException:
            self._discard(attachment_id, writer)
            raise
        self.audit.record(
            "attachment.added", who.public(), consult_id=consult.id,
            attachment_id=attachment_id, sha256=entry.sha256, size=size,
        )  # fmt: skip
        await self.state.publish(ConsultUpdated(consult=updated))
        return entry

    def shred(self, attachment_id: str) -> None:
        """Destroy a stored file and its key (retention): it can never be read again."""
        self._discard(attachment_id, None)

    def _discard(self, attachment_id: str, writer: SegmentWriter | None) -> None:
        """Nothing half-stored: the key is shredded, the partial file dropped."""
        storage, keyring = self._available()
        if writer is not None:
            writer.abort()
        if keyring.has(KIND, attachment_id):
            keyring.shred(KIND, attachment_id)
        if storage.exists(f"{attachment_id}/{DATA_OBJECT}"):
            storage.delete(f"{attachment_id}/{DATA_OBJECT}")

    def read(
        self, who: Principal, consult: Consult, attachment_id: str
    ) -> tuple[Attachment, bytes]:
        storage, keyring = self._available()
        entry = next((a for a in consult.attachments if a.id == attachment_id), None)
        if entry is None or not may_read_attachments(who, consult):
            raise ApiError(404, "attachment_not_found", "no such attachment")
        try:
            key = keyring.data_key(KIND, attachment_id)
            blob = storage.read(f"{attachment_id}/{DATA_OBJECT}")
            data = self._decrypt(key, blob, attachment_id)
        except MasterKeyError:
            log.error("attachment.key_unavailable", attachment_id=attachment_id)
            raise ApiError(
                503, "key_unavailable",
                "this file's key is wrapped by a master key this server does not hold",
            ) from None  # fmt: skip
        except (KeyNotFound, FileNotFoundError):
            raise ApiError(410, "attachment_gone", "this file is no longer stored") from None
        except TamperedError:
            log.error("attachment.tampered", attachment_id=attachment_id)
            raise ApiError(
                409, "attachment_tampered", "the file failed its integrity check; nothing is served"
            ) from None
        self.audit.record("attachment.viewed", who.public(), consult_id=consult.id,
                          attachment_id=attachment_id)  # fmt: skip
        return entry, data

    @staticmethod
    def _decrypt(key: bytes, blob: bytes, attachment_id: str) -> bytes:
        if blob[:1] == b"\x01":  # stored whole before uploads were streamed
            return unseal(key, blob, attachment_id.encode(), "attachment")
        return decrypt_segment(blob, key, attachment_id, 0)
