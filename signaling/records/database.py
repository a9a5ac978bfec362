"""Where the record store is and how to reach it: SQLite embedded (one file, the
default) or PostgreSQL (for several nodes), through SQLAlchemy's asyncio engine;
its schema brought up to date by the Alembic migrations at start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_MIGRATION_LOCK = 7_470_001  # the PostgreSQL advisory lock nodes migrate under


class DatabaseUnavailable(Exception):
    """The record store cannot be reached just now."""


def database_url(url: str) -> str:
    """The SQLAlchemy URL of a ``JISR_RECORDS_URL`` (``sqlite:///path`` or
    ``postgresql://user@host:port/db``; the async driver is chosen here).
    ValueError for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB") from None
    backend = parsed.get_backend_name()
    if backend not in DRIVERS:
        raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    if backend == "sqlite" and not parsed.database:
        raise ValueError("sqlite:///PATH needs a file (an in-memory database keeps nothing)")
    return parsed.set(drivername=DRIVERS[backend]).render_as_string(hide_password=False)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - a driver's
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def open_engine(url: str, *, connect_timeout_s: float = 3.0,
                password: str | None = None) -> AsyncEngine:  # fmt: skip
    """An engine for ``url`` (as ``database_url`` takes it; PostgreSQL's
    ``password`` apart from it). A SQLite file's folder is created (mode 0700) and
    the file kept to its owner."""
    full = make_url(database_url(url))
    if full.get_backend_name() == "sqlite":
        path = Path(full.database or "")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600, exist_ok=True)
        engine = create_async_engine(full)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect = {"timeout": connect_timeout_s, "command_timeout": 30}
    if password:
        connect["password"] = password
    return create_async_engine(full, pool_pre_ping=True, pool_size=5, max_overflow=5,
                               connect_args=connect)  # fmt: skip


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":  # nodes starting together migrate in turn
        connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to date (Alembic); DatabaseUnavailable if unreachable."""
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    except (OSError, TimeoutError, OperationalError) as exc:
        raise DatabaseUnavailable(type(exc).__name__) from None


def transient(exc: BaseException) -> bool:
    """A failure that retrying later may cure: the database is down, restarting,
    unreachable or busy, or another node wrote the same row first (not a bad
    statement)."""
    if isinstance(exc, OSError | TimeoutError | DatabaseUnavailable | ConnectionError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | IntegrityError) or (
            type(exc).__name__ in ("InterfaceError", "InternalError")
        )
    return False
