"""Real processes for the HTTPS and reverse-proxy tests: ``jisr serve`` and Caddy,
each started with its own environment and waited for until it answers."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SECRET
from tests.support.deploy import command, executable, unit

ROOT = Path(__file__).resolve().parents[2]


def wait_for(url: str, process: subprocess.Popen, log: Path, context=None, timeout=20.0) -> None:
    """Until ``url`` answers (any HTTP status), failing at once if the process ends."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except urllib.error.HTTPError:
            return
        except (OSError, ssl.SSLError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{process.args[0]} did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.05)  # polling a starting process, bounded by the deadline


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def jisr(folder: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen]:
    """``jisr serve`` of this checkout, logging to folder/jisr.log."""
    full = {**os.environ, "JISR_JWT_SECRET": SECRET, "JISR_ICE_ADDRESSES": "127.0.0.1",
            "JISR_ATTACHMENTS_DIR": str(folder / "attachments"),
            "JISR_RECORDINGS_DIR": str(folder / "recordings"),
            "PYTHONPATH": str(ROOT), **env}  # fmt: skip
    full.pop("JISR_REDIS_URL", None)
    log = folder / "jisr.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "signaling.cli", "serve", *args],
                                   env=full, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield process
    finally:
        stop(process)


@contextmanager
def caddy(folder: Path, caddyfile: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Caddy with ``caddyfile`` (named Caddyfile), run with the command of
    deploy/systemd/caddy.service.d/jisr.conf, its data and configuration kept in
    folder."""
    argv = command(unit("caddy.service.d/jisr.conf").exec_start(), {
        "/usr/bin/caddy": executable("/usr/bin/caddy", "caddy"),
        "/etc/caddy/Caddyfile": str(caddyfile),
    })  # fmt: skip
    full = {**os.environ, "XDG_DATA_HOME": str(folder / "data"),
            "XDG_CONFIG_HOME": str(folder / "config"), "HOME": str(folder), **env}  # fmt: skip
    log = folder / "caddy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=full, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process)
