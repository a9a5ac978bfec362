"""A throwaway PostgreSQL cluster (Debian's binaries) on a free loopback port, for
tests: ``initdb`` in a temporary folder, ``pg_ctl`` to start, stop and restart it.
As root it runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.redis_server import free_port

USER = "jisr"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))  # fmt: skip
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """``with PostgresServer() as server: ... server.url ...``"""

    def __init__(self, start_timeout: float = 30.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self._bin = postgres_bin()
        self._dir: Path | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._databases = 0

    def url(self, database: str = "jisr") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        def demote() -> None:
            if self._run_as is not None:
                os.setgid(self._run_as.pw_gid)
                os.setuid(self._run_as.pw_uid)

        return subprocess.run(
            args, check=check, capture_output=True, text=True, preexec_fn=demote,
            env={**os.environ, "LC_ALL": "C.UTF-8", "PGTZ": "UTC"}, timeout=self.start_timeout,
        )  # fmt: skip

    def _initdb(self) -> None:
        assert self._bin is not None
        self._dir = Path(tempfile.mkdtemp(prefix="jisr-postgres-"))
        if os.getuid() == 0:
            self._run_as = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
            os.chown(self._dir, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run(str(self._bin / "initdb"), "-D", str(self._dir / "data"), "-U", USER,
                  "--auth=trust", "--no-sync", "-E", "UTF8")  # fmt: skip

    def start(self) -> None:
        if self._bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); the "
                               "record store's tests need a real server")  # fmt: skip
        if self._dir is None:
            self._initdb()
        assert self._dir is not None
        self.port = self.port or free_port()
        options = (f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
        result = self._run(str(self._bin / "pg_ctl"), "-D", str(self._dir / "data"), "-w",
                           "-t", str(int(self.start_timeout)), "-l", str(self._dir / "log"),
                           "-o", options, "start", check=False)  # fmt: skip
        if result.returncode != 0:
            log = (self._dir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data and port (``start`` brings it back)."""
        if self._dir is None or self._bin is None:
            return
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._dir / "data"), "-m", mode, "-w",
                  "stop", check=False)  # fmt: skip

    def create_database(self) -> str:
        """A new empty database; its URL."""
        assert self._bin is not None and self._dir is not None
        self._databases += 1
        name = f"jisr_{os.getpid()}_{self._databases}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            result = self._run(str(self._bin / "createdb"), "-h", "127.0.0.1", "-p",
                               str(self.port), "-U", USER, name, check=False)  # fmt: skip
            if result.returncode == 0:
                return self.url(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {result.stderr}")
            time.sleep(0.1)  # polling interval while the server comes up

    def destroy(self) -> None:
        self.stop("immediate")
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.destroy()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
