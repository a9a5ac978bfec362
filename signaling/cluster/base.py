"""The cluster interface: what the rest of the server may ask about nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..auth import Principal
from ..errors import ApiError
from ..model import NodeInfo, Session


def no_capacity() -> ApiError:
    return ApiError(
        503, "no_capacity", "every node hosts its maximum of sessions; try again shortly"
    )


@dataclass(frozen=True)
class Here:
    """The session's media lives on this node."""


@dataclass(frozen=True)
class Remote:
    """Another live node hosts the session: signaling is carried there."""

    node: str
    internal_url: str


@dataclass(frozen=True)
class Lost:
    """The session's node is gone: a node a participant reaches takes it over."""

    node: str | None


Location = Here | Remote | Lost
HERE = Here()


class Cluster(Protocol):
    node_id: str

    async def place_session(self) -> str:
        """The node that will host a new session's media."""
        ...

    async def heartbeat(self) -> None:
        """Say this node is alive, and mark the sessions of dead nodes."""
        ...

    async def leave(self) -> None:
        """This node is shutting down."""
        ...

    async def live_nodes(self) -> dict[str, NodeInfo]:
        """The nodes alive (and, with several, proven by their signature)."""
        ...

    async def locate(self, session: Session) -> Location: ...

    async def take_over(self, session: Session, actor: Principal) -> Session:
        """Move a session of a lost node here; exactly one node wins, and only the
        winner records the move. Raises ApiError ``node_unavailable`` if another
        node won, TransitionRefused if the session ended meanwhile."""
        ...
