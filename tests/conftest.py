from __future__ import annotations

import asyncio
import atexit
import gc
import os
import shutil
import tempfile

import pytest

from signaling.auth import mint_token
from signaling.settings import Settings, load_settings

pytest_plugins = ["tests.fixtures_redis", "tests.fixtures_postgres"]

# Media on one shared UDP port, as deployed, but on a port the system picks for each
# node: tests run nodes side by side (in this process and in servers it starts, which
# inherit the environment). Tests of the fixed port set their own.
os.environ.setdefault("JISR_MEDIA_UDP_PORT", "0")


def pytest_report_header(config) -> str:
    from tests.fuzz.seed import SEED

    return f"fuzz seed: {SEED} (JISR_FUZZ_SEED={SEED} replays this run)"


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.fuzz.seed import CASES, SEED

    if CASES:
        lines = [f"  {name}: {n}" for name, n in sorted(CASES.items())]
        terminalreporter.write_line(
            f"fuzz: {sum(CASES.values())} generated cases, seed {SEED}\n" + "\n".join(lines)
        )

# Every exception a task died with must have been retrieved by someone: a task that
# dies unseen is a bug (an offer answered while its connection task crashed, say).
UNRETRIEVED: list[str] = []
_call_exception_handler = asyncio.BaseEventLoop.call_exception_handler


def _noting_unretrieved(loop, context: dict) -> None:
    if "never retrieved" in str(context.get("message", "")):
        UNRETRIEVED.append(f"{context.get('message')}: {context.get('exception')!r}")
    _call_exception_handler(loop, context)


asyncio.BaseEventLoop.call_exception_handler = _noting_unretrieved


def pytest_collection_finish(session) -> None:
    """What the imports and the collection made lives as long as the run: it is set
    aside (as the node does at start), so the collection after each test walks only
    what tests made. A walk of the whole heap took about 0.45 s, after every test."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_unretrieved_task_exceptions():
    before = len(UNRETRIEVED)
    yield
    gc.collect()  # tasks dropped by the test are collected (and reported) now
    assert UNRETRIEVED[before:] == [], "a task died and nobody retrieved its exception"


@pytest.fixture(autouse=True)
def data_dir_env(monkeypatch, tmp_path_factory) -> None:
    """Servers a test starts (which inherit the environment) keep their record store
    and outbox in a folder of the test's own, never in the working copy's var/."""
    monkeypatch.setenv("JISR_DATA_DIR", str(tmp_path_factory.mktemp("data")))


SECRET = "test-secret-" + "x" * 40
CLUSTER_SECRET = "test-cluster-" + "y" * 40  # nodes sharing Redis sign with it


# The data folder (records.db, the outbox journals) of nodes a test does not give one:
# a new one under this run's own for each settings made, never the working copy's var/
# (each test's master key is its own, and a record store opens only under its key).
DATA_DIR = tempfile.mkdtemp(prefix="jisr-test-data-")
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)


def make_settings(**overrides) -> Settings:
    values = {"jwt_secret": SECRET, "ice_addresses": "127.0.0.1", "port": 8080,
              "cluster_secret": CLUSTER_SECRET}  # fmt: skip
    values.update(overrides)
    if "data_dir" not in values:
        values["data_dir"] = tempfile.mkdtemp(dir=DATA_DIR)
    return load_settings(**values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


class Tokens:
    """Development tokens for the usual cast of a consult."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.referrer = self.make("referrer", "dr-amal", facility="hospital-a")
        self.other_referrer = self.make("referrer", "dr-omar", facility="hospital-b")
        self.specialist = self.make("specialist", "dr-karim", specialties=["cardiology"])
        self.other_specialist = self.make("specialist", "dr-sara", specialties=["cardiology"])
        self.neurologist = self.make("specialist", "dr-nadia", specialties=["neurology"])
        self.supervisor = self.make("supervisor", "sup-leila")
        self.admin = self.make("admin", "adm-yusuf")

    def make(self, role: str, sub: str, **claims) -> str:
        return mint_token(self.settings, role=role, sub=sub, name=sub.upper(), **claims)

    @staticmethod
    def header(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)
