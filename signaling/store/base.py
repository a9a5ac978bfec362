"""The one Store protocol every state backend implements.

This is the serialisation layer: backends keep records as plain JSON-able dicts,
and ``signaling.store.live.LiveState`` turns them into the typed records of
``signaling.model`` for everyone else. The store never reads a clock and never
mints ids: callers pass ``created_at`` and ids in, so tests can inject time.
Every state change is a compare-and-set on ``state`` and is atomic across any
number of nodes sharing the backend; the fixed ones (accept, re-homing) follow the
transition table of ``signaling.model`` in both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, Self

import orjson

from ..model import (
    CONSULT_OPEN_STATES,
    CONSULT_TERMINAL_STATES,
    SESSION_ACTIVE_STATES,
    SESSION_TERMINAL_STATES,
    Urgency,
)

# Consult states: terminal ones leave the open index. Sessions listed by default
# (SESSION_ACTIVE_STATES) are the ones a node may have to host or recover.
__all__ = [
    "CONSULT_OPEN_STATES",
    "CONSULT_TERMINAL_STATES",
    "SESSION_ACTIVE_STATES",
    "SESSION_TERMINAL_STATES",
]
# Ended consults and sessions are forgotten after this long (JISR_STATE_RETENTION_DAYS).
DEFAULT_RETENTION_S = 30 * 86400.0

Record = dict[str, Any]


class StoreError(Exception):
    """Base class of store failures."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached (Redis down, timeout)."""

    code = "store_unavailable"


class StoreRefused(StoreUnavailable):
    """The backend answers but refuses this node: wrong credentials, or a user not
    allowed what the store needs (a configuration error)."""

    code = "store_auth_failed"


class NotFound(StoreError):
    """No record with that id."""


class Conflict(StoreError):
    """The record is not in a state that allows the change."""

    def __init__(self, current_state: str) -> None:
        super().__init__(f"record is {current_state}")
        self.current_state = current_state


