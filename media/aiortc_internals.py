"""Every touch of aiortc/aioice internals lives here, guarded by
tests/unit/test_aiortc_internals.py, which fails loudly if an upgrade moves them."""

from __future__ import annotations

import ipaddress

import aioice.ice

_default_host_addresses = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: list[str]) -> None:
    """Gather ICE host candidates on exactly these addresses (empty: aioice's default,
    every interface but loopback).

    aioice has no option for this, and leaves loopback out, so a server on one
    host or in an isolated namespace would offer no candidate at all. The
    addresses are a property of the host, so this is process-wide on purpose.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _default_host_addresses
        return
    parsed = [ipaddress.ip_address(a) for a in addresses]

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a) for a in parsed if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = configured
