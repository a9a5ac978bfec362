"""A throwaway redis-server on a free loopback port, for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``with RedisServer() as server: ... server.url ...``"""

    def __init__(
        self,
        executable: str = "redis-server",
        start_timeout: float = 10.0,
        *,
        persistent: bool = False,
    ) -> None:
        """``persistent``: append-only file with fsync on every write, as production
        should run it, so ``restart()`` keeps the data."""
        self.executable = executable
        self.start_timeout = start_timeout
        self.persistent = persistent
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        path = shutil.which(self.executable)
        if path is None:
            raise RuntimeError(
                f"{self.executable} not found on PATH; the Redis tests need a real server "
                "(Debian/Ubuntu: apt-get install redis-server)"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="jisr-redis-"))
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"
        ]  # fmt: skip
        # The free port may be taken before redis binds it: try a few.
        keep_port = self.port
        for _ in range(5):
            self.port = keep_port or free_port()
            log = self._dir / "redis.log"
            self._proc = subprocess.Popen(
                [
                    path,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    *persistence,
                    "--dir",
                    str(self._dir),
                    "--logfile",
                    str(log),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                return
            self._kill()
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        self.stop()
        raise RuntimeError(f"redis-server did not start; last log lines:\n{text}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline and self._proc.poll() is None:
                try:
                    if client.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    time.sleep(0.02)  # polling interval, not a synchronisation delay
            return False
        finally:
            client.close()

    def flushall(self) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.flushall()
        finally:
            client.close()

    def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), keeping its port and data folder."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Start again on the same port with the same data folder."""
        self._kill()
        self.start()

    def stop(self) -> None:
        self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
