"""One contract, every Store backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from signaling.store import (
    Conflict,
    MemoryStore,
    NotFound,
    Record,
    RedisStore,
    Store,
    StoreError,
    StoreUnavailable,
    make_store,
)
from tests.redis_server import RedisServer, free_port

WAIT = 3.0  # seconds: upper bound for anything that should happen "at once"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def open_store(
    request: pytest.FixtureRequest, backend: str, clock: FakeClock
) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Starts a store of the test's backend; for redis each call is a new client of
    the same server, like another node."""
    stores: list[Store] = []
    url = request.getfixturevalue("redis_url") if backend == "redis" else None

    async def open_one() -> Store:
        store: Store = MemoryStore(clock=clock) if url is None else RedisStore(url)
        await store.start()
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        await store.close()


@pytest.fixture
async def store(open_store: Callable[[], Awaitable[Store]]) -> Store:
    return await open_store()


def consult(
    consult_id: str,
    urgency: str = "routine",
    created_at: float = 100.0,
    *,
    state: str = "waiting",
    specialty: str = "cardiology",
    facility: str = "hospital-a",
    **extra: Any,
) -> Record:
    return {
        "id": consult_id,
        "state": state,
        "urgency": urgency,
        "specialty": specialty,
        "facility": facility,
        "created_at": created_at,
        **extra,
    }


def session(session_id: str, created_at: float = 200.0, state: str = "live") -> Record:
    return {"id": session_id, "state": state, "created_at": created_at, "node": "node-1"}


def ids(records: list[Record]) -> list[str]:
    return [r["id"] for r in records]


