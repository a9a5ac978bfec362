"""One node, its state in process: every session lives here."""

from __future__ import annotations

from collections.abc import Callable

from ..auth import Principal
from ..model import NodeInfo, Session
from ..store import LiveState
from .base import HERE, Location, no_capacity


class LocalCluster:
    def __init__(
        self, node_id: str, state: LiveState, *, hosted: Callable[[], int], capacity: int
    ) -> None:
        self.node_id = node_id
        self.state = state
        self.hosted = hosted
        self.capacity = capacity  # sessions this node may host

    async def place_session(self) -> str:
        placed = len(await self.state.list_sessions())
        if max(self.hosted(), placed) >= self.capacity:
            raise no_capacity()
        return self.node_id

    async def heartbeat(self) -> None:
        return None

    async def leave(self) -> None:
        return None

    async def live_nodes(self) -> dict[str, NodeInfo]:
        return await self.state.list_nodes()

    async def locate(self, session: Session) -> Location:
        return HERE

    async def take_over(self, session: Session, actor: Principal) -> Session:
        return session  # nothing to take over from: there is no other node
