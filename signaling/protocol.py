"""Schemas of everything clients send (docs/protocol.md), validated with pydantic."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from .errors import ApiError
from .model import Urgency

Ref = Annotated[str, StringConstraints(max_length=64)] | None
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: Ref = None


class Auth(_Message):
    type: Literal["auth"]
    # None: the page's sign-in session (its cookie came with the WebSocket upgrade)
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)] | None = None
    batch: bool = False  # the client takes several messages in one frame, as a JSON array


class Reauth(_Message):
    """A fresh token for the same user, before the current one expires."""

    type: Literal["reauth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class Join(_Message):
    type: Literal["join"]
    session_id: Id


class Offer(_Message):
    type: Literal["offer"]
    sdp: Annotated[str, StringConstraints(min_length=1)]


class IceCandidate(BaseModel):
    candidate: Annotated[str, StringConstraints(max_length=1024)]
    sdpMid: Annotated[str, StringConstraints(max_length=32)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=64)] | None = None
    usernameFragment: str | None = None


class Candidate(_Message):
    type: Literal["candidate"]
    candidate: IceCandidate | None


class View(_Message):
    """How large a subscriber shows one stream: it gets no larger a layer than that."""

    type: Literal["view"]
    slot: Literal["referrer", "specialist"]
    role: Literal["video", "screen"]
    height: Annotated[int, Field(ge=0, le=4320)]  # device pixels; 0: not known


class Leave(_Message):
    type: Literal["leave"]


class Ping(_Message):
    type: Literal["ping"]


class Presence(_Message):
    type: Literal["presence"]
    status: Literal["available", "busy", "off"]


class Chat(_Message):
    type: Literal["chat"]
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]


class RecordingRequest(_Message):
    type: Literal["recording.request"]


class RecordingConsent(_Message):
    type: Literal["recording.consent"]
    consent: bool


class RecordingStop(_Message):
    type: Literal["recording.stop"]


ClientMessage = Annotated[
    Auth
    | Reauth
    | Join
    | Offer
    | Candidate
    | View
    | Leave
    | Ping
    | Presence
    | Chat
    | RecordingRequest
    | RecordingConsent
    | RecordingStop,
    Field(discriminator="type"),
]
_client_message = TypeAdapter(ClientMessage)
MESSAGE_TYPES = frozenset(
    {"auth", "reauth", "join", "offer", "candidate", "view", "leave", "ping", "presence", "chat",
     "recording.request", "recording.consent", "recording.stop"}
)  # fmt: skip


def describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where or 'message'}: {item['msg']}")
    return "; ".join(parts)


def encode(message: object) -> str:
    """A message as the JSON text sent on the wire, typed records (``model``)
    included (msgspec: as fast as orjson, and it encodes the records as they are)."""
    return _encoder.encode(message).decode()


_encoder = msgspec.json.Encoder()


def compact(record: msgspec.Struct) -> dict[str, Any]:
    """A record for a push to many: its fields that differ from their defaults (no
    nulls, no empty lists). Pages read a missing field as empty; a consult pushed to
    every observing supervisor is a third the size."""
    defaults = _defaults.get(type(record))
    if defaults is None:
        defaults = _defaults[type(record)] = {
            f.name: f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
            for f in msgspec.structs.fields(record)
            if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
        }  # fmt: skip
    return {
        name: value
        for name in record.__struct_fields__
        if (value := getattr(record, name)) != defaults.get(name, _REQUIRED)
    }


_REQUIRED = object()  # a field without a default: always sent
_defaults: dict[type, dict[str, Any]] = {}


def parse_json(raw: str | bytes, limit: int) -> object:
    if len(raw) > limit:
        error = ApiError(413, "too_large", f"message is larger than {limit} bytes")
        # Below the transport's hard cap, still find the ref so the client can tell
        # which message was refused.
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            error.ref = ref_of(orjson.loads(raw))
        raise error
    try:
        return orjson.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "message is not valid JSON") from None


def parse_client_message(data: object) -> BaseModel:
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "a message must be a JSON object")
    kind = data.get("type")
    if kind not in MESSAGE_TYPES:
        raise ApiError(400, "unknown_type", f"unknown message type {str(kind)[:40]!r}")
    try:
        return _client_message.validate_python(data)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", describe(exc)) from None


class NewConsult(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    specialty: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    urgency: Urgency
    summary: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    patient_ref: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    ]


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class Transfer(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    specialty: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class ConsultReport(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    findings: Annotated[str, StringConstraints(min_length=1, max_length=5000)]
    assessment: Annotated[str, StringConstraints(min_length=1, max_length=5000)]
    recommendation: Annotated[str, StringConstraints(min_length=1, max_length=5000)]
    follow_up_urgency: Urgency | Literal["none"]


def parse_body(model: type[BaseModel], data: object) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", describe(exc)) from None


def ref_of(data: object) -> str | None:
    """The ``ref`` of a raw message, if it has a usable one (for error replies)."""
    if isinstance(data, dict) and isinstance(data.get("ref"), str) and len(data["ref"]) <= 64:
        return data["ref"]
    return None
