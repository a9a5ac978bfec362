"""``LiveState``: the live state of consults, sessions, nodes and presence as the
typed records of ``signaling.model``, over any Store backend.

This and the backends are the only places a consult or session is a dict: here
records are converted to and from their stored JSON form, and every change is one
named transition of the table in ``signaling.model``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import msgspec

from ..model import (
    CONSULT_OPEN_STATES,
    Consult,
    ConsultChange,
    Event,
    NodeInfo,
    PresenceInfo,
    Session,
    SessionChange,
    Transition,
    to_json,
)
from .base import Conflict, Moved, Store

T = TypeVar("T")

_event = msgspec.convert  # typed events out of the dicts the backends deliver


class TransitionRefused(Conflict):
    """A transition of the table was refused: the record is in another state."""

    def __init__(self, kind: str, transition: Transition, current_state: str) -> None:
        super().__init__(current_state)
        self.kind = kind  # "consult" | "session"
        self.transition = transition


def _consult(record: dict[str, Any]) -> Consult:
    return msgspec.convert(record, Consult)


def _session(record: dict[str, Any]) -> Session:
    return msgspec.convert(record, Session)


def _fields(changes: dict[str, Any]) -> dict[str, Any]:
    return msgspec.to_builtins(changes)


class LiveState:
    def __init__(self, store: Store) -> None:
        self.backend = store
        # Told every consult this node changes, as it is after the change (the
        # record store's outbox: ``signaling.records``); synchronous.
        self.consult_observers: list[Callable[[Consult], None]] = []

    def _changed(self, consult: Consult) -> Consult:
        for observer in self.consult_observers:
            observer(consult)
        return consult

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    async def ping(self) -> None:
        await self.backend.ping()

    # consults ------------------------------------------------------------------
    async def create_consult(self, consult: Consult) -> None:
        await self.backend.create_consult(to_json(consult))
        self._changed(consult)

    async def get_consult(self, consult_id: str) -> Consult | None:
        record = await self.backend.get_consult(consult_id)
        return None if record is None else _consult(record)

    async def list_consults(
        self,
        *,
        states: Iterable[str] = CONSULT_OPEN_STATES,
        specialties: Iterable[str] | None = None,
        facility: str | None = None,
    ) -> list[Consult]:
        """In queue order."""
        records = await self.backend.list_consults(
            states=states, specialties=specialties, facility=facility
        )
        return [_consult(r) for r in records]

    async def change_consult(
        self, consult_id: str, transition: Transition, **changes: Any
    ) -> Consult:
        """Apply ``transition`` (``model.ConsultChange``) with ``changes`` to the
        consult's fields; TransitionRefused if its state does not allow it."""
        try:
            record = await self.backend.transition_consult(
                consult_id, from_states=transition.sources, to_state=transition.target,
                fields=_fields(changes),
            )  # fmt: skip
        except Conflict as exc:
            raise TransitionRefused("consult", transition, exc.current_state) from None
        return self._changed(_consult(record))

    async def accept_consult(self, consult_id: str, session: Session, **changes: Any) -> Consult:
        """``ConsultChange.ACCEPT`` and the session's creation, atomically."""
        try:
            record = await self.backend.accept_consult(
                consult_id, fields=_fields(changes), session=to_json(session)
            )
        except Conflict as exc:
            raise TransitionRefused("consult", ConsultChange.ACCEPT, exc.current_state) from None
        return self._changed(_consult(record))

    # sessions ------------------------------------------------------------------
    async def get_session(self, session_id: str) -> Session | None:
        record = await self.backend.get_session(session_id)
        return None if record is None else _session(record)

    async def list_sessions(self, *, states: Iterable[str] | None = None) -> list[Session]:
        return [_session(r) for r in await self.backend.list_sessions(states=states)]

    async def change_session(
        self, session_id: str, transition: Transition, **changes: Any
    ) -> Session:
        """As ``change_consult``, for ``model.SessionChange``."""
        try:
            record = await self.backend.transition_session(
                session_id, from_states=transition.sources, to_state=transition.target,
                fields=_fields(changes),
            )  # fmt: skip
        except Conflict as exc:
            raise TransitionRefused("session", transition, exc.current_state) from None
        return _session(record)

    async def rehome_session(self, session_id: str, *, from_node: str, to_node: str) -> Session:
        """``SessionChange.REHOME``; Moved if another node took it first,
        TransitionRefused if it ended meanwhile."""
        try:
            record = await self.backend.rehome_session(
                session_id, from_node=from_node, to_node=to_node
            )
        except Moved:
            raise
        except Conflict as exc:
            raise TransitionRefused("session", SessionChange.REHOME, exc.current_state) from None
        return _session(record)

    # nodes and presence ------------------------------------------------------------
    async def register_node(self, info: NodeInfo, ttl_s: float) -> None:
        await self.backend.register_node(info.node, to_json(info), ttl_s)

    async def remove_node(self, node_id: str) -> None:
        await self.backend.remove_node(node_id)

    async def list_nodes(self) -> dict[str, NodeInfo]:
        """The node map as it is stored (entries not even shaped as one are left
        out); only the cluster knows which entries to trust."""
        nodes = {}
        for node, info in (await self.backend.list_nodes()).items():
            if not isinstance(info, dict):
                continue
            try:
                nodes[node] = msgspec.convert({"node": node, **info}, NodeInfo)
            except msgspec.ValidationError:
                continue
        return nodes

    async def node_entries(self) -> dict[str, dict[str, Any]]:
        """The node map's entries as stored, for the cluster to check."""
        return await self.backend.list_nodes()

    async def set_presence(self, sub: str, info: PresenceInfo, ttl_s: float) -> None:
        await self.backend.set_presence(sub, to_json(info), ttl_s)

    async def list_presence(self) -> dict[str, PresenceInfo]:
        """Who is on call. An entry not shaped as one (not written by a node) is left
        out, so one bad entry does not hide everyone else's presence."""
        presence = {}
        for sub, info in (await self.backend.list_presence()).items():
            try:
                presence[sub] = msgspec.convert(info, PresenceInfo)
            except msgspec.ValidationError:
                continue
        return presence

    # revoked tokens -----------------------------------------------------------------
    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        await self.backend.revoke_token(token_id, ttl_s)

    async def list_revoked(self) -> list[str]:
        return await self.backend.list_revoked()

    # short-lived secrets (sign-ins under way, web sessions) ------------------------
    async def put_secret(self, kind: str, entry: str, info: Any, ttl_s: float) -> None:
        await self.backend.put_secret(kind, entry, to_json(info), ttl_s)

    async def get_secret(self, kind: str, entry: str, of: type[T]) -> T | None:
        found = await self.backend.get_secret(kind, entry)
        return None if found is None else msgspec.convert(found, of)

    async def take_secret(self, kind: str, entry: str, of: type[T]) -> T | None:
        found = await self.backend.take_secret(kind, entry)
        return None if found is None else msgspec.convert(found, of)

    async def drop_secret(self, kind: str, entry: str) -> None:
        await self.backend.drop_secret(kind, entry)

    # deadlines -------------------------------------------------------------------
    async def schedule(self, item: str, due: float) -> None:
        await self.backend.schedule(item, due)

    async def unschedule(self, item: str) -> None:
        await self.backend.unschedule(item)

    async def claim_due(self, now: float, limit: int = 100) -> list[str]:
        return await self.backend.claim_due(now, limit)

    # events ----------------------------------------------------------------------
    async def publish(self, event: Event) -> None:
        await self.backend.publish(to_json(event))

    async def events(self) -> AsyncIterator[Event]:
        """Every event published from now on, by any node, typed; ends when the
        store closes; StoreUnavailable if the backend connection is lost. An event
        this node cannot read (a newer node's) is skipped."""
        async with await self.backend.subscribe() as subscription:
            async for raw in subscription:
                try:
                    yield _event(raw, Event)
                except msgspec.ValidationError:
                    continue
