"""What travels through the outbox to the record store: typed entries, one per
change of a consult, per audit event, per recording indexed, per FHIR push."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model import Consult, Record


class ConsultChanged(Record, tag="consult", tag_field="kind"):
    """A consult as it is after one of its changes (``consult.version``)."""

    consult: Consult
    at: float


class AuditEvent(Record, tag="audit", tag_field="kind"):
    """One audit event, its free text already screened (``logs.screen_fields``)."""

    id: str
    at: float
    event: str
    node: str
    actor: dict[str, Any] | None = None
    fields: dict[str, Any] = {}


class RecordingIndexed(Record, tag="recording", tag_field="kind"):
    id: str
    session_id: str
    consult_id: str | None
    state: str
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None


class FhirPush(Record, tag="fhir_push", tag_field="kind"):
    """Send a consult's Bundle to the hospital's FHIR server (``consult`` as it is
    when it ends: the push needs nothing from the record store but its recordings)."""

    consult_id: str
    at: float
    consult: Consult | None = None


Entry = ConsultChanged | AuditEvent | RecordingIndexed | FhirPush

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Entry)


def encode_entry(entry: Entry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> Entry:
    return _decoder.decode(data)
