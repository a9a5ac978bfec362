"""Pytest fixtures for a real Redis: register with ``pytest_plugins``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server); "
            "the Redis tests need a real server and are never skipped",
            pytrace=False,
        )
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL of the session's server, emptied before each test."""
    redis_server.flushall()
    return redis_server.url
