"""Pytest fixtures for a real PostgreSQL: register with ``pytest_plugins``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer, postgres_bin


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if postgres_bin() is None:
        pytest.fail(
            "PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql); the "
            "record store's tests need a real server and are never skipped",
            pytrace=False,
        )
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new empty database of the session's server."""
    return postgres_server.create_database()
