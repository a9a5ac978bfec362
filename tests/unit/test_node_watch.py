"""Sessions of a dead node are marked interrupted; a node whose heartbeat merely
lapsed takes its own back."""

import io
import json

from signaling.cluster import RedisCluster, Trust
from signaling.logs import Audit, configure_logging
from signaling.model import NodeInfo, to_json
from signaling.store import LiveState, MemoryStore
from tests.conftest import CLUSTER_SECRET


def cluster_node(store: MemoryStore, node_id: str) -> RedisCluster:
    """A node of the cluster, sharing ``store`` (as nodes share Redis)."""
    return RedisCluster(
        LiveState(store), Audit(node_id), node_id=node_id, internal_url="", hosted=lambda: 0,
        capacity=200, heartbeat_s=5, clock=lambda: 1000.0,
        trust=Trust(CLUSTER_SECRET, node_id),
    )  # fmt: skip


async def register(store: MemoryStore, node_id: str) -> None:
    """The node's signed entry, as its heartbeat writes it."""
    entry = Trust(CLUSTER_SECRET, node_id).sign(NodeInfo(node=node_id), ttl_s=60)
    await store.register_node(node_id, to_json(entry), ttl_s=60)


PEOPLE = {"referrer": {"sub": "dr-r", "name": "R"}, "specialist": {"sub": "dr-s", "name": "S"}}


async def test_sessions_of_a_lost_node_are_interrupted_and_a_returning_node_reclaims():
    store = MemoryStore()
    await store.start()
    await register(store, "n_b")
    for n, node in ((1, "n_a"), (2, "n_b")):
        await store.create_consult(
            {
                "id": f"c{n}",
                "state": "waiting",
                "urgency": "routine",
                "specialty": "cardiology",
                "facility": "h",
                "created_at": float(n),
                "summary": "s",
                "patient_ref": "P-1",
                "referrer": PEOPLE["referrer"],
            }  # fmt: skip
        )
        await store.accept_consult(
            f"c{n}", fields={},
            session={"id": f"s{n}", "state": "live", "node": node, "consult_id": f"c{n}",
                     "facility": "h", "specialty": "cardiology", "created_at": float(n),
                     **PEOPLE},
        )  # fmt: skip
    watcher = cluster_node(store, "n_b")
    lines = io.StringIO()
    configure_logging(stream=lines)
    try:
        await watcher.sweep()
    finally:
        configure_logging()
    assert (await store.get_session("s1"))["state"] == "interrupted"  # n_a is not alive
    # The audit line says which node wrote it and which node the session was on.
    [line] = [json.loads(t) for t in lines.getvalue().splitlines() if t.startswith("{")]
    assert (line["event"], line["node"], line["session_node"]) == (
        "session.interrupted",
        "n_b",
        "n_a",
    )
    assert "interrupted_at" in await store.get_session("s1")
    assert (await store.get_session("s2"))["state"] == "live"

    # n_a comes back (its heartbeat only lapsed): it takes its session back itself.
    returning = cluster_node(store, "n_a")
    await register(store, "n_a")
    await returning.sweep()
    assert (await store.get_session("s1"))["state"] == "live"
    await watcher.sweep()  # and nobody marks it again while n_a is alive
    assert (await store.get_session("s1"))["state"] == "live"
