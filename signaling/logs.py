"""structlog JSON logs and the audit trail.

Audit events are ordinary log lines with ``audit=true`` and a dotted event name,
so one pipeline ships both. Every line the process writes goes through here,
aiohttp's and asyncio's own included (the standard library's logging is routed
into the same JSON renderer).

What a line may carry is an allow-list: fields named in VERBATIM (ids, codes,
states, counts) are written as they are; numbers, booleans and None always are;
every other text is written only as its length and a hash, so a reason, a summary
or a chat line a user typed never reaches a log. Secrets (tokens, keys, SDP) are
dropped whatever the field is called.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

SECRET_FIELDS = frozenset({"token", "sdp", "secret", "key", "password", "authorization", "jwt"})
# Written as they are: names of ids, codes, states, people's public references.
VERBATIM = frozenset({
    "event", "level", "timestamp", "logger", "audit", "node", "via", "host",
    "actor", "by", "sub", "name", "role", "facility", "specialties", "specialty",
    "to_specialty", "urgency", "offered_to", "waiting_for",
    "consult_id", "session_id", "attachment_id", "recording_id", "recordings", "request_id",
    "conn", "peer", "publisher", "kind", "part", "participant", "state", "reason", "outcome",
    "error", "error_type", "path", "method", "status", "from_node", "to_node", "segment",
    "sha256", "report_sha256", "old_key_id", "new_key_id", "keys_not_under_master",
    "by_kind", "scope", "remote", "organisation", "organisations", "setting", "session_node",
    "result", "trail_id", "origin", "actor_sub",
})  # fmt: skip
HASH_CHARS = 16


def digest(text: str) -> dict[str, Any]:
    """What a log keeps of free text: its length and a short hash (to match two
    lines about the same text without revealing it)."""
    return {
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:HASH_CHARS],
    }


PLAIN = (type(None), bool, int, float)


def _plain_record(value: dict) -> bool:
    """A record of ids and codes only (an actor, say): written as it is, uncopied."""
    for key, item in value.items():
        if key not in VERBATIM:
            return False
        kind = item.__class__
        if kind is list:
            if any(element.__class__ is not str for element in item):
                return False
        elif kind is not str and kind not in PLAIN:
            return False
    return True


def _screen(name: str, value: Any) -> Any:
    kind = value.__class__
    if kind is str:  # the common case first: every line carries several
        return value if name in VERBATIM else digest(value)
    if kind in PLAIN:
        return value
    if kind is dict and _plain_record(value):
        return value
    if isinstance(value, Mapping):
        return {k: _screen(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_screen(name, v) for v in value]
    return str(value) if name in VERBATIM else digest(str(value))


UNSCREENED = frozenset({"exception", "exc_info", "stack_info"})  # tracebacks: our code's


def _allow_listed(_, __, event_dict: dict) -> dict:
    """Secrets redacted, free text screened: one pass over the line's fields."""
    for name, value in event_dict.items():  # values replaced in place: no key added
        if name in VERBATIM and value.__class__ is str:
            continue
        if name.lower() in SECRET_FIELDS:
            event_dict[name] = "[redacted]"
        elif name not in UNSCREENED:
            event_dict[name] = _screen(name, value)
    return event_dict


