"""The client's side of a request behind a reverse proxy: its address, and the
scheme and host it asked for, as the proxy reports them, believed only from the
proxies named in ``JISR_TRUSTED_PROXIES``.

A request from any other peer is taken as it came: whatever ``Forwarded`` or
``X-Forwarded-*`` it carries is ignored, and its address is the socket's. From a
trusted proxy, the chain of addresses (``X-Forwarded-For``, else RFC 7239
``Forwarded``) is read from the right, the nearest hop first, skipping
trusted proxies: the first address that is not one is the client. Its scheme and
host are those the same hop reported (or the outermost reported, when a proxy
kept only one), ``X-Forwarded-Proto``/``-Host`` for ``X-Forwarded-For``.

(aiohttp-remotes was considered: its ``XForwardedFiltered`` believes the headers
whoever the peer is, and ``XForwardedStrict`` refuses every request that did not
come through the exact chain of proxies, direct clients included.)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The scheme the client used, kept on the request as aiohttp made it (its answer is
# prepared with that one: tls.strict_transport reads it there).
CLIENT_SCHEME = web.RequestKey("client_scheme", str)

HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def parse_networks(items: Sequence[str]) -> list[Network]:
    """``10.0.0.5``, ``10.0.0.0/8``, ``fd00::/8``; ValueError names a bad one."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (CIDR)") from None
    return networks


def node_address(value: str | None) -> Address | None:
    """An address in a ``for=`` or ``X-Forwarded-For`` item (``[v6]:port``,
    ``v4:port``, bare); None for ``unknown``, obfuscated names and garbage."""
    text = (value or "").strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # a dual-stack socket's IPv4 peer
    return mapped or address


def _hops(request: web.BaseRequest) -> tuple[list[str], list[str], list[str]]:
    """Addresses, schemes and hosts the proxies reported, outermost first: from
    ``X-Forwarded-*`` when there is an ``X-Forwarded-For`` (what Caddy, nginx and
    most proxies set, over what a client sent), else from ``Forwarded``."""
    if "Forwarded" in request.headers and "X-Forwarded-For" not in request.headers:
        elements = request.forwarded
        return ([e.get("for", "") for e in elements], [e.get("proto", "") for e in elements],
                [e.get("host", "") for e in elements])  # fmt: skip

    def items(name: str) -> list[str]:
        values = request.headers.getall(name, ())
        return [i.strip() for v in values for i in v.split(",") if i.strip()]

    return items("X-Forwarded-For"), items("X-Forwarded-Proto"), items("X-Forwarded-Host")


def _reported(values: list[str], hop: int) -> str:
    """The value the ``hop``-th proxy from the right reported (or the outermost)."""
    if not values:
        return ""
    return values[max(0, len(values) - 1 - hop)]


def _is_proxy(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def _client_hop(
    addresses: list[str], nearest: Address, trusted: Sequence[Network]
) -> tuple[Address, int]:
    """The client's address and which hop from the right reported it (the peer
    itself, when none did). Unknown past a hop: that trusted hop stands for it."""
    client = nearest
    for hop, text in enumerate(reversed(addresses)):
        address = node_address(text)
        if address is None:
            return client, hop
        if not _is_proxy(address, trusted):
            return address, hop
        client = address
    return client, max(0, len(addresses) - 1)


def client_side(request: web.BaseRequest, trusted: Sequence[Network]) -> dict[str, str]:
    """What ``request.clone`` needs to see the request as the client made it: no
    change unless the peer is a trusted proxy that reported the client."""
    peer = node_address(request.remote)
    if peer is None or not _is_proxy(peer, trusted):
        return {}
    addresses, schemes, hosts = _hops(request)
    if not (addresses or schemes or hosts):
        return {}
    client, hop = _client_hop(addresses, peer, trusted)
    side = {"remote": str(client)}
    scheme = SCHEMES.get(_reported(schemes, hop).lower())
    if scheme:
        side["scheme"] = scheme
    host = _reported(hosts, hop)
    if HOST.match(host):
        side["host"] = host
    return side


def forwarded_middleware(trusted: Sequence[Network]):
    """The outermost middleware: handlers see the client's address, scheme and host."""

    @web.middleware
    async def forwarded(request: web.Request, handler) -> web.StreamResponse:
        side = client_side(request, trusted)
        if not side:
            return await handler(request)
        request[CLIENT_SCHEME] = side.get("scheme", request.scheme)
        return await handler(request.clone(**side))

    return forwarded
