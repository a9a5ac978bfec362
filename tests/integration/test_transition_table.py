"""One transition table and one urgency order, applied alike by both stores: the
Python table (``signaling.model``), the in-process store and the Redis Lua scripts
agree on every transition from every state, and on the queue order."""

from __future__ import annotations

import re

import pytest
import redis.asyncio as aioredis

from signaling.model import (
    CONSULT_TRANSITIONS,
    SESSION_TRANSITIONS,
    ConsultChange,
    ConsultState,
    SessionChange,
    SessionState,
    Urgency,
)
from signaling.store import (
    Conflict,
    LiveState,
    MemoryStore,
    Moved,
    RedisStore,
    TransitionRefused,
)
from signaling.store import redis_scripts as scripts
from signaling.store.base import encode

PERSON = {"sub": "dr-r", "name": "R"}


def consult_record(consult_id: str, state: str, urgency: str = "routine", at: float = 1.0):
    return {
        "id": consult_id, "state": state, "urgency": urgency, "specialty": "cardiology",
        "summary": "s", "patient_ref": "P-1", "facility": "h", "referrer": PERSON,
        "created_at": at,
    }  # fmt: skip


def session_record(session_id: str, state: str, node: str = "n_dead"):
    return {
        "id": session_id, "consult_id": "c_" + session_id, "state": state, "node": node,
        "facility": "h", "specialty": "cardiology", "referrer": PERSON, "specialist": PERSON,
        "created_at": 1.0,
    }  # fmt: skip


@pytest.fixture(params=["memory", "redis"])
async def backend(request):
    store = MemoryStore() if request.param == "memory" else RedisStore(
        request.getfixturevalue("redis_url"))  # fmt: skip
    await store.start()
    yield store
    await store.close()


async def put_consult(store, consult_id: str, state: str) -> None:
    """A consult in ``state``, however it got there."""
    await store.create_consult(consult_record(consult_id, ConsultState.WAITING))
    if state != ConsultState.WAITING:
        await store.transition_consult(
            consult_id, from_states=["waiting"], to_state=state, fields={}
        )


async def test_every_consult_transition_from_every_state(backend):
    state = LiveState(backend)
    for name, transition in CONSULT_TRANSITIONS.items():
        for current in ConsultState:
            consult_id = f"c-{name}-{current}"
            await put_consult(backend, consult_id, current)
            allowed = current in transition.sources
            try:
                if transition is ConsultChange.ACCEPT:  # its own script
                    session = session_record("s-" + consult_id, SessionState.LIVE)
                    await backend.accept_consult(consult_id, fields={}, session=session)
                else:
                    await state.change_consult(consult_id, transition)
            except Conflict:  # TransitionRefused, or the accept script's own Conflict
                assert not allowed, (name, current)
                assert (await state.get_consult(consult_id)).state == current  # unchanged
                continue
            assert allowed, (name, current)
            after = (await state.get_consult(consult_id)).state
            assert after == (transition.target or current), (name, current, after)


async def test_every_session_transition_from_every_state(backend):
    state = LiveState(backend)
    for name, transition in SESSION_TRANSITIONS.items():
        for current in SessionState:
            session_id = f"s-{name}-{current}"
            consult_id = "c_" + session_id
            await backend.create_consult(consult_record(consult_id, ConsultState.WAITING))
            await backend.accept_consult(
                consult_id, fields={}, session=session_record(session_id, SessionState.LIVE)
            )
            if current != SessionState.LIVE:
                await backend.transition_session(
                    session_id, from_states=["live"], to_state=current, fields={}
                )
            allowed = current in transition.sources
            try:
                if transition is SessionChange.REHOME:  # its own script
                    await state.rehome_session(session_id, from_node="n_dead", to_node="n_new")
                else:
                    await state.change_session(session_id, transition)
            except TransitionRefused:
                assert not allowed, (name, current)
                assert (await state.get_session(session_id)).state == current
                continue
            assert allowed, (name, current)
            after = await state.get_session(session_id)
            assert after.state == (transition.target or current), (name, current)
    # re-homing also compares the node: the second of two nodes loses
    session = await state.get_session("s-rehome-live")
    assert session.node == "n_new"
    with pytest.raises(Moved):
        await state.rehome_session("s-rehome-live", from_node="n_dead", to_node="n_other")


def lua_table(script: str, name: str) -> dict[str, str]:
    """The entries of a Lua table literal ``local NAME = {['"x"'] = v, ...}``."""
    body = re.search(rf"local {name} = \{{(.*?)\}}\n", script).group(1)
    return dict(re.findall(r"\['(.+?)'\] = (\w+)", body))


def test_the_lua_scripts_hold_the_table_and_the_urgency_order():
    ranks = {encode(u): str(u.rank) for u in Urgency}
    for script in (scripts.TRANSITION, scripts.ACCEPT):
        assert lua_table(script, "RANK") == ranks
    fixed = {scripts.ACCEPT: ConsultChange.ACCEPT, scripts.REHOME: SessionChange.REHOME}
    for script, transition in fixed.items():
        assert set(lua_table(script, "SOURCES")) == {encode(s) for s in transition.sources}
        target = re.search(r"local TARGET = '(.+?)'", script).group(1)
        assert target == encode(transition.target)
    assert [u.rank for u in Urgency] == [0, 1, 2]  # declared in queue order


async def test_both_stores_order_the_queue_by_the_same_urgency_order(redis_url):
    urgencies = [Urgency.ROUTINE, Urgency.CRITICAL, Urgency.URGENT, Urgency.CRITICAL]
    for store in (MemoryStore(), RedisStore(redis_url)):
        await store.start()
        for n, urgency in enumerate(urgencies):
            await store.create_consult(consult_record(f"c{n}", "waiting", urgency, at=10.0 - n))
        listed = [c.urgency for c in await LiveState(store).list_consults()]
        assert listed == sorted(urgencies, key=lambda u: u.rank)
        await store.close()
    # and Redis's own index, scored by the Lua RANK table, agrees
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    in_index = await client.zrange("jisr:consults:open", 0, -1)
    await client.aclose()
    assert in_index == ["c3", "c1", "c2", "c0"]  # critical (oldest first), urgent, routine