def screen_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields as a log line (or the audit trail) may keep them: secrets redacted,
    free text as its length and hash."""
    return {
        name: "[redacted]" if name.lower() in SECRET_FIELDS else _screen(name, value)
        for name, value in fields.items()
    }


def _dumps(event_dict: dict, **options) -> str:
    return orjson.dumps(event_dict, **options).decode()


def _render_line(_, __, event_dict: dict) -> bytes:
    """The line as written: JSON bytes with their newline, ready for one write
    (anything JSON cannot hold as its repr, as structlog's renderer does)."""
    return orjson.dumps(event_dict, default=repr, option=orjson.OPT_APPEND_NEWLINE)


_stamped: tuple[int, str] = (-1, "")  # the last whole second stamped, and its ISO text


def _timestamp(_, __, event_dict: dict) -> dict:
    """UTC ISO 8601 to the microsecond; the date and time of day are formatted once
    a second, not per line."""
    global _stamped
    now = time.time()
    second, text = _stamped  # one read: another thread may replace it
    if second != int(now):
        second = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamped = second, text
    event_dict["timestamp"] = f"{text}.{int((now - second) * 1e6):06d}Z"
    return event_dict


class LineWriter:
    """Where log lines go. A stream with a file descriptor (stdout, a file) gets
    each line in one system call on that descriptor, with no text layer or separate
    flush between; any other stream (a test's StringIO) gets it as text."""

    def __init__(self, stream) -> None:
        self._stream = stream
        try:
            stream.flush()  # what its text layer holds goes first
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None

    def msg(self, line: bytes) -> None:
        if self._fd is None:
            self._stream.write(line.decode())
            self._stream.flush()
            return
        view = memoryview(line)
        while view:  # a write to a pipe may be partial
            view = view[os.write(self._fd, view) :]

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _LineHandler(logging.Handler):
    """The standard library's records, formatted as JSON lines, to the same writer."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg((self.format(record) + "\n").encode())
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _QuietStdlib(logging.Filter):
    """The standard library's records (aiohttp, asyncio) become events with a type,
    never their message: aiohttp's refusals quote the bytes of the offending
    request line or header (the start of a bearer token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        record.jisr_event = "stdlib." + record.name.replace("aiohttp.", "http.")
        record.jisr_error = type(exc).__name__ if exc is not None else None
        if isinstance(exc, HttpProcessingError):  # a client's malformed request
            record.jisr_event = "http.bad_request"
            record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text, record.args = None, None, ()
        record.msg = record.jisr_event
        return True


def _stdlib_fields(_, __, event_dict: dict) -> dict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["event"] = record.jisr_event
        if record.jisr_error:
            event_dict["error_type"] = record.jisr_error
    return event_dict


_configured = 0  # how many times logging was configured: bound loggers follow it


def configure_logging(level: str = "info", stream=None) -> None:
    global _configured
    _configured += 1
    numeric = logging.getLevelName(level.upper())
    tail = [_allow_listed, structlog.processors.format_exc_info]
    writer = LineWriter(stream or sys.stdout)
    structlog.configure(
        processors=[structlog.processors.add_log_level, _timestamp, *tail, _render_line],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler(writer)
    handler.addFilter(_QuietStdlib())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, _timestamp, _stdlib_fields],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries' own chatter (aioice's per-check lines) only from warnings up;
    # aiohttp's access lines (as http.access) at the configured level.
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(numeric)


class AccessLog(AbstractAccessLogger):
    """aiohttp's access lines as ``http.access`` events: method, path (never the
    query), status, size and time; no header is ever written."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        structlog.get_logger("jisr.http").info(
            "http.access", method=request.method, path=request.path,
            status=response.status, bytes=response.body_length, ms=round(time * 1000, 1),
        )  # fmt: skip


def get_logger(**bound: object):
    """A logger that takes the logging configuration when it first logs (binding on
    the lazy proxy would freeze whatever was configured at import time)."""
    return structlog.get_logger("jisr", **bound)


AuditSink = Callable[[str, "dict | None", dict[str, Any]], None]


class Audit:
    """The audit trail: who did what to which consult or session, and when. Each
    event is a log line and goes to every sink (the record store's chained trail,
    ``signaling.records``), synchronously."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._bound_for = -1
        self._bound = None
        self._sinks: list[AuditSink] = []

    def add_sink(self, sink: AuditSink) -> None:
        self._sinks.append(sink)

    @property
    def _log(self):
        # Bound once per logging configuration, not per line (a lazy proxy rebinds
        # at every call), and never before it (it would keep the defaults).
        if self._bound_for != _configured:
            self._bound = structlog.get_logger("jisr.audit").bind(audit=True, node=self._node_id)
            self._bound_for = _configured
        return self._bound

    def record(self, event: str, actor: dict | None = None, **fields: object) -> None:
        self._log.info(event, actor=actor, **fields)
        for sink in self._sinks:
            sink(event, actor, fields)

    def recording_event(self, event: str, **fields: object) -> None:
        """The vault's audit callback (playback, export, deletion, purge)."""
        self._log.info(event, **fields)
        for sink in self._sinks:
            sink(event, None, fields)
