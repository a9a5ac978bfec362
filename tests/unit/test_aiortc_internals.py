"""Guards on the aiortc/aioice internals Jisr relies on: an upgrade that moves them
must fail here, loudly, not in a call."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aioice.ice

from media.aiortc_internals import restrict_host_addresses


def test_pinned_versions():
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"


def test_host_address_hook_still_used_by_gathering():
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source
    assert list(inspect.signature(aioice.ice.get_host_addresses).parameters) == [
        "use_ipv4",
        "use_ipv6",
    ]


def test_restrict_host_addresses_filters_by_family():
    original = aioice.ice.get_host_addresses
    try:
        restrict_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        restrict_host_addresses([])
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    finally:
        aioice.ice.get_host_addresses = original
