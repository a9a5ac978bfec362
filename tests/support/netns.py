"""Network-namespace primitives shared by the e2e network helpers (netem.py, sites.py).

A helper process creates namespaces with ``unshare(CLONE_NEWNET)`` and holds each
one only by a file descriptor, so the kernel removes them (with their interfaces,
qdiscs and nftables tables) as soon as the helper and whatever runs inside them
exit. ``HelperProcess`` is the test's side of such a helper: it starts
``python -m <module>``, reads the JSON line the helper prints when it is ready,
sends it one-line commands, and closes its stdin to end it.

Needs, from Debian: ``iproute2`` (ip, tc), ``nftables`` (nft), ``util-linux``
(nsenter, unshare), ``coturn`` (turnserver).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Which Debian package brings each tool the network tests run.
TOOL_PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "nft": "nftables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "turnserver": "coturn",
}

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parents[2]


def which(name: str) -> str | None:
    """``shutil.which``, also looking in /usr/sbin and /sbin (a non-login PATH may
    lack them)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return shutil.which(name, path=path)


def missing_tools(names=tuple(TOOL_PACKAGES)) -> list[str]:
    """``"tool (Debian package)"`` for each tool that is not on PATH."""
    return [
        f"{name} (Debian package {TOOL_PACKAGES.get(name, name)})"
        for name in names
        if which(name) is None
    ]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Moves the calling thread into the network namespace ``fd`` refers to."""
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def new_namespace(home: int) -> int:
    """A new network namespace; returns a descriptor holding it, and leaves the
    calling thread in ``home``."""
    if _libc().unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}")
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    setns(home)
    return fd


def without_ipv6(home: int, ns: int) -> None:
    """No IPv6 in namespace ``ns`` (the tests' sites speak IPv4): otherwise each
    interface brought up gets a link-local address that turns valid a second or two
    later, and Chromium, seeing the network change, aborts whatever it was loading
    (net::ERR_NETWORK_CHANGED: a page's scripts, now and then)."""
    setns(ns)
    try:
        for scope in ("all", "default"):
            with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
                with open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as knob:
                    knob.write("1")
    finally:
        setns(home)


def socket_in(home: int, ns: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """An unbound IPv4 socket that belongs to namespace ``ns`` for its whole life."""
    setns(ns)
    try:
        return socket.socket(socket.AF_INET, kind)
    finally:
        setns(home)


def run_in(ns_path: str, *argv: str, stdin: str | None = None) -> str:
    """Runs a tool inside the namespace at ``ns_path``; its stdout, or RuntimeError."""
    tool = which(argv[0]) or argv[0]
    done = subprocess.run(
        [which("nsenter") or "nsenter", f"--net={ns_path}", tool, *argv[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=10,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def nft_counters(ns_path: str, table: str) -> list[int]:
    """The packet count of every ``counter`` in an ``inet`` table, in rule order
    (empty if the table is not there)."""
    try:
        ruleset = json.loads(run_in(ns_path, "nft", "-j", "list", "table", "inet", table))
    except (RuntimeError, ValueError):
        return []
    return [
        expr["counter"]["packets"]
        for item in ruleset.get("nftables", [])
        for expr in item.get("rule", {}).get("expr", [])
        if "counter" in expr
    ]


def die_with_parent() -> None:
    """In a child before exec: SIGKILL when the test process goes, however it goes."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def enter_and_die_with_parent(ns_path: str):
    """A ``preexec_fn`` that moves the child into the namespace at ``ns_path`` and
    asks for SIGKILL when the test process goes."""

    def preexec() -> None:
        fd = os.open(ns_path, os.O_RDONLY)
        setns(fd)
        os.close(fd)
        die_with_parent()

    return preexec


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def helper_start() -> None:
    """The helper's own first step: die with the test process."""
    die_with_parent()
    if os.getppid() == 1:  # the parent is already gone
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


class HelperProcess:
    """``python -m module *args`` with JSON lines on stdout; ended by closing stdin."""

    def __init__(self, module: str, args: list[str], log_path: Path | None,
                 start_timeout: float) -> None:  # fmt: skip
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            self.process: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        finally:
            if log_path:
                log.close()
        try:
            self.ready = self.read(start_timeout)
            if self.ready is None or "error" in self.ready:
                raise RuntimeError(f"{module} did not start: {self.ready}")
        except BaseException:
            self.close()
            raise

    def read(self, timeout: float) -> dict | None:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line.strip() else None

    def ask(self, command: str, timeout: float = 5) -> dict:
        """Sends one command line; the helper's one-line JSON answer."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        answer = self.read(timeout)
        if answer is None or "error" in answer:
            raise RuntimeError(f"{command!r}: {answer}")
        return answer

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


class NetworkNamespace:
    """A network namespace of a test's own, held by one descriptor of this process
    (for addresses the machine does not have: the demo's "network address", say):
    loopback up, and whatever the test adds. The kernel removes it, with its
    interfaces, once the descriptor and the processes started in it are gone."""

    def __init__(self) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self.fd = new_namespace(self.home)
        without_ipv6(self.home, self.fd)
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *argv: str) -> str:
        """A command run in the namespace (``ip addr add …``); its output."""
        return run_in(self.path, *argv)

    def add_interface(self, name: str, address: str) -> None:
        """An interface with ``address`` ("10.77.0.1/24"), up: one end of a veth
        pair whose other end (``name``-peer) is up too, so that it has a carrier (a
        ``dummy`` interface would do, but not every kernel has that module)."""
        self.run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}-peer")
        self.run("ip", "addr", "add", address, "dev", name)
        self.run("ip", "link", "set", f"{name}-peer", "up")
        self.run("ip", "link", "set", name, "up")

    def popen(self, argv: list[str], **options) -> subprocess.Popen:
        """A process in the namespace (and whatever it starts)."""
        return subprocess.Popen([which("nsenter") or "nsenter", f"--net={self.path}", *argv],
                                **options)  # fmt: skip

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the namespace meanwhile: the sockets it opens and the
        processes it starts are there (and stay there after)."""
        setns(self.fd)
        try:
            yield
        finally:
            setns(self.home)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.home)
