"""Limits on what one user or one address can make the server do, written and
parsed as ``limits`` items ("30/minute"), counted with its Redis storage when
nodes share Redis (every node sees the same counts), in this process otherwise.
Defaults are generous enough that no clinician at work meets them;
``JISR_RATE_LIMITS`` changes any of them (docs/protocol.md lists them).

WebSocket messages of any kind are counted on the node that receives them, in
memory: a user's messages arrive on their connection's node, and a shared count
would cost a Redis round trip per message.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import limits
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from .errors import ApiError
from .logs import get_logger
from .store.connect import RedisConfig, close_pool, connection_pool

log = get_logger()

# action.scope -> limit ("user": per signed-in user, "address": per client address)
DEFAULT_LIMITS = {
    "consult.user": "30/minute",
    "consult.address": "120/minute",
    "attachment.user": "120/minute",
    "attachment.address": "300/minute",
    "chat.user": "120/minute",
    "offer.user": "30/minute",
    # Per address: many clinicians of one hospital may share an address (its NAT),
    # and after a network blip they all come back at once.
    "offer.address": "1200/minute",
    "message.user": "50/second",
    "message.address": "2000/second",  # messages of sockets not signed in yet
    "connection.user": "60/minute",
    "connection.address": "1200/minute",
    "sign_in.address": "30/minute",  # refused tokens: past this, the address waits
}
LOCAL_ACTIONS = frozenset({"message"})  # counted on the receiving node only
MAX_BLOCKED = 10_000


def parse_limits(overrides: dict[str, str]) -> dict[str, limits.RateLimitItem]:
    """The limits in force; ValueError names a bad override."""
    merged = {**DEFAULT_LIMITS, **overrides}
    parsed = {}
    for name, text in merged.items():
        if name not in DEFAULT_LIMITS:
            raise ValueError(f"unknown rate limit {name!r}; known: {', '.join(DEFAULT_LIMITS)}")
        try:
            parsed[name] = limits.parse(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a limit such as 30/minute") from None
    return parsed


def rate_limited(retry_after: float) -> ApiError:
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429, "rate_limited", f"too many requests; try again in {seconds} s", retry_after=seconds
    )


class LocalWindows:
    """Counts kept in this process, by the sliding-window counter of ``limits``'
    SlidingWindowCounterRateLimiter, with no background work. (The library's own
    in-memory storage expires its keys from a timer thread started every 10 ms; in
    this single-threaded server, measured with ``bench.signaling``, the burst's
    join p99 went from 104-157 ms with it to 89-115 ms without.) An entry rolls
    forward when it is next counted, and the table is emptied of stale entries when
    it grows past MAX_ENTRIES."""

    MAX_ENTRIES = 100_000

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        # key -> [start of its current window, count in it, count in the one before]
        self.windows: dict[tuple, list] = {}

    def hit(self, item: limits.RateLimitItem, *ids: str) -> float:
        """Count one; 0 when allowed, else the seconds until it would be."""
        period = item.get_expiry()
        now = self.clock()
        start = now - now % period
        key = (item.amount, period, *ids)
        entry = self.windows.get(key)
        if entry is None or entry[0] < start - period:
            entry = [start, 0, 0]
        elif entry[0] < start:
            entry = [start, 0, entry[1]]
        self.windows[key] = entry
        weight = (period - (now - start)) / period  # how much of the last window counts
        if entry[2] * weight + entry[1] + 1 > item.amount:
            return max(0.001, self._allowed_at(item.amount, period, start, entry) - now)
        entry[1] += 1
        if len(self.windows) > self.MAX_ENTRIES:
            self.windows = {k: e for k, e in self.windows.items() if e[0] >= start - period}
        return 0.0

    @staticmethod
    def _allowed_at(amount: int, period: float, start: float, entry: list) -> float:
        """When the next one would be counted, so that a client told to wait this
        long is let in: the last window's count slides out linearly."""
        _, current, previous = entry
        room = amount - 1 - current  # what may still be left of the last window
        if room >= 0:  # within this window, once enough of the last has slid out
            return start + period * (1 - room / previous) + 1e-6
        # this window is full: in the next, once enough of this one has slid out
        return start + period + period * (1 - (amount - 1) / current) + 1e-6


@dataclass
class RateLimits:
    items: dict[str, limits.RateLimitItem]
    shared: SlidingWindowCounterRateLimiter | LocalWindows  # Redis, when nodes share it
    local: LocalWindows
    blocked: dict[str, float] = field(default_factory=dict)  # address -> until (epoch s)
    pool: ConnectionPool | None = None  # the shared counts' connections to Redis

    @classmethod
    def open(cls, overrides: dict[str, str], redis: RedisConfig | None) -> RateLimits:
        """Counts shared through ``redis`` (connected as the store is: same user,
        TLS, Sentinel) when given, else kept in this process."""
        local = LocalWindows()
        shared: SlidingWindowCounterRateLimiter | LocalWindows = local
        pool = None
        if redis is not None:
            pool = connection_pool(redis, socket_timeout=1.0, socket_connect_timeout=1.0)
            shared = SlidingWindowCounterRateLimiter(RedisStorage(
                "async+redis://", implementation="redispy", key_prefix="jisr:limits",
                wrap_exceptions=True, connection_pool=pool,
            ))  # fmt: skip
        return cls(parse_limits(overrides), shared, local, pool=pool)

    async def close(self) -> None:
        if self.pool is not None:
            await close_pool(self.pool)

    async def hit(self, action: str, *, user: str | None = None, address: str | None = None):
        """Count one ``action``; raises ``429 rate_limited`` (with ``retry_after``)
        when the user or the address is over its limit."""
        limiter = self.local if action in LOCAL_ACTIONS else self.shared
        for scope, who in (("user", user), ("address", address)):
            item = self.items.get(f"{action}.{scope}")
            if item is None or who is None:
                continue
            wait = await self._wait(limiter, item, action, scope, who)
            if wait:
                log.debug("ratelimit.refused", kind=action, scope=scope)  # access lines: 429
                raise rate_limited(wait)

    @staticmethod
    async def _wait(limiter, item: limits.RateLimitItem, *ids: str) -> float:
        if isinstance(limiter, LocalWindows):
            return limiter.hit(item, *ids)
        try:
            if await limiter.hit(item, *ids):
                return 0.0
            stats = await limiter.get_window_stats(item, *ids)
        except StorageError as exc:  # the limiter's store is down: do not lock users out
            log.warning("ratelimit.unavailable", error=type(exc).__name__)
            return 0.0
        return max(0.001, stats.reset_time - time.time())

    def check_sign_in(self, address: str | None) -> None:
        """An address that sent too many refused tokens waits, whatever it sends
        next (checked in memory: no store round trip per request)."""
        until = self.blocked.get(address or "")
        if until is None:
            return
        if until <= time.time():
            del self.blocked[address or ""]
            return
        raise rate_limited(until - time.time())

    async def sign_in_refused(self, address: str | None) -> None:
        """Count a refused token; past the limit the address waits (and this answer
        says so)."""
        try:
            await self.hit("sign_in", address=address)
        except ApiError as exc:
            if len(self.blocked) >= MAX_BLOCKED:
                self.blocked.clear()  # bounded; the shared count still holds
            self.blocked[address or ""] = time.time() + float(exc.extra["retry_after"])
            raise
