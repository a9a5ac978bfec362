"""In-process Store: for tests and single-node deployments."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterable

from ..model import ConsultChange, SessionChange
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
    StoreError,
    StoreUnavailable,
    Subscription,
    decode,
    encode,
    queue_key,
)


def _copy(record: Record) -> Record:
    # A JSON round trip is a deep copy that also rejects what Redis could not store.
    return decode(encode(record))


def _cas(
    table: dict[str, Record],
    record_id: str,
    from_states: Iterable[str],
    to_state: str | None,
    fields: Record,
) -> Record:
    record = table.get(record_id)
    if record is None:
        raise NotFound(record_id)
    state = record["state"]
    if state not in set(from_states):
        raise Conflict(state)
    record.update(_copy(fields))
    record["state"] = state if to_state is None else to_state
    record["version"] = record.get("version", 0) + 1
    return _copy(record)


class MemoryStore:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        self._clock = clock
        self.retention_s = retention_s
        self._forget_at: dict[tuple[str, str], float] = {}  # (kind, id) of ended records
        self._lock = asyncio.Lock()
        self._consults: dict[str, Record] = {}
        self._sessions: dict[str, Record] = {}
        self._nodes: dict[str, tuple[float, Record]] = {}  # id -> (expires_at, info)
        self._presence: dict[str, tuple[float, Record]] = {}  # sub -> (expires_at, info)
        self._revoked: dict[str, tuple[float, Record]] = {}  # token id -> (expires_at, {})
        self._secrets: dict[str, dict[str, tuple[float, Record]]] = {}  # kind -> entries
        self._due: dict[str, float] = {}  # scheduled item -> due time
        # Weak, so a subscription its consumer dropped without closing stops filling.
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False

    def _forget_old(self) -> None:
        """Drop ended records past their retention (called with the lock held)."""
        now = self._clock()
        for (kind, record_id), at in list(self._forget_at.items()):
            if at <= now:
                del self._forget_at[(kind, record_id)]
                (self._consults if kind == "consult" else self._sessions).pop(record_id, None)

    def _retain(self, kind: str, record: Record) -> Record:
        ended = CONSULT_TERMINAL_STATES if kind == "consult" else SESSION_TERMINAL_STATES
        if record["state"] in ended:
            self._forget_at[(kind, record["id"])] = self._clock() + self.retention_s
        return record

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()

    async def ping(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")

    # consults -----------------------------------------------------------
    async def create_consult(self, consult: Record) -> None:
        record = _copy(consult)
        async with self._lock:
            existing = self._consults.get(record["id"])
            if existing is not None:
                raise Conflict(existing["state"])
            self._consults[record["id"]] = record

    async def get_consult(self, consult_id: str) -> Record | None:
        async with self._lock:
            self._forget_old()
            record = self._consults.get(consult_id)
            return None if record is None else _copy(record)

    async def list_consults(
        self,
        *,
        states: Iterable[str] | None = None,
        specialties: Iterable[str] | None = None,
        facility: str | None = None,
    ) -> list[Record]:
        wanted = CONSULT_OPEN_STATES if states is None else frozenset(states)
        specialty_set = None if specialties is None else frozenset(specialties)
        async with self._lock:
            self._forget_old()
            found = [
                _copy(c)
                for c in self._consults.values()
                if c["state"] in wanted
                and (specialty_set is None or c["specialty"] in specialty_set)
                and (facility is None or c["facility"] == facility)
            ]
        return sorted(found, key=lambda c: (queue_key(c), c["id"]))

    async def transition_consult(
        self,
        consult_id: str,
        *,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        async with self._lock:
            self._forget_old()
            return self._retain(
                "consult", _cas(self._consults, consult_id, from_states, to_state, fields)
            )

    async def accept_consult(self, consult_id: str, *, fields: Record, session: Record) -> Record:
        new_session = _copy(session)
        async with self._lock:
            consult = self._consults.get(consult_id)
            if consult is None:
                raise NotFound(consult_id)
            accept = ConsultChange.ACCEPT
            if consult["state"] not in accept.sources:
                raise Conflict(consult["state"])
            if new_session["id"] in self._sessions:
                raise StoreError(f"session {new_session['id']} already exists")
            self._sessions[new_session["id"]] = new_session
            return _cas(self._consults, consult_id, accept.sources, accept.target, fields)

    # sessions -----------------------------------------------------------
    async def get_session(self, session_id: str) -> Record | None:
        async with self._lock:
            self._forget_old()
            record = self._sessions.get(session_id)
            return None if record is None else _copy(record)

    async def transition_session(
        self,
        session_id: str,
        *,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        async with self._lock:
            self._forget_old()
            return self._retain(
                "session", _cas(self._sessions, session_id, from_states, to_state, fields)
            )

    async def rehome_session(self, session_id: str, *, from_node: str, to_node: str) -> Record:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise NotFound(session_id)
            rehome = SessionChange.REHOME
            if session["state"] not in rehome.sources:
                raise Conflict(session["state"])
            if session["node"] != from_node:
                raise Moved(session["node"])
            session["node"] = to_node
            session["state"] = str(rehome.target)
            return _copy(session)

    async def list_sessions(self, *, states: Iterable[str] | None = None) -> list[Record]:
        wanted = SESSION_ACTIVE_STATES if states is None else frozenset(states)
        async with self._lock:
            self._forget_old()
            found = [_copy(s) for s in self._sessions.values() if s["state"] in wanted]
        return sorted(found, key=lambda s: (s.get("created_at", 0), s["id"]))

    # nodes --------------------------------------------------------------
    async def register_node(self, node_id: str, info: Record, ttl_s: float) -> None:
        record = _copy(info)
        async with self._lock:
            self._nodes[node_id] = (self._clock() + ttl_s, record)

    async def remove_node(self, node_id: str) -> None:
        async with self._lock:
            self._nodes.pop(node_id, None)

    async def list_nodes(self) -> dict[str, Record]:
        async with self._lock:
            now = self._clock()
            for node_id in [n for n, (expires, _) in self._nodes.items() if expires <= now]:
                del self._nodes[node_id]
            return {node_id: _copy(info) for node_id, (_, info) in self._nodes.items()}

    # presence -----------------------------------------------------------
    async def set_presence(self, sub: str, info: Record, ttl_s: float) -> None:
        await self._set_expiring(self._presence, sub, info, ttl_s)

    async def list_presence(self) -> dict[str, Record]:
        return await self._list_expiring(self._presence)

    async def _set_expiring(
        self, table: dict[str, tuple[float, Record]], entry: str, info: Record, ttl_s: float
    ) -> None:
        """An entry of an expiring table (presence, revoked tokens)."""
        record = _copy(info)
        async with self._lock:
            table[entry] = (self._clock() + ttl_s, record)

    async def _list_expiring(self, table: dict[str, tuple[float, Record]]) -> dict[str, Record]:
        async with self._lock:
            now = self._clock()
            for entry in [e for e, (expires, _) in table.items() if expires <= now]:
                del table[entry]
            return {entry: _copy(info) for entry, (_, info) in table.items()}

    # revoked tokens -------------------------------------------------------
    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        await self._set_expiring(self._revoked, token_id, {}, ttl_s)

    async def list_revoked(self) -> list[str]:
        return sorted(await self._list_expiring(self._revoked))

    # short-lived secrets ------------------------------------------------
    async def put_secret(self, kind: str, entry: str, info: Record, ttl_s: float) -> None:
        await self._set_expiring(self._secrets.setdefault(kind, {}), entry, info, ttl_s)

    async def get_secret(self, kind: str, entry: str) -> Record | None:
        return (await self._list_expiring(self._secrets.get(kind, {}))).get(entry)

    async def take_secret(self, kind: str, entry: str) -> Record | None:
        async with self._lock:
            held = self._secrets.get(kind, {}).pop(entry, None)
        return None if held is None or held[0] <= self._clock() else _copy(held[1])

    async def drop_secret(self, kind: str, entry: str) -> None:
        async with self._lock:
            self._secrets.get(kind, {}).pop(entry, None)

    # deadlines ----------------------------------------------------------
    async def schedule(self, item: str, due: float) -> None:
        async with self._lock:
            self._due[item] = due

    async def unschedule(self, item: str) -> None:
        async with self._lock:
            self._due.pop(item, None)

    async def claim_due(self, now: float, limit: int = 100) -> list[str]:
        async with self._lock:
            due = sorted((when, item) for item, when in self._due.items() if when <= now)[:limit]
            for _, item in due:
                del self._due[item]
            return [item for _, item in due]

    # events -------------------------------------------------------------
    async def publish(self, event: Record) -> None:
        payload = encode(event)
        for subscription in list(self._subscriptions):
            subscription.put(decode(payload))

    async def subscribe(self) -> Subscription:
        async def on_close() -> None:
            self._subscriptions.discard(subscription)

        subscription = Subscription(on_close)
        if self._closed:
            await subscription.aclose()
        else:
            self._subscriptions.add(subscription)
        return subscription
