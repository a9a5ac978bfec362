"""Redis connections, built from the settings in one place: where Redis is (one
server by URL, or the master a set of Sentinels names, followed across a
failover), the ACL user and its password, and TLS. The store, its events and the
shared rate limits all connect through here, with the same options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = field(default=None, repr=False)  # may hold a password
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "jisr"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> RedisConfig:
        return cls(url=url, tls=urlsplit(url).scheme == "rediss")


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


def from_settings(settings: Settings) -> RedisConfig | None:
    """The Redis of the settings (None: no Redis, one node); password files are
    read here, at start."""
    from ..settings import read_secret_file

    if not settings.uses_redis:
        return None
    password_file, sentinel_file = (settings.redis_password_file,
                                    settings.redis_sentinel_password_file)  # fmt: skip
    base = RedisConfig.from_url(settings.redis_url) if settings.redis_url else RedisConfig(
        tls=settings.redis_tls
    )  # fmt: skip
    sentinels = []
    for item in settings.redis_sentinels:
        host, _, port = item.rpartition(":")
        sentinels.append((host.strip("[]"), int(port)))
    return RedisConfig(
        url=base.url, sentinels=tuple(sentinels), master=settings.redis_sentinel_master,
        username=settings.redis_username,
        password=read_secret_file(password_file) if password_file else None,
        tls=base.tls, ca_file=_path(settings.redis_ca_file),
        cert_file=_path(settings.redis_cert_file), key_file=_path(settings.redis_key_file),
        sentinel_username=settings.redis_sentinel_username,
        sentinel_password=read_secret_file(sentinel_file) if sentinel_file else None,
    )  # fmt: skip


def _tls(config: RedisConfig) -> dict[str, Any]:
    if not config.tls:
        return {}
    return {
        "ssl_ca_certs": config.ca_file, "ssl_certfile": config.cert_file,
        "ssl_keyfile": config.key_file, "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }  # fmt: skip


def _auth(username: str | None, password: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("username", username), ("password", password)) if v}


def connection_pool(config: RedisConfig, **options: Any) -> ConnectionPool:
    """A pool of connections to the master: ``options`` are redis-py connection
    options (timeouts, retry, decode_responses). Through Sentinel, every new
    connection asks the Sentinels where the master is, so after a failover the
    pool reconnects to the new master by itself."""
    auth = _auth(config.username, config.password)
    if not config.sentinels:
        return ConnectionPool.from_url(config.url or "", **_tls(config), **auth, **options)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(
        list(config.sentinels),
        sentinel_kwargs={
            **timeouts, **_auth(config.sentinel_username, config.sentinel_password),
            **({"ssl": True, **_tls(config)} if config.tls else {}),
        },
    )  # fmt: skip
    return SentinelConnectionPool(
        config.master, sentinel, ssl=config.tls, **_tls(config), **auth, **options
    )


async def close_pool(pool: ConnectionPool) -> None:
    """Close a pool's connections, and its Sentinel clients if it has any."""
    await pool.disconnect()
    if isinstance(pool, SentinelConnectionPool):
        await pool.sentinel_manager.aclose()
