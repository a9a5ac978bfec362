"""Where sessions live: one node (``LocalCluster``) or several sharing a node map in
Redis (``RedisCluster``), chosen at start. Placement of new sessions, the heartbeat,
the sweep that marks a dead node's sessions interrupted, locating a session's node,
taking a session over from a dead node, and carrying signaling to the hosting node
all live here; the rest of the server asks the ``Cluster`` interface."""

from __future__ import annotations

from .base import Cluster, Here, Location, Lost, Remote
from .local import LocalCluster
from .proxy import FORWARDED, Upstream, ask_host, open_upstream
from .redis import RedisCluster
from .trust import HEADER, ClusterAuthError, Trust, cluster_refused, open_trust, server_ssl

__all__ = [
    "FORWARDED",
    "HEADER",
    "Cluster",
    "ClusterAuthError",
    "Here",
    "LocalCluster",
    "Location",
    "Lost",
    "RedisCluster",
    "Remote",
    "Trust",
    "Upstream",
    "ask_host",
    "cluster_refused",
    "open_trust",
    "open_upstream",
    "server_ssl",
]
