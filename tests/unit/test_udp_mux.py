"""The shared media socket's demultiplexing, with real aioice connections gathered on
it and datagrams sent from plain UDP sockets on loopback.

Whatever a test expects to be dropped is sent before an authenticated request from
the same socket; once that request's response is back, the drop has been counted
(loopback keeps one socket's datagrams in order)."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest
from aioice import stun
from aioice.ice import Connection

from media.aiortc_internals import restrict_host_addresses, share_port
from media.udp_mux import MAX_ADDRESSES_PER_PEER, UdpMux

TIMEOUT = 5


class Remote(asyncio.DatagramProtocol):
    """A browser's end, as far as the server sees it: a UDP socket."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.put_nowait(data)


@pytest.fixture
async def mux():
    restrict_host_addresses(["127.0.0.1"])
    mux = UdpMux(0)
    await mux.listen(["127.0.0.1"])
    yield mux
    mux.close()
    restrict_host_addresses([])


@pytest.fixture
async def remote_factory():
    made: list[Remote] = []

    async def make() -> Remote:
        loop = asyncio.get_running_loop()
        _, remote = await loop.create_datagram_endpoint(Remote, local_addr=("127.0.0.1", 0))
        made.append(remote)
        return remote

    yield make
    for remote in made:
        remote.transport.close()


async def gathered(mux: UdpMux, ufrag: str | None = None) -> Connection:
    connection = Connection(ice_controlling=False, local_username=ufrag)
    share_port(connection, mux)
    await connection.gather_candidates()
    return connection


def binding_request(connection: Connection, password: str | None = None) -> stun.Message:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{connection.local_username}:brws"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
    request.add_message_integrity((password or connection.local_password).encode())
    return request


async def check(remote: Remote, connection: Connection, mux: UdpMux) -> None:
    """An authenticated binding request from ``remote`` answered by ``connection``."""
    request = binding_request(connection)
    remote.transport.sendto(bytes(request), server_address(mux))
    response = stun.parse_message(await asyncio.wait_for(remote.received.get(), TIMEOUT))
    assert response.transaction_id == request.transaction_id
    assert response.message_class == stun.Class.RESPONSE
    assert response.check_message_integrity(connection.local_password.encode())


def server_address(mux: UdpMux) -> tuple[str, int]:
    return "127.0.0.1", mux.ports()["127.0.0.1"]


def delivered(connection: Connection) -> asyncio.Queue:
    """What reaches the connection's data callback (the forwarder's Tap takes it)."""
    queue: asyncio.Queue = asyncio.Queue()
    connection.data_received = lambda data, component: queue.put_nowait(data)
    return queue


async def test_host_candidate_on_the_shared_port(mux):
    a, b = await gathered(mux), await gathered(mux)
    port = mux.ports()["127.0.0.1"]
    for connection in (a, b):
        [candidate] = connection.local_candidates
        assert (candidate.host, candidate.port, candidate.type) == ("127.0.0.1", port, "host")
    assert mux.stats()["peers"] == 2 and mux.stats()["sockets"] == 1
    await a.close()
    await b.close()


async def test_known_ufrag_learns_the_address(mux, remote_factory):
    connection = await gathered(mux)
    remote = await remote_factory()
    await check(remote, connection, mux)
    assert mux.stats()["addresses"] == 1
    queue = delivered(connection)
    rtp = bytes([0x80, 96]) + bytes(30)
    remote.transport.sendto(rtp, server_address(mux))
    assert await asyncio.wait_for(queue.get(), TIMEOUT) == rtp
    await connection.close()


async def test_unknown_ufrag_and_failed_authentication_are_dropped(mux, remote_factory):
    connection = await gathered(mux)
    stranger = Connection(ice_controlling=False)  # never gathered here: a ufrag no peer owns
    remote = await remote_factory()
    remote.transport.sendto(bytes(binding_request(stranger)), server_address(mux))
    forged = binding_request(connection, password="x" * 22)
    remote.transport.sendto(bytes(forged), server_address(mux))
    await check(remote, connection, mux)  # the only answer is to this one
    assert mux.stats()["dropped"] == {"unknown_ufrag": 1, "unauthenticated": 1}
    assert remote.received.empty()
    await connection.close()


