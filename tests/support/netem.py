"""An impaired network path for e2e tests, on a kernel without ``netem``
(facts in ../shared/E2E-BROWSER.md, "Network impairment on this kernel").

``ImpairedUdpPath`` starts a helper process (``python -m tests.support.netem``) that
builds, and owns, this path for UDP datagrams sent to one loopback port::

    client (127.0.0.1:any)                                   target (127.0.0.1:port)
        |                                                            ^
        v                                                            |
    front 127.0.0.1:P  ==[+delay]==> ns A 10.99.0.2 --veth--> ns B 10.99.0.1 ==> back socket
    (this namespace)   <==========   ns A 10.99.0.2 <--veth-- ns B 10.99.0.1 <==[+delay]==

- ``ns A`` and ``ns B`` are two network namespaces the helper creates itself
  (``unshare(CLONE_NEWNET)``), joined by a veth pair that exists nowhere else;
  10.99.0.0/24 is assigned only there. Nothing is added to the namespace the test
  runs in: the front and back sockets are plain 127.0.0.1 sockets.
- rate: ``tbf`` on the egress of each veth end (both directions);
- loss: an nftables rule on the *input* hook of each namespace (a drop on the
  output hook would turn into EPERM for the sender, which is not a lossy link),
  ``numgen random mod 100 < N``, with counters;
- delay: the helper holds each datagram for ``delay_ms`` before it enters the veth,
  in both directions (a FIFO per direction, so order is kept).

The namespaces live exactly as long as the helper: they are held only by its file
descriptors and sockets, so when it exits (stdin closed, SIGTERM, SIGKILL, or the
test process dying: it asks the kernel for SIGKILL when its parent goes) the
kernel removes them with their veth, qdiscs and nftables tables. There is nothing
to clean up by hand, and nothing is left behind after a crash.

The namespace primitives are in netns.py; coturn is started by turnserver.py.

Needs, from Debian: ``iproute2`` (ip, tc), ``nftables`` (nft), ``util-linux``
(nsenter).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.netns import (
    HelperProcess,
    helper_start,
    new_namespace,
    nft_counters,
    run_in,
    socket_in,
)

A_ADDRESS = "10.99.0.2"  # the impaired side's end of the veth (namespace A)
B_ADDRESS = "10.99.0.1"  # the far end (namespace B)
PREFIX = 24
A_IF, B_IF = "jisr-a", "jisr-b"
NFT_TABLE = "jisr_impair"


# -- the helper process ---------------------------------------------------------------


def _nft_rules(loss_percent: int) -> str:
    # Counters: the first rule counts what it drops, the second what got through.
    return f"""
table inet {NFT_TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 100 < {loss_percent} counter drop
    meta l4proto udp counter
  }}
}}
"""


class DelayLine:
    """Sends each datagram ``delay`` seconds after it was handed in, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.queue: collections.deque = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.max_queued = 0

    def put(self, transport: asyncio.DatagramTransport, data: bytes, addr) -> None:
        self.queue.append((self.loop.time() + self.delay, transport, data, addr))
        self.max_queued = max(self.max_queued, len(self.queue))
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._drain)

    def _drain(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now + 0.0005:
            _, transport, data, addr = self.queue.popleft()
            if not transport.is_closing():
                transport.sendto(data, addr)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._drain)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP unreachable: a lossy link
        pass


