"""Behind a reverse proxy: Forwarded / X-Forwarded-* are believed from the proxies
in JISR_TRUSTED_PROXIES only. Clients on other loopback addresses (127.0.0.2, …)
stand for machines that are not proxies; what a handler sees is noted by a
middleware inside Jisr's, and its consequences are checked where they matter: the
sign-in cookie's Secure flag and redirect address, HSTS, rate limits per address."""

from __future__ import annotations

import json
import urllib.parse

import aiohttp
import pytest
from aiohttp import web

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.support.openid import OpenIdProvider

USERS = {"amal": {"password": "a-pass", "claims": {"name": "Dr Amal", "jisr_role": "referrer"}}}
FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
          "X-Forwarded-Host": "evil.example"}  # fmt: skip


@pytest.fixture
async def node(aiohttp_server, tmp_path):
    """A node trusting 127.0.0.1 and 10.0.0.0/8 as proxies, three refused tokens an
    address a minute, and one organisation signing in with a real provider."""
    provider = OpenIdProvider(tmp_path, "org-a", USERS, ["https://jisr.example/auth/callback"],
                              ["https://jisr.example/signin.html"])  # fmt: skip
    provider.start()
    (tmp_path / "issuers.json").write_text(json.dumps({"issuer": [provider.issuer_entry()]}))
    settings = make_settings(issuers_file=tmp_path / "issuers.json",
                             trusted_proxies="127.0.0.1, 10.0.0.0/8",
                             rate_limits="sign_in.address=3/minute")  # fmt: skip
    app = create_app(settings, store=MemoryStore())
    seen: list[tuple[str, str, str]] = []

    @web.middleware
    async def note(request: web.Request, handler):
        seen.append((request.remote, request.scheme, request.host))
        return await handler(request)

    app.middlewares.append(note)
    server = await aiohttp_server(app, host="127.0.0.1")
    yield f"http://127.0.0.1:{server.port}", seen
    provider.stop()


def from_address(source: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``source`` (any 127.x.y.z works)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


async def start_sign_in(http: aiohttp.ClientSession, base: str, headers: dict) -> tuple:
    """/auth/login's answer: its sign-in cookie, where the provider sends the
    browser back, and its HSTS header."""
    async with http.get(f"{base}/auth/login?organisation=org-a", headers=headers,
                        allow_redirects=False) as answer:  # fmt: skip
        assert answer.status == 302, await answer.text()
        query = urllib.parse.parse_qs(urllib.parse.urlparse(answer.headers["Location"]).query)
        cookie = next(c for c in answer.headers.getall("Set-Cookie") if "jisr_signin=" in c)
        return cookie, query["redirect_uri"][0], answer.headers.get("Strict-Transport-Security")


async def refused_tokens(http: aiohttp.ClientSession, base: str, *forwarded_for: str) -> list:
    """Statuses of one garbled token sent with each X-Forwarded-For value."""
    statuses = []
    for value in forwarded_for:
        headers = {"Authorization": "Bearer not-a-token", "X-Forwarded-For": value}
        async with http.get(f"{base}/api/me", headers=headers) as answer:
            statuses.append(answer.status)
    return statuses


async def test_forged_headers_from_an_untrusted_peer_are_ignored(node):
    base, seen = node
    port = base.rsplit(":", 1)[1]
    async with from_address("127.0.0.2") as stranger:
        forged = {**FORGED, "Forwarded": "for=198.51.100.1;proto=https;host=evil.example"}
        cookie, back_to, hsts = await start_sign_in(stranger, base, forged)
        assert "Secure" not in cookie and hsts is None
        assert back_to == f"http://127.0.0.1:{port}/auth/callback"
        assert seen[-1] == ("127.0.0.2", "http", f"127.0.0.1:{port}")
        # Each refused token claims another address: the socket's is the one counted.
        spoofed = [f"198.51.100.{i}" for i in range(5)]
        assert await refused_tokens(stranger, base, *spoofed) == [401, 401, 401, 429, 429]
    async with from_address("127.0.0.3") as neighbour:  # another machine is not held back
        assert await refused_tokens(neighbour, base, "198.51.100.3") == [401]
        assert seen[-1][0] == "127.0.0.3"


async def test_a_trusted_proxy_is_believed(node):
    base, seen = node
    async with from_address("127.0.0.1") as proxy:
        cookie, back_to, hsts = await start_sign_in(proxy, base, FORGED)
        assert "Secure" in cookie and hsts == "max-age=31536000"
        assert back_to == "https://evil.example/auth/callback"
        assert seen[-1] == ("203.0.113.9", "https", "evil.example")
        # Counted per client behind the proxy: one client held back, not the proxy.
        assert await refused_tokens(proxy, base, *["203.0.113.9"] * 4) == [401, 401, 401, 429]
        assert await refused_tokens(proxy, base, "203.0.113.10") == [401]
        assert seen[-1][0] == "203.0.113.10"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        # Read from the right: the first address that is not a trusted proxy.
        ({"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.1.2.3"}, "198.51.100.7"),
        ({"X-Forwarded-For": "10.9.9.9, 10.1.2.3"}, "10.9.9.9"),  # all proxies: the first
        ({"X-Forwarded-For": "unknown, 10.1.2.3"}, "10.1.2.3"),  # unknown past a proxy
        ({"X-Forwarded-For": "garbage"}, "127.0.0.1"),
        ({"Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=jisr.example'}, "2001:db8::7"),
        ({"Forwarded": "for=192.0.2.1, for=10.0.0.4"}, "192.0.2.1"),
        # Both: X-Forwarded-For, which proxies such as Caddy set over the client's (a
        # Forwarded they pass on as it came).
        ({"Forwarded": "for=192.0.2.1", "X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
        ({"X-Forwarded-Proto": "https"}, "127.0.0.1"),  # scheme alone
    ],
)
async def test_the_client_is_found_in_a_chain_of_proxies(node, headers, client):
    base, seen = node
    async with from_address("127.0.0.1") as proxy:
        async with proxy.get(f"{base}/healthz", headers=headers) as answer:
            assert answer.status == 200
    assert seen[-1][0] == client


async def test_a_bad_scheme_or_host_from_a_proxy_is_not_taken(node):
    base, seen = node
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "gopher",
               "X-Forwarded-Host": "evil.example/path?x"}  # fmt: skip
    async with from_address("127.0.0.1") as proxy:
        async with proxy.get(f"{base}/healthz", headers=headers) as answer:
            assert answer.status == 200
            assert "Strict-Transport-Security" not in answer.headers
    assert seen[-1] == ("203.0.113.9", "http", base.removeprefix("http://"))