async def test_garbage_is_dropped(mux, remote_factory):
    connection = await gathered(mux)
    remote = await remote_factory()
    junk = [b"\x80" * 40, b"\x16\xfe\xfd" + bytes(20), b"\x00\x01\x00\x00junk", bytes(7)]
    for data in junk:
        remote.transport.sendto(data, server_address(mux))
    await check(remote, connection, mux)
    assert mux.stats()["dropped"] == {"unknown_address": 2, "not_stun": 2}
    # From a learned address too: media goes through, junk in STUN's range does not.
    queue = delivered(connection)
    for data in (b"\x00\x01junk", b"\x80" * 40):
        remote.transport.sendto(data, server_address(mux))
    assert await asyncio.wait_for(queue.get(), TIMEOUT) == b"\x80" * 40
    assert mux.stats()["dropped"] == {"unknown_address": 2, "not_stun": 3}
    await connection.close()


async def test_an_empty_datagram_is_dropped(mux):
    connection = await gathered(mux)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:  # asyncio sends no empty
        plain.setblocking(False)
        plain.sendto(b"", server_address(mux))
        plain.sendto(bytes(binding_request(connection)), server_address(mux))
        assert await asyncio.wait_for(loop.sock_recv(plain, 1500), TIMEOUT)
    assert mux.stats()["dropped"] == {"empty": 1}
    await connection.close()


async def test_a_peer_is_followed_to_a_new_address(mux, remote_factory):
    connection = await gathered(mux)
    first, second = await remote_factory(), await remote_factory()
    await check(first, connection, mux)
    await check(second, connection, mux)
    assert mux.stats()["addresses"] == 2
    queue = delivered(connection)
    second.transport.sendto(b"\x80second", server_address(mux))
    assert await asyncio.wait_for(queue.get(), TIMEOUT) == b"\x80second"
    await connection.close()


async def test_an_address_goes_to_whoever_authenticates_from_it(mux, remote_factory):
    a, b = await gathered(mux), await gathered(mux)
    remote = await remote_factory()
    await check(remote, a, mux)
    await check(remote, b, mux)  # the same address, now checking b's ICE
    to_a, to_b = delivered(a), delivered(b)
    remote.transport.sendto(b"\x80media", server_address(mux))
    assert await asyncio.wait_for(to_b.get(), TIMEOUT) == b"\x80media"
    assert to_a.empty() and mux.stats()["addresses"] == 1
    await a.close()
    await b.close()


async def test_closing_a_peer_removes_only_its_entries(mux, remote_factory):
    a, b = await gathered(mux), await gathered(mux)
    remote_a, remote_b = await remote_factory(), await remote_factory()
    await check(remote_a, a, mux)
    await check(remote_b, b, mux)
    await a.close()
    assert mux.stats() == {
        "sockets": 1, "peers": 1, "addresses": 1, "dropped": {},
    }  # fmt: skip
    remote_a.transport.sendto(b"\x80late", server_address(mux))
    remote_a.transport.sendto(bytes(binding_request(a)), server_address(mux))
    await check(remote_b, b, mux)
    await check(remote_a, b, mux)  # remote_a's datagrams were handled before this
    assert mux.stats()["dropped"] == {"unknown_address": 1, "unknown_ufrag": 1}
    await b.close()
    assert mux.stats()["peers"] == 0 and mux.stats()["addresses"] == 0


async def test_a_ufrag_another_peer_has_is_replaced(mux):
    a = await gathered(mux, ufrag="same")
    b = await gathered(mux, ufrag="same")
    assert a.local_username == "same" and b.local_username != "same"
    assert mux.stats()["peers"] == 2
    await a.close()
    await b.close()


async def test_addresses_per_peer_are_bounded(mux, remote_factory):
    connection = await gathered(mux)
    remotes = [await remote_factory() for _ in range(MAX_ADDRESSES_PER_PEER + 1)]
    for remote in remotes:
        await check(remote, connection, mux)
    assert mux.stats()["addresses"] == MAX_ADDRESSES_PER_PEER
    remotes[0].transport.sendto(b"\x80oldest", server_address(mux))
    await check(remotes[-1], connection, mux)
    assert mux.stats()["dropped"] == {"unknown_address": 1}
    await connection.close()


async def test_routes_forget_the_descriptor_when_their_route_or_socket_closes():
    """A closed socket's descriptor number may soon be another socket's: nothing sends
    on it after a route, or the whole mux, has closed."""
    restrict_host_addresses(["127.0.0.1"])
    mux = UdpMux(0)
    try:
        await mux.listen(["127.0.0.1"])
        first, second = await gathered(mux), await gathered(mux)
        routes = [p.transport for c in (first, second) for p in c._protocols]
        assert all(route.fd >= 0 for route in routes)
        await first.close()
        assert routes[0].fd == -1 and routes[1].fd >= 0
        mux.close()  # at once, before the event loop closes the socket itself
        assert routes[1].fd == -1
    finally:
        mux.close()
        restrict_host_addresses([])
