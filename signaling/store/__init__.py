"""State backends: one Store protocol, in memory or in Redis."""

from __future__ import annotations

from .base import (
    CONSULT_OPEN_STATES,
    CONSULT_TERMINAL_STATES,
    DEFAULT_RETENTION_S,
    SESSION_ACTIVE_STATES,
    SESSION_TERMINAL_STATES,
    Conflict,
    Moved,
    NotFound,
    Record,
    Store,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    Subscription,
    queue_key,
)
from .connect import RedisConfig
from .live import LiveState, TransitionRefused
from .memory import MemoryStore
from .redis import RedisStore

__all__ = [
    "CONSULT_OPEN_STATES",
    "CONSULT_TERMINAL_STATES",
    "DEFAULT_RETENTION_S",
    "SESSION_ACTIVE_STATES",
    "SESSION_TERMINAL_STATES",
    "Conflict",
    "LiveState",
    "MemoryStore",
    "Moved",
    "NotFound",
    "Record",
    "RedisConfig",
    "RedisStore",
    "Store",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "Subscription",
    "TransitionRefused",
    "make_store",
    "queue_key",
]


def make_store(redis: RedisConfig | str | None, retention_s: float = DEFAULT_RETENTION_S) -> Store:
    """A RedisStore for ``redis``, or a MemoryStore when it is None; ended consults
    and sessions are forgotten ``retention_s`` after they ended."""
    if redis is None:
        return MemoryStore(retention_s=retention_s)
    return RedisStore(redis, retention_s=retention_s)
