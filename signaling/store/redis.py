"""Redis Store, shared by every node.

Layout (``p`` is the prefix):

- ``p consult:<id>`` / ``p session:<id>``: a hash, one field per top-level record
  key, each value the JSON encoding of that key's value. Scripts compare and set
  these strings without decoding them: Redis's cjson would rewrite numbers with
  14 significant digits and turn ``[]`` into ``{}``.
- ``p consults:open``: ZSET of open consults, scored by queue order.
- ``p consults:all`` and ``p facility:<facility>:consults``: ZSETs by created_at.
- ``p sessions``: ZSET of sessions by created_at.
- ``p node:<id>``: the node's info as a JSON string, with a PX expiry, and
  ``p nodes``: SET of node ids (ids whose key expired are pruned on listing).
- Ended consults and sessions expire (PEXPIRE) ``retention_s`` after they end;
  their ids are pruned from the indexes when a listing finds them gone.
- Events: pub/sub on the channel ``p events``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..model import Urgency
from . import redis_scripts as scripts
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
    StoreRefused,
    StoreUnavailable,
    Subscription,
    decode,
    encode,
    queue_key,
)
from .connect import RedisConfig, close_pool, connection_pool

_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError)
# Redis answers, but refuses this client: wrong credentials, or an ACL that lacks a
# command or key the store needs.
_REFUSED = (rex.AuthenticationError, rex.NoPermissionError)

# Queue score: urgency rank, then created_at. Only an ordering hint for the ZSET
# (a double cannot hold both exactly); listings sort fetched records by queue_key.
_RANK_WEIGHT = 1e13


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except _REFUSED as exc:
        raise StoreRefused(f"redis refused this node: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"redis unavailable: {exc}") from exc


def _pairs(record: Record) -> list[str]:
    out: list[str] = []
    for key, value in record.items():
        out += [key, encode(value)]
    return out


def _record(flat: list[str]) -> Record:
    return {flat[i]: decode(flat[i + 1]) for i in range(0, len(flat), 2)}


def _entry(value: str) -> Any:
    """An expiring entry as stored; one that is not JSON (not written by a node) is
    kept as its text, for the reader to refuse."""
    try:
        return decode(value)
    except ValueError:
        return value


def _queue_score(consult: Record) -> float:
    return Urgency(consult["urgency"]).rank * _RANK_WEIGHT + consult["created_at"]


def _result(reply: list[Any], record_id: str) -> Record:
    status = reply[0]
    if status == "ok":
        return _record(reply[1])
    if status == "notfound":
        raise NotFound(record_id)
    if status == "conflict":
        raise Conflict(decode(reply[1]))
    raise StoreError(f"unexpected script reply {status!r}")


class RedisStore:
    def __init__(
        self,
        url: str | RedisConfig,
        prefix: str = "jisr:",
        *,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        retries: int = 1,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        """``url``: a Redis URL, or the connection settings (``connect.from_settings``).
        ``retries`` is how often a connection error is retried at once on a fresh
        connection (one: a socket left stale by a Redis restart is replaced, while a
        Redis that is down still fails within the timeouts). A subscription never
        reconnects by itself (it would silently miss events): its reader gets
        StoreUnavailable and subscribes again."""
        self._prefix = prefix
        self.retention_s = retention_s  # ended consults and sessions expire (PEXPIRE)
        self._channel = f"{prefix}events"
        self._timeout = socket_timeout
        config = RedisConfig.from_url(url) if isinstance(url, str) else url
        self._pool = connection_pool(
            config,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), retries),
            # A pooled connection idle for a second is checked (PING, reconnect) before
            # use, so after a Redis restart stale sockets are replaced rather than
            # failing one request each.
            health_check_interval=1,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        # Scripts are sent by their hash; a Redis that does not know one (restarted,
        # or a replica promoted by Sentinel) answers NOSCRIPT and redis-py loads it.
        self._create = self._client.register_script(scripts.CREATE)
        self._transition = self._client.register_script(scripts.TRANSITION)
        self._accept = self._client.register_script(scripts.ACCEPT)
        self._prune_nodes = self._client.register_script(scripts.PRUNE_NODES)
        self._rehome = self._client.register_script(scripts.REHOME)
        self._claim = self._client.register_script(scripts.CLAIM)
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def start(self) -> None:
        self._closed = False
        await self.ping()

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        with suppress(*_UNAVAILABLE):
            await self._client.aclose()
        with suppress(*_UNAVAILABLE):
            await close_pool(self._pool)

    async def ping(self) -> None:
        with _unavailable():
            await self._client.ping()

    # consults -----------------------------------------------------------
    async def create_consult(self, consult: Record) -> None:
        consult_id = consult["id"]
        keys = [
            self._key("consult", consult_id),
            self._key("consults", "open"),
            self._key("consults", "all"),
            self._key("facility", consult["facility"], "consults"),
        ]
        is_open = "1" if consult["state"] in CONSULT_OPEN_STATES else "0"
        args = [consult_id, _queue_score(consult), consult["created_at"], is_open]
        with _unavailable():
            reply = await self._create(keys=keys, args=args + _pairs(consult))
        if reply[0] != "ok":
            raise Conflict(decode(reply[1]))

    async def get_consult(self, consult_id: str) -> Record | None:
        with _unavailable():
            flat = await self._client.hgetall(self._key("consult", consult_id))
        return {k: decode(v) for k, v in flat.items()} if flat else None

    async def _fetch(self, index: str, kind: str) -> list[Record]:
        with _unavailable():
            ids = await self._client.zrange(index, 0, -1)
            pipe = self._client.pipeline(transaction=False)
            for record_id in ids:
                pipe.hgetall(self._key(kind, record_id))
            hashes = await pipe.execute() if ids else []
            # Records gone by retention leave their ids behind in the index: prune them.
            if gone := [record_id for record_id, h in zip(ids, hashes, strict=True) if not h]:
                await self._client.zrem(index, *gone)
        return [{k: decode(v) for k, v in h.items()} for h in hashes if h]

    async def _retain(self, key: str, record: Record, ended: frozenset[str]) -> Record:
        if record["state"] in ended:
            with _unavailable():
                await self._client.pexpire(key, max(1, round(self.retention_s * 1000)))
        return record

    async def list_consults(
        self,
        *,
        states: Iterable[str] | None = None,
        specialties: Iterable[str] | None = None,
        facility: str | None = None,
    ) -> list[Record]:
        wanted = CONSULT_OPEN_STATES if states is None else frozenset(states)
        specialty_set = None if specialties is None else frozenset(specialties)
        if facility is not None:
            index = self._key("facility", facility, "consults")
        elif wanted <= CONSULT_OPEN_STATES:
            index = self._key("consults", "open")
        else:
            index = self._key("consults", "all")
        found = [
            c
            for c in await self._fetch(index, "consult")
            if c["state"] in wanted
            and (specialty_set is None or c["specialty"] in specialty_set)
            and (facility is None or c["facility"] == facility)
        ]
        return sorted(found, key=lambda c: (queue_key(c), c["id"]))

    async def _cas(
        self,
        keys: list[str],
        record_id: str,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        froms = [encode(s) for s in from_states]
        if to_state is None:
            new_state, is_open = "", ""
        else:
            new_state, is_open = encode(to_state), "1" if to_state in CONSULT_OPEN_STATES else "0"
        rest = {k: v for k, v in fields.items() if k != "state"}
        args = [record_id, new_state, is_open, len(froms), *froms, *_pairs(rest)]
        with _unavailable():
            reply = await self._transition(keys=keys, args=args)
        return _result(reply, record_id)

    async def transition_consult(
        self,
        consult_id: str,
        *,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        keys = [self._key("consult", consult_id), self._key("consults", "open")]
        record = await self._cas(keys, consult_id, from_states, to_state, fields)
        return await self._retain(keys[0], record, CONSULT_TERMINAL_STATES)

    async def accept_consult(self, consult_id: str, *, fields: Record, session: Record) -> Record:
        keys = [
            self._key("consult", consult_id),
            self._key("consults", "open"),
            self._key("session", session["id"]),
            self._key("sessions"),
        ]
        consult_items = _pairs({k: v for k, v in fields.items() if k != "state"})
        args = [
            consult_id,
            session["id"],
            session.get("created_at", 0),
            len(consult_items),
            *consult_items,
            *_pairs(session),
        ]
        with _unavailable():
            reply = await self._accept(keys=keys, args=args)
        if reply[0] == "session_exists":
            raise StoreError(f"session {session['id']} already exists")
        return _result(reply, consult_id)

    # sessions -----------------------------------------------------------
    async def get_session(self, session_id: str) -> Record | None:
        with _unavailable():
            flat = await self._client.hgetall(self._key("session", session_id))
        return {k: decode(v) for k, v in flat.items()} if flat else None

    async def transition_session(
        self,
        session_id: str,
        *,
        from_states: Iterable[str],
        to_state: str | None,
        fields: Record,
    ) -> Record:
        keys = [self._key("session", session_id)]
        record = await self._cas(keys, session_id, from_states, to_state, fields)
        return await self._retain(keys[0], record, SESSION_TERMINAL_STATES)

    async def rehome_session(self, session_id: str, *, from_node: str, to_node: str) -> Record:
        with _unavailable():
            reply = await self._rehome(
                keys=[self._key("session", session_id)],
                args=[encode(from_node), encode(to_node)],
            )
        if reply[0] == "moved":
            raise Moved(decode(reply[1]))
        return _result(reply, session_id)

    async def list_sessions(self, *, states: Iterable[str] | None = None) -> list[Record]:
        wanted = SESSION_ACTIVE_STATES if states is None else frozenset(states)
        found = [
            s for s in await self._fetch(self._key("sessions"), "session") if s["state"] in wanted
        ]
        return sorted(found, key=lambda s: (s.get("created_at", 0), s["id"]))

    # nodes --------------------------------------------------------------
    # Expiring entries (nodes, presence): a key per entry with a TTL, and a set of
    # ids pruned of expired keys when listed.
    async def _put_expiring(
        self, kind: str, index: str, entry: str, info: Record, ttl_s: float
    ) -> None:
        with _unavailable():
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._key(kind, entry), encode(info), px=max(1, round(ttl_s * 1000)))
            pipe.sadd(self._key(index), entry)
            await pipe.execute()

    async def _list_expiring(self, kind: str, index: str) -> dict[str, Record]:
        with _unavailable():
            ids = sorted(await self._client.smembers(self._key(index)))
            values = await self._client.mget([self._key(kind, i) for i in ids]) if ids else []
            gone = [i for i, v in zip(ids, values, strict=True) if v is None]
            if gone:
                keys = [self._key(index), *(self._key(kind, i) for i in gone)]
                await self._prune_nodes(keys=keys, args=gone)
        return {i: _entry(v) for i, v in zip(ids, values, strict=True) if v is not None}

    async def register_node(self, node_id: str, info: Record, ttl_s: float) -> None:
        await self._put_expiring("node", "nodes", node_id, info, ttl_s)

    async def remove_node(self, node_id: str) -> None:
        with _unavailable():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._key("node", node_id))
            pipe.srem(self._key("nodes"), node_id)
            await pipe.execute()

    async def list_nodes(self) -> dict[str, Record]:
        return await self._list_expiring("node", "nodes")

    # presence -----------------------------------------------------------
    async def set_presence(self, sub: str, info: Record, ttl_s: float) -> None:
        await self._put_expiring("presence", "presence-index", sub, info, ttl_s)

    async def list_presence(self) -> dict[str, Record]:
        return await self._list_expiring("presence", "presence-index")

    # revoked tokens -------------------------------------------------------
    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        await self._put_expiring("revoked", "revoked-index", token_id, {}, ttl_s)

    async def list_revoked(self) -> list[str]:
        return sorted(await self._list_expiring("revoked", "revoked-index"))

    # short-lived secrets ------------------------------------------------
    async def put_secret(self, kind: str, entry: str, info: Record, ttl_s: float) -> None:
        with _unavailable():
            await self._client.set(
                self._key("secret", kind, entry), encode(info), px=max(1, round(ttl_s * 1000))
            )

    async def get_secret(self, kind: str, entry: str) -> Record | None:
        with _unavailable():
            value = await self._client.get(self._key("secret", kind, entry))
        return None if value is None else decode(value)

    async def take_secret(self, kind: str, entry: str) -> Record | None:
        with _unavailable():
            value = await self._client.getdel(self._key("secret", kind, entry))
        return None if value is None else decode(value)

    async def drop_secret(self, kind: str, entry: str) -> None:
        with _unavailable():
            await self._client.delete(self._key("secret", kind, entry))

    # deadlines ----------------------------------------------------------
    async def schedule(self, item: str, due: float) -> None:
        with _unavailable():
            await self._client.zadd(self._key("due"), {item: due})

    async def unschedule(self, item: str) -> None:
        with _unavailable():
            await self._client.zrem(self._key("due"), item)

    async def claim_due(self, now: float, limit: int = 100) -> list[str]:
        with _unavailable():
            return list(await self._claim(keys=[self._key("due")], args=[now, limit]))

    # events -------------------------------------------------------------
    async def publish(self, event: Record) -> None:
        payload = encode(event)
        with _unavailable():
            await self._client.publish(self._channel, payload)

    async def subscribe(self) -> Subscription:
        """Returns once Redis has confirmed the SUBSCRIBE, so every event published
        after this returns is delivered."""
        pump: asyncio.Task[None] | None = None
        pubsub = self._client.pubsub()

        async def on_close() -> None:
            self._subscriptions.discard(subscription)
            if pump is not None:
                pump.cancel()
                await asyncio.wait([pump])
            with suppress(*_UNAVAILABLE):
                await pubsub.aclose()

        subscription = Subscription(on_close)
        if self._closed:
            await subscription.aclose()
            return subscription
        try:
            with _unavailable():
                await pubsub.subscribe(self._channel)
                async with asyncio.timeout(self._timeout):
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is not None and message["type"] == "subscribe":
                            break
        except BaseException:
            await subscription.aclose()
            raise
        pump = asyncio.create_task(self._pump(pubsub, subscription))
        self._subscriptions.add(subscription)
        return subscription

    @staticmethod
    async def _pump(pubsub: PubSub, subscription: Subscription) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None or message["type"] != "message":
                    continue
                try:
                    event = decode(message["data"])
                except ValueError:
                    continue  # not ours: every event we publish is JSON
                subscription.put(event)
        except (*_UNAVAILABLE, *_REFUSED) as exc:
            subscription.fail(StoreUnavailable(f"redis subscription lost: {exc}"))
            with suppress(*_UNAVAILABLE):
                await pubsub.aclose()  # free the connection even if never closed