class Helper:
    """Runs in the helper process: namespaces, veth, tbf, nftables and the proxy."""

    def __init__(self, target: tuple[str, int], rate: str, burst: str, latency: str,
                 loss_percent: int, delay_ms: float) -> None:  # fmt: skip
        self.target = target
        self.rate, self.burst, self.latency = rate, burst, latency
        self.loss_percent = loss_percent
        self.delay = delay_ms / 1000
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self.ns_a = new_namespace(self.home)
        self.ns_b = new_namespace(self.home)
        self.path_a = f"/proc/{os.getpid()}/fd/{self.ns_a}"
        self.path_b = f"/proc/{os.getpid()}/fd/{self.ns_b}"
        self.counts = collections.Counter()

    def configure(self) -> None:
        a, b = self.path_a, self.path_b
        run_in(a, "ip", "link", "add", A_IF, "type", "veth", "peer", "name", B_IF, "netns", b)
        for path, ifname, address in ((a, A_IF, A_ADDRESS), (b, B_IF, B_ADDRESS)):
            run_in(path, "ip", "link", "set", "lo", "up")
            run_in(path, "ip", "addr", "add", f"{address}/{PREFIX}", "dev", ifname)
            run_in(path, "ip", "link", "set", ifname, "up")
            run_in(path, "tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate", self.rate,
                    "burst", self.burst, "latency", self.latency)  # fmt: skip
            if self.loss_percent > 0:
                run_in(path, "nft", "-f", "-", stdin=_nft_rules(self.loss_percent))

    def _socket_in(self, ns: int, address: str) -> socket.socket:
        sock = socket_in(self.home, ns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((address, 0))
        sock.setblocking(False)
        return sock

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        up = DelayLine(loop, self.delay)  # client -> target, delayed before the veth
        down = DelayLine(loop, self.delay)  # target -> client, delayed before the veth
        a_for_client: dict = {}  # client address -> its socket in namespace A
        back_for_a: dict = {}  # (A address, port) -> its socket here, toward the target
        counts = self.counts

        async def endpoint(sock: socket.socket, on_datagram) -> asyncio.DatagramTransport:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(on_datagram), sock=sock
            )
            return transport

        front_sock = self._socket_in(self.home, "127.0.0.1")
        b_sock = self._socket_in(self.ns_b, B_ADDRESS)
        b_port = b_sock.getsockname()[1]
        pending_front: list = []

        def from_client(data: bytes, addr) -> None:
            counts["up_from_client"] += 1
            transport = a_for_client.get(addr)
            if transport is None:
                pending_front.append((data, addr))
                if len(pending_front) == 1:
                    loop.create_task(open_client(addr))
                return
            up.put(transport, data, (B_ADDRESS, b_port))

        async def open_client(addr) -> None:
            sock = self._socket_in(self.ns_a, A_ADDRESS)

            def from_veth(data: bytes, _source) -> None:
                counts["down_to_client"] += 1
                front.sendto(data, addr)

            a_for_client[addr] = await endpoint(sock, from_veth)
            counts["flows"] += 1
            waiting = list(pending_front)
            pending_front.clear()
            for data, source in waiting:
                counts["up_from_client"] -= 1
                from_client(data, source)

        pending_b: list = []

        def from_veth_b(data: bytes, a_addr) -> None:
            counts["up_to_target"] += 1
            transport = back_for_a.get(a_addr)
            if transport is None:
                pending_b.append((data, a_addr))
                if len(pending_b) == 1:
                    loop.create_task(open_back(a_addr))
                return
            transport.sendto(data, self.target)

        async def open_back(a_addr) -> None:
            sock = self._socket_in(self.home, "127.0.0.1")

            def from_target(data: bytes, _source) -> None:
                counts["down_from_target"] += 1
                down.put(b_side, data, a_addr)

            back_for_a[a_addr] = await endpoint(sock, from_target)
            waiting = list(pending_b)
            pending_b.clear()
            for data, source in waiting:
                counts["up_to_target"] -= 1
                from_veth_b(data, source)

        front = await endpoint(front_sock, from_client)
        b_side = await endpoint(b_sock, from_veth_b)
        self.up, self.down = up, down
        print(json.dumps({
            "port": front_sock.getsockname()[1], "ns_a": self.path_a, "ns_b": self.path_b,
            "pid": os.getpid(),
        }), flush=True)  # fmt: skip
        await self._commands(loop)

    async def _commands(self, loop: asyncio.AbstractEventLoop) -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                return  # the test closed stdin: exit, and the namespaces go with us
            if line.strip() == b"stats":
                stats = dict(self.counts)
                stats["up_max_queued"] = self.up.max_queued
                stats["down_max_queued"] = self.down.max_queued
                print(json.dumps(stats), flush=True)


