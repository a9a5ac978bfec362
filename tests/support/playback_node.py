"""A node serving a vault's recordings from a process of its own, tracing its own
Python memory, so that a test measures what the server holds during a playback and
nothing of the client playing it (or of the test session around it)."""

from __future__ import annotations

import asyncio
import multiprocessing
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import web

from recordings.crypto import MasterKey
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.settings import Settings
from signaling.store import MemoryStore


class PlaybackNode:
    """``base``: where it listens; ``mark()`` starts a measurement, ``peak()`` is the
    most Python memory allocated since (MiB)."""

    def __init__(self, settings: Settings, store: Path, master_key: bytes) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        # The key goes through the pipe, never to disk.
        self._process = context.Process(
            target=_main, args=(child, settings, str(store), master_key), daemon=True
        )

    def __enter__(self) -> PlaybackNode:
        self._process.start()
        self.base = f"http://127.0.0.1:{self._call('port')}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def _call(self, command: str):
        self._conn.send(command)
        if not self._conn.poll(30):
            raise TimeoutError(f"the playback node did not answer {command!r}")
        return self._conn.recv()

    def mark(self) -> None:
        self._call("mark")

    def peak(self) -> float:
        return self._call("peak")


def _main(conn: Connection, settings: Settings, store: str, master_key: bytes) -> None:
    asyncio.run(_serve(conn, settings, store, master_key))


async def _serve(conn: Connection, settings: Settings, store: str, master_key: bytes) -> None:
    vault = Vault(FileStorage(Path(store)), MasterKey(master_key))
    runner = web.AppRunner(create_app(settings, store=MemoryStore(), vault=vault))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tracemalloc.start()
    before = 0
    try:
        while (command := await asyncio.to_thread(conn.recv)) != "stop":
            if command == "port":
                conn.send(runner.addresses[0][1])
            elif command == "mark":
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                conn.send(None)
            elif command == "peak":
                conn.send((tracemalloc.get_traced_memory()[1] - before) / 2**20)
    finally:
        tracemalloc.stop()
        await runner.cleanup()
