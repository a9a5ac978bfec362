"""State backends: one Store protocol, in memory or in Redis."""

from __future__ import annotations

from .base import (
    CONSULT_OPEN_STATES,
    CONSULT_TERMINAL_STATES,
    SESSION_ACTIVE_STATES,
    URGENCY_RANK,
    Conflict,
    NotFound,
    Record,
    Store,
    StoreError,
    StoreUnavailable,
    Subscription,
    queue_key,
)
from .memory import MemoryStore
from .redis import RedisStore

__all__ = [
    "CONSULT_OPEN_STATES",
    "CONSULT_TERMINAL_STATES",
    "SESSION_ACTIVE_STATES",
    "URGENCY_RANK",
    "Conflict",
    "MemoryStore",
    "NotFound",
    "Record",
    "RedisStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Subscription",
    "make_store",
    "queue_key",
]


def make_store(redis_url: str | None) -> Store:
    """A RedisStore for ``redis_url``, or a MemoryStore when it is None."""
    if redis_url is None:
        return MemoryStore()
    return RedisStore(redis_url)
