"""Two sites on a real (virtual) wire, for e2e tests: a server site (Jisr, coturn)
and a browser site (chromedriver, Chromium), each its own network namespace::

    the test's namespace              namespaces the helper creates and holds
    --------------------              ----------------------------------------
    127.0.0.1:F1 --TCP relay-->  server site   jisr-srv 10.88.0.1/24   Jisr, coturn
                                                   |  veth
    127.0.0.1:F2 --TCP relay-->  browser site  jisr-site 10.88.0.2/24  chromedriver,
                                   (default route via 10.88.0.1)     Chromium

``Sites`` starts a helper process (``python -m tests.support.sites``) that creates
both namespaces with ``unshare(CLONE_NEWNET)`` and the veth pair between them, and
relays TCP connections from loopback ports of the test's namespace into either
site (``forward``): that is how the test drives chromedriver and probes Jisr.
Nothing is added to the test's own namespace but those loopback listeners.

Processes are started inside a site with ``popen`` (the child enters the
namespace before exec, and is SIGKILLed when the test process goes). The browser
site's firewall is an nftables table the test replaces at will (``firewall``)
and whose counters it reads (``counters``).

The namespaces live while the helper or any process inside them does: when the
test ends or dies, the helper exits (stdin closed, or SIGKILL as its parent
goes), the processes started with ``popen`` are killed, and the kernel removes
the namespaces with their veth and nftables tables. Nothing is left behind.

Needs, from Debian: ``iproute2`` (ip), ``nftables`` (nft), ``util-linux`` (nsenter).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.netns import (
    HelperProcess,
    enter_and_die_with_parent,
    helper_start,
    new_namespace,
    nft_counters,
    run_in,
    socket_in,
    without_ipv6,
)

SERVER_ADDRESS = "10.88.0.1"  # the server site's end of the veth
SITE_ADDRESS = "10.88.0.2"  # the browser site's end
PREFIX = 24
SERVER_IF, SITE_IF = "jisr-srv", "jisr-site"
SITE_TABLE = "jisr_site"


# -- the helper process ---------------------------------------------------------------


class Helper:
    """Runs in the helper process: both namespaces, the veth, and the TCP relays."""

    def __init__(self) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self.namespaces = {"server": new_namespace(self.home), "site": new_namespace(self.home)}
        for ns in self.namespaces.values():
            without_ipv6(self.home, ns)
        self.paths = {name: f"/proc/{os.getpid()}/fd/{fd}" for name, fd in self.namespaces.items()}
        self.servers: list[asyncio.AbstractServer] = []

    def configure(self) -> None:
        server, site = self.paths["server"], self.paths["site"]
        run_in(server, "ip", "link", "add", SERVER_IF, "type", "veth",
               "peer", "name", SITE_IF, "netns", site)  # fmt: skip
        for path, ifname, address in ((server, SERVER_IF, SERVER_ADDRESS),
                                      (site, SITE_IF, SITE_ADDRESS)):  # fmt: skip
            run_in(path, "ip", "link", "set", "lo", "up")
            run_in(path, "ip", "addr", "add", f"{address}/{PREFIX}", "dev", ifname)
            run_in(path, "ip", "link", "set", ifname, "up")
        run_in(site, "ip", "route", "add", "default", "via", SERVER_ADDRESS)

    async def forward(self, site: str, host: str, port: int) -> int:
        """Listens on 127.0.0.1 here; each connection is relayed to host:port in ``site``."""
        ns = self.namespaces[site]

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = socket_in(self.home, ns, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except OSError:
                sock.close()
                writer.close()
                return
            far_reader, far_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        print(json.dumps({**self.paths, "pid": os.getpid()}), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():  # EOF: the test closed stdin, so exit
            words = line.decode().split()
            try:
                if words[:1] == ["forward"] and len(words) == 4:
                    answer = {"port": await self.forward(words[1], words[2], int(words[3]))}
                else:
                    answer = {"error": f"unknown command {line.decode().strip()!r}"}
            except (OSError, KeyError, ValueError) as exc:
                answer = {"error": str(exc)}
            print(json.dumps(answer), flush=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


def _helper_main() -> None:
    helper_start()
    try:
        helper = Helper()
        helper.configure()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(2)
    asyncio.run(helper.run())


# -- the test's side --------------------------------------------------------------------


class Sites:
    """``with Sites() as sites:`` a server site and a browser site, joined by a veth
    (``SERVER_ADDRESS`` <-> ``SITE_ADDRESS``); see the module's docstring."""

    def __init__(self, log_path: Path | None = None, start_timeout: float = 15.0) -> None:
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.helper: HelperProcess | None = None
        self.paths: dict[str, str] = {}

    def __enter__(self) -> Sites:
        self.helper = HelperProcess("tests.support.sites", [], self.log_path, self.start_timeout)
        self.paths = {name: self.helper.ready[name] for name in ("server", "site")}
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def forward(self, site: str, port: int, host: str = "127.0.0.1") -> int:
        """A loopback port of the test's namespace relayed to ``host:port`` in ``site``
        ("server" or "site")."""
        assert self.helper is not None
        return self.helper.ask(f"forward {site} {host} {port}")["port"]

    def popen(self, site: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """``subprocess.Popen`` of ``argv`` inside ``site``, killed when the test goes."""
        return subprocess.Popen(argv, preexec_fn=enter_and_die_with_parent(self.paths[site]),
                                **kwargs)  # fmt: skip

    def firewall(self, output: list[str] = (), input: list[str] = ()) -> None:
        """Replaces the browser site's nftables rules: ``output`` on what leaves its
        processes, ``input`` on what reaches them (nft rule syntax; add ``counter``
        to a rule to count it)."""
        chains = "".join(
            f"  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n"
            + "".join(f"    {rule}\n" for rule in rules)
            + "  }\n"
            for hook, rules in (("output", output), ("input", input))
        )
        ruleset = (
            f"table inet {SITE_TABLE}\ndelete table inet {SITE_TABLE}\n"
            f"table inet {SITE_TABLE} {{\n{chains}}}\n"
        )
        run_in(self.paths["site"], "nft", "-f", "-", stdin=ruleset)

    def counters(self) -> list[int]:
        """Packets counted by each ``counter`` of the browser site's rules (output
        chain first, then input, each in rule order)."""
        return nft_counters(self.paths["site"], SITE_TABLE)

    def run_in(self, site: str, *argv: str) -> str:
        return run_in(self.paths[site], *argv)

    def close(self) -> None:
        helper, self.helper = self.helper, None
        if helper is not None:
            helper.close()


if __name__ == "__main__":
    _helper_main()