def _helper_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.netem")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--rate", default="500kbit")
    parser.add_argument("--burst", default="8kb")
    parser.add_argument("--latency", default="300ms")
    parser.add_argument("--loss-percent", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=150)
    args = parser.parse_args(argv)
    helper_start()
    try:
        helper = Helper(("127.0.0.1", args.target_port), args.rate, args.burst, args.latency,
                        args.loss_percent, args.delay_ms)  # fmt: skip
        helper.configure()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(2)
    asyncio.run(helper.run())


# -- the test's side --------------------------------------------------------------------


class ImpairedUdpPath:
    """``with ImpairedUdpPath(target_port) as path:`` send to 127.0.0.1:``path.port``
    and the datagrams reach 127.0.0.1:``target_port`` across the impaired link."""

    def __init__(self, target_port: int, *, rate: str = "500kbit", burst: str = "8kb",
                 latency: str = "300ms", loss_percent: int = 5, delay_ms: float = 150,
                 log_path: Path | None = None, start_timeout: float = 15.0) -> None:  # fmt: skip
        self.args = [
            "--target-port", str(target_port), "--rate", rate, "--burst", burst,
            "--latency", latency, "--loss-percent", str(loss_percent), "--delay-ms", str(delay_ms),
        ]  # fmt: skip
        self.description = (
            f"tbf {rate} (burst {burst}, latency {latency}) each way, {loss_percent} % random "
            f"UDP loss each way, +{delay_ms:g} ms each way"
        )
        self.burst, self.latency = burst, latency
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.helper: HelperProcess | None = None
        self.port = 0
        self.ns_a = self.ns_b = ""

    def __enter__(self) -> ImpairedUdpPath:
        self.helper = HelperProcess(
            "tests.support.netem", self.args, self.log_path, self.start_timeout
        )
        ready = self.helper.ready
        self.port, self.ns_a, self.ns_b = ready["port"], ready["ns_a"], ready["ns_b"]
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def stats(self) -> dict:
        """The proxy's datagram counts, and per direction what nftables dropped and
        passed and what tbf dropped (``up``: toward the target, ``down``: back)."""
        assert self.helper is not None
        stats = self.helper.ask("stats")
        # Uplink loss is decided in B's input hook, its rate on A's egress; and back.
        for direction, nft_ns, tbf_ns, ifname in (
            ("up", self.ns_b, self.ns_a, A_IF),
            ("down", self.ns_a, self.ns_b, B_IF),
        ):
            stats[direction] = {**self._nft_counters(nft_ns), **self._tbf(tbf_ns, ifname)}
        return stats

    def set_rate(self, rate: str) -> None:
        """Change the tbf rate of both directions of the link, now (``tc qdisc
        change``): a link that gets worse or better during a test."""
        for ns, ifname in ((self.ns_a, A_IF), (self.ns_b, B_IF)):
            run_in(ns, "tc", "qdisc", "change", "dev", ifname, "root", "tbf", "rate", rate,
                   "burst", self.burst, "latency", self.latency)  # fmt: skip

    def _nft_counters(self, ns: str) -> dict:
        packets = nft_counters(ns, NFT_TABLE)
        if len(packets) != 2:
            return {}
        return {"random_drops": packets[0], "passed": packets[1]}

    def _tbf(self, ns: str, ifname: str) -> dict:
        try:
            shown = json.loads(run_in(ns, "tc", "-s", "-j", "qdisc", "show", "dev", ifname))
        except (RuntimeError, ValueError):
            return {}
        for qdisc in shown:
            if qdisc.get("kind") == "tbf":
                return {"tbf_sent_packets": qdisc.get("packets"), "tbf_drops": qdisc.get("drops"),
                        "tbf_overlimits": qdisc.get("overlimits")}  # fmt: skip
        return {}

    def close(self) -> None:
        helper, self.helper = self.helper, None
        if helper is not None:
            helper.close()


if __name__ == "__main__":
    _helper_main(sys.argv[1:])