class Moved(Conflict):
    """A re-homing lost: another node took the session first (``current_state`` and
    ``node`` name that node)."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


def encode(value: Any) -> str:
    """A record's (or a field's) stored form: JSON, which both stores keep, so the
    in-process store refuses what Redis could not hold."""
    return orjson.dumps(value).decode()


decode = orjson.loads


def queue_key(consult: Record) -> tuple[int, float]:
    """Queue order (of a stored record): critical, then urgent, then routine; oldest
    first within each."""
    return (Urgency(consult["urgency"]).rank, consult["created_at"])


_END = object()


class Subscription:
    """The events of one ``Store.subscribe()`` call, in publish order per publisher.

    Iteration ends when the store closes or ``aclose()`` is called. It raises
    StoreUnavailable if the backend connection is lost: events may have been missed,
    so subscribe again and re-read state. Always close it when done::

        async with await store.subscribe() as events:
            async for event in events:
                ...
    """

    def __init__(self, on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._on_close = on_close
        self._closed = False

    def put(self, event: Record) -> None:
        self._queue.put_nowait(event)

    def fail(self, error: StoreError) -> None:
        """End the iteration with ``error`` (after the events already queued)."""
        self._queue.put_nowait(error)
        self._queue.put_nowait(_END)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            await self._on_close()
        self._queue.put_nowait(_END)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # every later call ends too
            raise StopAsyncIteration
        if isinstance(item, StoreError):
            raise item
        return item

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Store(Protocol):
    async def start(self) -> None:
        """Connect; raises StoreUnavailable if the backend is unreachable."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raises StoreUnavailable if the backend is unreachable."""

    # consults -----------------------------------------------------------
    async def create_consult(self, consult: Record) -> None:
        """Store a new consult (``id``, ``state``, ``urgency``, ``specialty``,
        ``facility``, ``created_at`` are always present). Raises Conflict with the
        existing record's state if the id is taken."""

    async def get_consult(self, consult_id: str) -> Record | None: ...

    async def list_consults(
        self,
        *,
        states: Iterable[str] | None = None,
        specialties: Iterable[str] | None = None,
        facility: str | None = None,
    ) -> list[Record]:
        """Consults matching every given filter, in queue order (``queue_key``).
        With no ``states`` given, only open consults are listed."""

    async def transition_consult(
        self,
        consult_id: str,
        *,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        """Atomically: if the consult's state is in ``from_states``, set ``state`` to
        ``to_state`` (None: leave it as it is), merge ``fields`` and add one to its
        ``version`` (0 when created); return the new record. Raises NotFound, or
        Conflict with the current state."""

    async def accept_consult(self, consult_id: str, *, fields: Record, session: Record) -> Record:
        """Atomically: ``ConsultChange.ACCEPT`` (``waiting`` → ``accepted``) with
        ``fields`` merged and one added to its ``version``, and create
        ``session`` (which has an ``id``). Exactly one of any number of concurrent
        callers wins; the others get Conflict. Returns the new consult.
        Raises StoreError (and changes nothing) if the session id is taken."""

    # sessions -----------------------------------------------------------
    async def get_session(self, session_id: str) -> Record | None: ...

    async def transition_session(
        self,
        session_id: str,
        *,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        """Compare-and-set on a session, as ``transition_consult``."""

    async def rehome_session(self, session_id: str, *, from_node: str, to_node: str) -> Record:
        """Atomically move a session whose node died (``SessionChange.REHOME``): if its
        ``node`` is still ``from_node``, set it to ``to_node`` (state ``live``). Raises
        NotFound, or Conflict with the node that already took it (or, for a session
        that ended meanwhile, with its state), so exactly one node wins."""

    async def list_sessions(self, *, states: Iterable[str] | None = None) -> list[Record]:
        """Sessions in the given states (default: ``SESSION_ACTIVE_STATES``), oldest
        first by ``created_at`` (0 when absent), then id."""

    # nodes --------------------------------------------------------------
    async def register_node(self, node_id: str, info: Record, ttl_s: float) -> None:
        """Create or refresh a node's entry; it disappears ``ttl_s`` after the last
        refresh."""

    async def remove_node(self, node_id: str) -> None: ...

    async def list_nodes(self) -> dict[str, Record]: ...

    # presence -----------------------------------------------------------
    async def set_presence(self, sub: str, info: Record, ttl_s: float) -> None:
        """A user's on-call state; it disappears ``ttl_s`` after the last refresh
        (the page that kept it alive is gone)."""

    async def list_presence(self) -> dict[str, Record]: ...

    # revoked tokens -------------------------------------------------------
    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        """Remember a signed-out token until it would have expired anyway."""

    async def list_revoked(self) -> list[str]: ...

    # short-lived secrets: sign-ins under way, web sessions ----------------
    async def put_secret(self, kind: str, entry: str, info: Record, ttl_s: float) -> None:
        """Keep ``info`` under (kind, entry) for ``ttl_s`` (replacing any)."""

    async def get_secret(self, kind: str, entry: str) -> Record | None: ...

    async def take_secret(self, kind: str, entry: str) -> Record | None:
        """Read and remove at once: exactly one caller gets it."""

    async def drop_secret(self, kind: str, entry: str) -> None: ...

    # deadlines ----------------------------------------------------------
    async def schedule(self, item: str, due: float) -> None:
        """Remember that ``item`` falls due at ``due`` (replacing an earlier due
        time). Deadlines live here, not in a process's timers, so they survive
        restarts and any node can act on them."""

    async def unschedule(self, item: str) -> None: ...

    async def claim_due(self, now: float, limit: int = 100) -> list[str]:
        """Atomically take the items due at ``now``: each is handed to exactly one
        caller, on whichever node asks first."""

    # events -------------------------------------------------------------
    async def publish(self, event: Record) -> None:
        """Deliver ``event`` to every subscriber on every node."""

    async def subscribe(self) -> Subscription:
        """Every event published after this call returns, by any node, in publish
        order per publisher: the subscription is live on the backend before it is
        returned. Iteration ends when the store closes; close it when done."""
