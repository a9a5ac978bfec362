"""structlog JSON logs and the audit trail.

Audit events are ordinary log lines with ``audit=true`` and a dotted event name,
so one pipeline ships both. Nothing here ever logs a token, key or SDP body: the
redaction processor drops such fields even if a caller passes them by mistake.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

SECRET_FIELDS = frozenset({"token", "sdp", "secret", "key", "password", "authorization", "jwt"})


def _redact(_, __, event_dict: dict) -> dict:
    for name in list(event_dict):
        if name.lower() in SECRET_FIELDS:
            event_dict[name] = "[redacted]"
    return event_dict


def _dumps(event_dict: dict, **options) -> str:
    return orjson.dumps(event_dict, **options).decode()


def configure_logging(level: str = "info", stream=None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: object):
    return structlog.get_logger("jisr").bind(**bound)


class Audit:
    """The audit trail: who did what to which consult or session, and when."""

    def __init__(self, node_id: str) -> None:
        self._log = structlog.get_logger("jisr.audit").bind(audit=True, node=node_id)

    def record(self, event: str, actor: dict | None = None, **fields: object) -> None:
        self._log.info(event, actor=actor, **fields)

    def recording_event(self, event: str, **fields: object) -> None:
        """The vault's audit callback (playback, export, deletion, purge)."""
        self._log.info(event, **fields)
