"""Sessions of a dead node are marked interrupted; a node whose heartbeat merely
lapsed takes its own back."""

from signaling.consults import ConsultService
from signaling.logs import Audit
from signaling.store import MemoryStore


async def test_sessions_of_a_lost_node_are_interrupted_and_a_returning_node_reclaims():
    store = MemoryStore()
    await store.start()
    await store.register_node("n_b", {}, ttl_s=60)
    for n, node in ((1, "n_a"), (2, "n_b")):
        await store.create_consult(
            {
                "id": f"c{n}",
                "state": "waiting",
                "urgency": "routine",
                "specialty": "cardiology",
                "facility": "h",
                "created_at": float(n),
            }  # fmt: skip
        )
        await store.accept_consult(
            f"c{n}", fields={},
            session={"id": f"s{n}", "state": "live", "node": node, "consult_id": f"c{n}"},
        )  # fmt: skip
    watcher = ConsultService(store, Audit("n_b"), node_id="n_b", specialties=["cardiology"])
    await watcher.watch_nodes()
    assert (await store.get_session("s1"))["state"] == "interrupted"  # n_a is not alive
    assert "interrupted_at" in await store.get_session("s1")
    assert (await store.get_session("s2"))["state"] == "live"

    # n_a comes back (its heartbeat only lapsed): it takes its session back itself.
    returning = ConsultService(store, Audit("n_a"), node_id="n_a", specialties=["cardiology"])
    await store.register_node("n_a", {}, ttl_s=60)
    await returning.watch_nodes()
    assert (await store.get_session("s1"))["state"] == "live"
    await watcher.watch_nodes()  # and nobody marks it again while n_a is alive
    assert (await store.get_session("s1"))["state"] == "live"