async def poll(fetch: Callable[[], Awaitable[Any]], until: Callable[[Any], bool]) -> Any:
    """Polls ``fetch`` until ``until(value)``; fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        value = await fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {WAIT}s; last value {value!r}")
        await asyncio.sleep(0.02)  # polling interval


# consults --------------------------------------------------------------------


async def test_create_get_round_trip(store: Store) -> None:
    record = consult("c1", "urgent", notes={"history": ["a", "b"]})
    await store.create_consult(record)
    assert await store.get_consult("c1") == record
    assert await store.get_consult("missing") is None


async def test_records_are_copies(store: Store) -> None:
    record = consult("c1", notes={"tags": ["x"]})
    await store.create_consult(record)
    record["notes"]["tags"].append("changed-after-create")
    record["state"] = "live"

    got = await store.get_consult("c1")
    assert got is not None
    assert got["notes"] == {"tags": ["x"]} and got["state"] == "waiting"
    got["notes"]["tags"].append("changed-after-get")
    listed = await store.list_consults()
    listed[0]["notes"]["tags"].append("changed-after-list")
    fields = {"extra": {"k": [1]}}
    moved = await store.transition_consult(
        "c1", from_states=["waiting"], to_state="waiting", fields=fields
    )
    fields["extra"]["k"].append(2)
    moved["extra"]["k"].append(3)

    final = await store.get_consult("c1")
    assert final is not None
    assert final["notes"] == {"tags": ["x"]}
    assert final["extra"] == {"k": [1]}


async def test_json_values_survive_every_write(store: Store) -> None:
    tricky = {
        "empty_list": [],
        "empty_map": {},
        "precise": 1712345678.123456,
        "big": 2**53 + 1,
        "text": 'é \u2028 / "q"',
        "nothing": None,
        "flag": False,
    }
    await store.create_consult(consult("c1", created_at=1712345678.987654, **tricky))
    moved = await store.transition_consult(
        "c1", from_states=["waiting"], to_state="waiting", fields={"more": []}
    )
    accepted = await store.accept_consult(
        "c1", fields={"specialist": "dr-k"}, session={**session("s1"), **tricky}
    )
    for record in (moved, accepted, await store.get_consult("c1")):
        assert record is not None
        assert {k: record[k] for k in tricky} == tricky
        assert record["created_at"] == 1712345678.987654
    assert moved["more"] == []
    stored_session = await store.get_session("s1")
    assert stored_session is not None
    assert {k: stored_session[k] for k in tricky} == tricky


async def test_create_existing_id_conflicts(store: Store) -> None:
    await store.create_consult(consult("c1"))
    with pytest.raises(Conflict) as err:
        await store.create_consult(consult("c1", "critical"))
    assert err.value.current_state == "waiting"
    got = await store.get_consult("c1")
    assert got is not None and got["urgency"] == "routine"


async def test_list_is_in_queue_order(store: Store) -> None:
    for record in [
        consult("routine-old", "routine", 10.0),
        consult("critical-new", "critical", 50.0),
        consult("urgent-mid", "urgent", 30.0),
        consult("routine-new", "routine", 60.0),
        consult("critical-old", "critical", 20.0),
        consult("urgent-old", "urgent", 5.0),
        consult("critical-tie-b", "critical", 20.0),
    ]:
        await store.create_consult(record)
    assert ids(await store.list_consults()) == [
        "critical-old",
        "critical-tie-b",  # equal created_at: by id
        "critical-new",
        "urgent-old",
        "urgent-mid",
        "routine-old",
        "routine-new",
    ]


async def test_list_filters(store: Store) -> None:
    for record in [
        consult("waiting-a", created_at=1, facility="hospital-a"),
        consult("accepted-a", created_at=2, state="accepted"),
        consult("live-b", created_at=3, state="live", facility="hospital-b"),
        consult("neuro-b", created_at=4, specialty="neurology", facility="hospital-b"),
        consult("ended-a", created_at=5, state="ended"),
        consult("cancelled-b", created_at=6, state="cancelled", facility="hospital-b"),
        consult("expired-a", created_at=7, state="expired", specialty="neurology"),
    ]:
        await store.create_consult(record)

    assert ids(await store.list_consults()) == ["waiting-a", "accepted-a", "live-b", "neuro-b"]
    assert ids(await store.list_consults(states=["waiting"])) == ["waiting-a", "neuro-b"]
    assert ids(await store.list_consults(states=["ended", "expired", "live"])) == [
        "live-b",
        "ended-a",
        "expired-a",
    ]
    assert ids(await store.list_consults(specialties=["neurology"])) == ["neuro-b"]
    assert ids(await store.list_consults(specialties=[])) == []
    assert ids(await store.list_consults(facility="hospital-b")) == ["live-b", "neuro-b"]
    assert ids(
        await store.list_consults(states=["cancelled", "waiting"], facility="hospital-b")
    ) == ["neuro-b", "cancelled-b"]
    assert ids(
        await store.list_consults(
            states=["expired", "ended"], specialties=["neurology"], facility="hospital-a"
        )
    ) == ["expired-a"]
    assert await store.list_consults(facility="nowhere") == []


async def test_transition_compare_and_set(store: Store) -> None:
    await store.create_consult(consult("c1"))
    moved = await store.transition_consult(
        "c1", from_states=["accepted", "waiting"], to_state="cancelled", fields={"by": "dr-a"}
    )
    # every change adds one to the record's version (the record store's order)
    assert moved == {**consult("c1", state="cancelled"), "by": "dr-a", "version": 1}
    assert await store.get_consult("c1") == moved

    with pytest.raises(Conflict) as err:
        await store.transition_consult(
            "c1", from_states=["waiting"], to_state="accepted", fields={"by": "dr-b"}
        )
    assert err.value.current_state == "cancelled"
    assert await store.get_consult("c1") == moved  # a refused change changes nothing

    with pytest.raises(NotFound):
        await store.transition_consult("nope", from_states=["waiting"], to_state="ended", fields={})


async def test_transition_state_comes_from_to_state(store: Store) -> None:
    await store.create_consult(consult("c1"))
    moved = await store.transition_consult(
        "c1", from_states=["waiting"], to_state="expired", fields={"state": "live"}
    )
    assert moved["state"] == "expired"


async def test_terminal_consult_leaves_open_listing(store: Store) -> None:
    await store.create_consult(consult("c1", created_at=1))
    await store.create_consult(consult("c2", created_at=2))
    await store.transition_consult("c1", from_states=["waiting"], to_state="ended", fields={})
    assert ids(await store.list_consults()) == ["c2"]
    assert ids(await store.list_consults(states=["ended"])) == ["c1"]
    assert ids(await store.list_consults(facility="hospital-a")) == ["c2"]


async def test_escalation_moves_consult_up_the_queue(store: Store) -> None:
    await store.create_consult(consult("old-routine", "routine", 1))
    await store.create_consult(consult("urgent", "urgent", 5))
    await store.transition_consult(
        "old-routine", from_states=["waiting"], to_state="waiting", fields={"urgency": "critical"}
    )
    assert ids(await store.list_consults()) == ["old-routine", "urgent"]


# accept ----------------------------------------------------------------------


async def test_accept_creates_session_once(store: Store) -> None:
    await store.create_consult(consult("c1"))
    accepted = await store.accept_consult(
        "c1", fields={"specialist": "dr-k", "session_id": "s1"}, session=session("s1")
    )
    assert accepted == {
        **consult("c1", state="accepted"), "specialist": "dr-k", "session_id": "s1", "version": 1
    }
    assert await store.get_consult("c1") == accepted
    assert await store.get_session("s1") == session("s1")

    with pytest.raises(Conflict) as err:
        await store.accept_consult("c1", fields={"specialist": "dr-x"}, session=session("s2"))
    assert err.value.current_state == "accepted"
    assert await store.get_session("s2") is None
    with pytest.raises(NotFound):
        await store.accept_consult("nope", fields={}, session=session("s3"))
    assert await store.get_session("s3") is None


async def test_ended_consults_and_sessions_are_forgotten_after_retention(
    request: pytest.FixtureRequest, backend: str, clock: FakeClock
) -> None:
    retention = 0.3
    if backend == "memory":
        store: Store = MemoryStore(clock=clock, retention_s=retention)
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), retention_s=retention)
    await store.start()
    try:
        for n in (1, 2):
            await store.create_consult(consult(f"c{n}", created_at=100.0 + n))
            await store.accept_consult(f"c{n}", fields={}, session=session(f"s{n}"))
        await store.transition_session("s1", from_states=["live"], to_state="ended", fields={})
        await store.transition_consult(
            "c1", from_states=["accepted"], to_state="ended", fields={"report": {"ok": True}}
        )
        assert (await store.get_consult("c1"))["report"] == {"ok": True}  # kept for now
        clock.advance(retention + 0.1)  # the memory store's clock; Redis keeps real time

        def gone(found: tuple) -> bool:
            consult_one, session_one, listed = found
            return consult_one is None and session_one is None and ids(listed) == ["c2"]

        async def fetch() -> tuple:
            listed = await store.list_consults(states=["accepted", "live", "ended"])
            return await store.get_consult("c1"), await store.get_session("s1"), listed

        await poll(fetch, gone)
        # What has not ended stays, however old.
        assert (await store.get_session("s2"))["state"] == "live"
        assert ids(await store.list_sessions()) == ["s2"]
    finally:
        await store.close()


async def test_accept_with_taken_session_id_changes_nothing(store: Store) -> None:
    await store.create_consult(consult("c1"))
    await store.create_consult(consult("c2"))
    await store.accept_consult("c1", fields={}, session=session("s1"))
    with pytest.raises(StoreError):
        await store.accept_consult("c2", fields={}, session=session("s1", created_at=999))
    c2 = await store.get_consult("c2")
    assert c2 is not None and c2["state"] == "waiting"
    assert await store.get_session("s1") == session("s1")


async def _race(stores: list[Store], attempts: int) -> list[Record | BaseException]:
    calls = [
        stores[i % len(stores)].accept_consult(
            "c1", fields={"specialist": f"dr-{i}"}, session=session(f"s{i}")
        )
        for i in range(attempts)
    ]
    return await asyncio.gather(*calls, return_exceptions=True)


async def _assert_one_winner(store: Store, results: list[Record | BaseException]) -> None:
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == 1 and len(losers) == len(results) - 1, results
    assert all(c.current_state == "accepted" for c in losers)
    winner = winners[0]["specialist"]  # "dr-N" won with session "sN"
    sessions = await store.list_sessions()
    assert ids(sessions) == [f"s{winner.removeprefix('dr-')}"]
    assert await store.get_consult("c1") == winners[0]


async def test_concurrent_accepts_have_one_winner(store: Store) -> None:
    await store.create_consult(consult("c1"))
    await _assert_one_winner(store, await _race([store], 50))


async def test_concurrent_accepts_across_two_redis_stores(redis_url: str) -> None:
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    await first.start()
    await second.start()
    try:
        await first.create_consult(consult("c1"))
        await _assert_one_winner(second, await _race([first, second], 50))
    finally:
        await first.close()
        await second.close()


# sessions --------------------------------------------------------------------


async def test_sessions_get_transition_list(store: Store) -> None:
    for consult_id, sess in [
        ("c1", session("s-new", created_at=30)),
        ("c2", session("s-old", created_at=10)),
        ("c3", session("s-mid", created_at=20, state="connecting")),
    ]:
        await store.create_consult(consult(consult_id))
        await store.accept_consult(consult_id, fields={}, session=sess)

    assert await store.get_session("missing") is None
    assert ids(await store.list_sessions()) == ["s-old", "s-new"]
    interrupted = await store.transition_session(
        "s-new", from_states=["live"], to_state="interrupted", fields={"node": None}
    )
    assert interrupted == {
        **session("s-new", created_at=30, state="interrupted"), "node": None, "version": 1
    }
    assert await store.get_session("s-new") == interrupted
    await store.transition_session("s-old", from_states=["live"], to_state="ended", fields={})

    assert ids(await store.list_sessions()) == ["s-new"]
    assert ids(await store.list_sessions(states=["ended", "connecting"])) == ["s-old", "s-mid"]
    with pytest.raises(Conflict) as err:
        await store.transition_session("s-old", from_states=["live"], to_state="ended", fields={})
    assert err.value.current_state == "ended"
    with pytest.raises(NotFound):
        await store.transition_session("nope", from_states=["live"], to_state="ended", fields={})


# nodes -----------------------------------------------------------------------


async def test_nodes_register_list_remove(store: Store) -> None:
    assert await store.list_nodes() == {}
    await store.register_node("n1", {"url": "http://n1", "load": [1]}, ttl_s=30)
    await store.register_node("n2", {"url": "http://n2"}, ttl_s=30)
    await store.register_node("n1", {"url": "http://n1", "load": [2]}, ttl_s=30)
    assert await store.list_nodes() == {
        "n1": {"url": "http://n1", "load": [2]},
        "n2": {"url": "http://n2"},
    }
    await store.remove_node("n1")
    await store.remove_node("never-registered")
    assert await store.list_nodes() == {"n2": {"url": "http://n2"}}


async def test_nodes_expire_unless_refreshed(
    store: Store, backend: str, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    await store.register_node("dies", {"n": 1}, ttl_s=0.2)
    await store.register_node("refreshed", {"n": 2}, ttl_s=0.2)
    await store.register_node("lasting", {"n": 3}, ttl_s=30)
    assert set(await store.list_nodes()) == {"dies", "refreshed", "lasting"}
    await store.register_node("refreshed", {"n": 2}, ttl_s=30)

    if backend == "memory":
        clock.advance(0.19)
        assert set(await store.list_nodes()) == {"dies", "refreshed", "lasting"}
        clock.advance(0.02)
        nodes = await store.list_nodes()
    else:
        nodes = await poll(store.list_nodes, lambda nodes: "dies" not in nodes)
    assert nodes == {"refreshed": {"n": 2}, "lasting": {"n": 3}}

    if backend == "redis":  # the expired id was pruned from the id set too
        raw = aioredis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        try:
            assert await raw.smembers("jisr:nodes") == {"refreshed", "lasting"}
        finally:
            await raw.aclose()


# events ----------------------------------------------------------------------


async def next_event(events: AsyncIterator[Record]) -> Record:
    return await asyncio.wait_for(anext(events), WAIT)


async def test_publish_reaches_every_subscriber_in_order(
    open_store: Callable[[], Awaitable[Store]], backend: str
) -> None:
    subscriber = await open_store()
    # memory: within one store; redis: another node publishes
    publisher = subscriber if backend == "memory" else await open_store()
    first = await subscriber.subscribe()
    second = await subscriber.subscribe()
    # published right after subscribe() returned, before anyone iterates
    for n in range(3):
        await publisher.publish({"type": "tick", "n": n, "data": {"empty": []}})
    for events in (first, second):
        got = [await next_event(events) for _ in range(3)]
        assert got == [{"type": "tick", "n": n, "data": {"empty": []}} for n in range(3)]
    await first.aclose()
    await publisher.publish({"type": "after-close"})
    assert await next_event(second) == {"type": "after-close"}
    with pytest.raises(StopAsyncIteration):
        await next_event(first)
    await second.aclose()


async def test_published_event_is_a_copy(store: Store) -> None:
    async with await store.subscribe() as events:
        event = {"type": "x", "items": [1]}
        await store.publish(event)
        event["items"].append(2)
        got = await next_event(events)
        assert got == {"type": "x", "items": [1]}


async def test_subscription_ends_when_store_closes(
    open_store: Callable[[], Awaitable[Store]],
) -> None:
    store = await open_store()
    events = await store.subscribe()
    waiting = asyncio.ensure_future(next_event(events))
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    later = await store.subscribe()
    with pytest.raises(StopAsyncIteration):
        await next_event(later)


# redis failures --------------------------------------------------------------


async def test_unreachable_redis_fails_fast() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    try:
        for operation in (
            store.start,
            lambda: store.get_consult("c1"),
            lambda: store.create_consult(consult("c1")),
            lambda: store.publish({"type": "x"}),
            store.subscribe,
            store.list_nodes,
        ):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await operation()
            assert time.monotonic() - began < 3
    finally:
        await store.close()


async def test_redis_dying_surfaces_as_unavailable() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url)
        await store.start()
        try:
            await store.create_consult(consult("c1"))
            events = await store.subscribe()
            server.stop()
            began = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.get_consult("c1")
            assert time.monotonic() - began < 3
            with pytest.raises(StoreUnavailable):
                await next_event(events)
            with pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            await store.close()


def test_make_store_picks_the_backend() -> None:
    assert isinstance(make_store(None), MemoryStore)
    assert isinstance(make_store("redis://127.0.0.1:1/0"), RedisStore)


async def test_rehome_moves_a_session_exactly_once(store: Store) -> None:
    await store.create_consult(consult("c1"))
    await store.accept_consult("c1", fields={"session_id": "s1"}, session=session("s1"))
    dead = (await store.get_session("s1"))["node"]
    await store.transition_session("s1", from_states=["live"], to_state="interrupted", fields={})
    results = await asyncio.gather(
        *(store.rehome_session("s1", from_node=dead, to_node=f"n{i}") for i in range(10)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1 and winners[0]["state"] == "live"
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(losers) == 9 and {c.current_state for c in losers} == {winners[0]["node"]}
    assert (await store.get_session("s1"))["node"] == winners[0]["node"]
    with pytest.raises(NotFound):
        await store.rehome_session("nope", from_node=dead, to_node="n0")


async def test_presence_expires(store: Store, backend: str, clock: FakeClock) -> None:
    await store.set_presence("dr-k", {"status": "available", "specialties": ["cardiology"]}, 0.3)
    await store.set_presence("dr-s", {"status": "busy"}, 30)
    assert (await store.list_presence())["dr-k"]["status"] == "available"
    if backend == "memory":
        clock.advance(0.31)
        assert set(await store.list_presence()) == {"dr-s"}
    else:
        await poll(store.list_presence, lambda found: set(found) == {"dr-s"})


async def test_due_items_are_claimed_exactly_once(store: Store) -> None:
    await store.schedule("escalate:c1", 100.0)
    await store.schedule("reannounce:c2", 50.0)
    await store.schedule("escalate:c3", 500.0)
    await store.schedule("escalate:c3", 120.0)  # rescheduled earlier
    await store.unschedule("reannounce:c2")
    claims = await asyncio.gather(*(store.claim_due(200.0) for _ in range(10)))
    assert sorted(item for claim in claims for item in claim) == ["escalate:c1", "escalate:c3"]
    assert await store.claim_due(1e12) == []


# short-lived secrets (sign-ins under way, web sessions) ------------------------


async def test_secrets_expire_and_are_taken_once(store: Store, backend: str, clock: FakeClock):
    await store.put_secret("signin", "state-1", {"nonce": "n"}, 30)
    await store.put_secret("signin", "state-2", {"nonce": "m"}, 0.3)
    assert await store.get_secret("signin", "state-1") == {"nonce": "n"}
    assert await store.get_secret("websession", "state-1") is None  # kinds apart
    taken = await asyncio.gather(*(store.take_secret("signin", "state-1") for _ in range(5)))
    assert [t for t in taken if t is not None] == [{"nonce": "n"}]  # exactly one caller
    assert await store.get_secret("signin", "state-1") is None
    if backend == "memory":
        clock.advance(0.31)
        assert await store.get_secret("signin", "state-2") is None
    else:
        await poll(lambda: store.get_secret("signin", "state-2"), lambda found: found is None)
    await store.put_secret("websession", "s", {"a": 1}, 30)
    await store.drop_secret("websession", "s")
    assert await store.take_secret("websession", "s") is None
