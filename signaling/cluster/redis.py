"""Several nodes sharing a node map in Redis (through ``LiveState``): each node
refreshes its signed entry with a heartbeat; a node whose entry expired is dead,
and an entry whose signature does not hold (``trust``) is no node at all."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

from ..auth import Principal
from ..errors import ApiError
from ..logs import Audit, get_logger
from ..model import NodeInfo, Session, SessionChange, SessionState
from ..store import LiveState, Moved, NotFound, StoreUnavailable, TransitionRefused
from .base import HERE, Location, Lost, Remote, no_capacity
from .trust import Trust

log = get_logger()


class RedisCluster:
    def __init__(
        self,
        state: LiveState,
        audit: Audit,
        *,
        node_id: str,
        internal_url: str,
        hosted: Callable[[], int],
        capacity: int,
        heartbeat_s: float,
        clock: Callable[[], float],
        trust: Trust,
    ) -> None:
        """``hosted``: how many sessions this node hosts now (its load); ``trust``
        signs this node's entry and checks the others'."""
        self.trust = trust
        self.state = state
        self.audit = audit
        self.node_id = node_id
        self.internal_url = internal_url
        self.hosted = hosted
        self.capacity = capacity  # sessions this node may host
        self.heartbeat_s = heartbeat_s
        self.clock = clock

    async def place_session(self) -> str:
        """The live node hosting the fewest sessions (this one on a tie, or when the
        node map cannot be read); a node at its capacity is skipped. A node's load is
        the larger of the sessions its media hosts (its heartbeat says) and the live
        sessions placed on it (whose media may not be up yet)."""
        try:
            nodes = await self.live_nodes()
            placed = Counter(s.node for s in await self.state.list_sessions())
        except StoreUnavailable:
            nodes, placed = {}, Counter()
        capacity = {node: info.capacity for node, info in nodes.items()}
        load = {node: max(info.sessions, placed[node]) for node, info in nodes.items()}
        capacity[self.node_id] = self.capacity
        load[self.node_id] = max(self.hosted(), placed[self.node_id])
        free = [node for node in load if load[node] < capacity[node]]
        if not free:
            raise no_capacity()
        return min(free, key=lambda node: (load[node], node != self.node_id, node))

    async def heartbeat(self) -> None:
        info = NodeInfo(
            node=self.node_id, internal_url=self.internal_url, sessions=self.hosted(),
            capacity=self.capacity,
        )  # fmt: skip
        ttl_s = 3 * self.heartbeat_s
        await self.state.register_node(self.trust.sign(info, ttl_s), ttl_s=ttl_s)
        await self.sweep()

    async def live_nodes(self) -> dict[str, NodeInfo]:
        """The nodes of the node map whose entries are signed with the secret."""
        return self.trust.trusted(await self.state.node_entries())

    async def leave(self) -> None:
        await self.state.remove_node(self.node_id)

    async def sweep(self) -> None:
        """Sessions whose node is gone (its heartbeat key expired) are marked
        ``interrupted`` until a participant reconnects and a live node takes them
        over; this node's own sessions, marked so while its heartbeat could not reach
        the store, are live again. Every node runs this; the store's compare-and-set
        makes each marking happen once."""
        nodes = await self.live_nodes()
        for session in await self.state.list_sessions():
            mine, hosted = session.node == self.node_id, session.node in nodes
            if session.state == SessionState.LIVE and not hosted and not mine:
                change, fields = SessionChange.INTERRUPT, {"interrupted_at": self.clock()}
            elif session.state == SessionState.INTERRUPTED and mine:
                change, fields = SessionChange.RESUME, {}
            else:
                continue
            with contextlib.suppress(TransitionRefused, NotFound):
                await self.state.change_session(session.id, change, **fields)
                self.audit.record(
                    f"session.{change.target}",
                    None,
                    session_id=session.id,
                    session_node=session.node,  # "node" is the node writing the line
                )

    async def locate(self, session: Session) -> Location:
        if session.node == self.node_id:
            return HERE
        info = (await self.live_nodes()).get(session.node or "")
        if info is None or not info.internal_url:
            return Lost(session.node)
        return Remote(info.node, info.internal_url)

    async def take_over(self, session: Session, actor: Principal) -> Session:
        try:
            moved = await self.state.rehome_session(
                session.id, from_node=session.node or "", to_node=self.node_id
            )
        except Moved as exc:
            if exc.node != self.node_id:
                raise ApiError(
                    503, "node_unavailable", "the session is moving to another node; retry"
                ) from None
            # Another join on this node won the race: the move is already recorded.
            found = await self.state.get_session(session.id)
            return found if found is not None else session
        self.audit.record(
            "session.rehomed", actor.public(), session_id=session.id,
            from_node=session.node, to_node=self.node_id,
        )  # fmt: skip
        log.info("session.rehomed", session_id=session.id, from_node=session.node)
        return moved
