"""A network namespace of a test's own, for addresses the machine does not have
(a "network address" for the demo's HTTPS, say): loopback up, and whatever the test
adds (an interface with 10.77.0.1…). Nothing is added to the namespace the
tests run in; the namespace is held by one descriptor of this process and by the
processes started in it, and the kernel removes it, with its interfaces, once
those are gone: nothing to clean up by hand, even after a crash."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.netem import _new_namespace, _run_in, _setns, _which


class NetworkNamespace:
    def __init__(self) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self.fd = _new_namespace(self.home)
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *argv: str) -> str:
        """A command run in the namespace (``ip addr add …``); its output."""
        return _run_in(self.path, *argv)

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
        return subprocess.Popen([_which("nsenter") or "nsenter", f"--net={self.path}", *argv],
                                **options)  # fmt: skip

    @contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the namespace meanwhile: the sockets it opens and the
        processes it starts are there (and stay there after)."""
        _setns(self.fd)
        try:
            yield
        finally:
            _setns(self.home)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.home)
