"""One UDP port for every media peer of a node: a socket per host address, shared
by the ICE connections of all peers, and the demultiplexing of what arrives on it.

A datagram goes to the peer its source address was learned for: one dict lookup,
the whole cost this adds to the media path. An address is learned only from a STUN
binding request that authenticates as one peer's ICE: its USERNAME names the
peer's local ufrag (``ours:theirs``) and its MESSAGE-INTEGRITY checks out under
that peer's ICE password. So a peer is followed to a new address (a new candidate
pair, a network change, a TURN relay on its side) as soon as its checks arrive
from there, and nobody takes over another peer's address without its password.
Anything else is dropped and counted: media or responses from an address no peer
was learned at, requests naming a ufrag no peer owns or failing authentication,
junk. Outgoing datagrams of every peer leave through the same socket.

aioice knows nothing of this; media.aiortc_internals makes a peer's ICE gather
its host candidates here (SharedPortRoute) rather than on sockets of its own.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import Counter
from typing import Protocol

import structlog

from .aiortc_internals import read_stun

log = structlog.get_logger("jisr.media")

# RFC 7983: a first byte of 0-3 is STUN; DTLS and RTP/RTCP start higher.
STUN_LAST_BYTE = 3
# Addresses a peer may be reached at; beyond this the least recently confirmed one
# is forgotten (a peer has a few: host, reflexive, relayed, per address family).
MAX_ADDRESSES_PER_PEER = 16
# One socket carries every peer's media: ask for big buffers (the kernel caps them
# at net.core.rmem_max / wmem_max).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024

Address = tuple  # (host, port), or (host, port, flowinfo, scope_id) for IPv6


class Route(Protocol):
    """One peer's ICE connection on one shared socket."""

    ufrag: str
    addresses: dict[Address, None]  # learned, least recently confirmed first
    fd: int  # the shared socket's descriptor; -1 once the route or the socket closed

    def data_received(self, data: bytes) -> None: ...

    def stun_received(self, data: bytes, addr: Address) -> None: ...

    def authenticates(self, message: object) -> bool: ...


class SharedSocket(asyncio.DatagramProtocol):
    """One bound UDP socket and the peers reached through it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.fd = -1  # the socket's descriptor, for sends that bypass the transport
        self.by_addr: dict[Address, Route] = {}
        self.by_ufrag: dict[str, Route] = {}
        self.dropped: Counter[str] = Counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fd = transport.get_extra_info("socket").fileno()

    def connection_lost(self, exc: Exception | None) -> None:
        self.forget_descriptor()

    def forget_descriptor(self) -> None:
        """Before the socket closes: its descriptor's number may soon be another's."""
        self.fd = -1
        for route in self.by_ufrag.values():
            route.fd = -1

    @property
    def sockname(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def datagram_received(self, data: bytes, addr: Address) -> None:
        route = self.by_addr.get(addr)
        if route is not None and data and data[0] > STUN_LAST_BYTE:
            route.data_received(data)  # DTLS, RTP, RTCP of a known peer: the media path
        else:
            self._not_media(data, addr, route)

    def _not_media(self, data: bytes, addr: Address, route: Route | None) -> None:
        if not data or data[0] > STUN_LAST_BYTE:
            self._drop("unknown_address" if data else "empty")
            return
        stun = read_stun(data)
        if stun is None:
            self._drop("not_stun")
        elif stun.request:
            owner = self.by_ufrag.get(stun.ufrag) if stun.ufrag else None
            if owner is None:
                self._drop("unknown_ufrag")
            elif owner is route:
                owner.addresses[addr] = owner.addresses.pop(addr)  # confirmed: most recent
                owner.stun_received(data, addr)
            elif owner.authenticates(stun.message):
                self._learn(addr, owner, route)
                owner.stun_received(data, addr)
            else:
                self._drop("unauthenticated")
        elif route is not None:
            route.stun_received(data, addr)  # a response or indication from a known peer
        else:
            self._drop("unknown_address")

    def _learn(self, addr: Address, owner: Route, previous: Route | None) -> None:
        if previous is not None:
            previous.addresses.pop(addr, None)
        self.by_addr[addr] = owner
        owner.addresses[addr] = None
        if len(owner.addresses) > MAX_ADDRESSES_PER_PEER:
            oldest = next(iter(owner.addresses))
            del owner.addresses[oldest]
            del self.by_addr[oldest]
        log.debug("udp.address_learned", addresses=len(owner.addresses))

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        log.debug("udp.dropped", reason=reason)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp.socket_error", error=type(exc).__name__)

    def add(self, route: Route) -> None:
        if route.ufrag in self.by_ufrag:
            raise ValueError("this ufrag already has a route on this socket")
        self.by_ufrag[route.ufrag] = route

    def remove(self, route: Route) -> None:
        """Only this route's entries: the ufrag and addresses still pointing to it."""
        if self.by_ufrag.get(route.ufrag) is route:
            del self.by_ufrag[route.ufrag]
        for addr in route.addresses:
            if self.by_addr.get(addr) is route:
                del self.by_addr[addr]
        route.addresses.clear()


class PortUnavailable(OSError):
    """The media port cannot be bound at start (taken by another process, say)."""


class UdpMux:
    """A node's shared media sockets: one per host address, all on ``port`` (0: a
    port the system picks, per address)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sockets: dict[str, SharedSocket] = {}
        self._binding = asyncio.Lock()

    async def listen(self, addresses: list[str]) -> None:
        """Bind now, so a port already in use stops the node at start (OSError). An
        address gone meanwhile (EADDRNOTAVAIL) is only skipped, as aioice would."""
        for address in addresses:
            try:
                await self._bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise PortUnavailable(exc.errno, exc.strerror) from exc
                log.warning("udp.bind_failed", port=self.port, error=type(exc).__name__)

    async def socket_for(self, address: str) -> SharedSocket | None:
        """The socket on ``address``, bound on first use (an address that came up
        after the start); None if it cannot be bound."""
        shared = self._sockets.get(address)
        if shared is not None:
            return shared
        try:
            return await self._bind(address)
        except OSError as exc:
            log.warning("udp.bind_failed", port=self.port, error=type(exc).__name__)
            return None

    async def _bind(self, address: str) -> SharedSocket:
        async with self._binding:
            if address in self._sockets:
                return self._sockets[address]
            # Bound here rather than by the event loop, which (uvloop) drops the errno.
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
                sock.setblocking(False)
                sock.bind((address, self.port))
            except OSError:
                sock.close()
                raise
            loop = asyncio.get_running_loop()
            _, shared = await loop.create_datagram_endpoint(SharedSocket, sock=sock)
            self._sockets[address] = shared
            log.info("udp.listening", port=shared.sockname[1], sockets=len(self._sockets))
            return shared

    def ufrag_taken(self, ufrag: str) -> bool:
        return any(ufrag in shared.by_ufrag for shared in self._sockets.values())

    def ports(self) -> dict[str, int]:
        """Host address -> the port bound on it."""
        return {address: shared.sockname[1] for address, shared in self._sockets.items()}

    def stats(self) -> dict:
        dropped: Counter[str] = Counter()
        for shared in self._sockets.values():
            dropped.update(shared.dropped)
        return {
            "sockets": len(self._sockets),
            "peers": sum(len(s.by_ufrag) for s in self._sockets.values()),
            "addresses": sum(len(s.by_addr) for s in self._sockets.values()),
            "dropped": dict(dropped),
        }

    def close(self) -> None:
        for shared in self._sockets.values():
            shared.forget_descriptor()
            if shared.transport is not None:
                shared.transport.close()
        self._sockets.clear()
