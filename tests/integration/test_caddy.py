"""deploy/Caddyfile, as it is deployed, run by the real Caddy in front of a real
`jisr serve`: HTTPS through Caddy reaches Jisr, which sees the scheme https and the
client's own address (not Caddy's, not one the client made up), signs a browser in
with Secure cookies, and a WebSocket on that sign-in gets answers through Caddy.

Caddy stays off the network: its certificate comes from its own CA
(JISR_CADDY_TLS=internal, which the client trusts), no admin endpoint, the HTTP
port on a free one, its data in the test's folder. Clients come from 127.0.0.2 and
127.0.0.3; Caddy reaches Jisr from 127.0.0.1, the one proxy Jisr trusts."""

from __future__ import annotations

import json
import ssl
import urllib.parse
from http.cookies import SimpleCookie

import aiohttp

from tests.integration.test_proxies import refused_tokens
from tests.redis_server import free_port
from tests.support.openid import OpenIdProvider
from tests.support.processes import ROOT, caddy, jisr, wait_for

USERS = {"amal": {"password": "a-pass", "claims": {"name": "Dr Amal", "jisr_role": "referrer",
                                                   "facility": "ward-7"}}}  # fmt: skip


def browser(source: str, context: ssl.SSLContext) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=context, force_close=True)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(http: aiohttp.ClientSession, site: str) -> list[str]:
    """Through the provider's login form, as a browser would; Jisr's Set-Cookie lines."""
    url, cookies = f"{site}/auth/login?organisation=org-a&next=/referrer.html", []
    for _ in range(12):
        async with http.get(url, allow_redirects=False) as answer:
            if url.startswith(site):
                cookies += answer.headers.getall("Set-Cookie", [])
            location = answer.headers.get("Location")
            if location is None:  # the provider's login form
                async with http.post(url.rstrip("/") + "/login", allow_redirects=False,
                                     data={"login": "amal", "password": "a-pass"}) as sent:
                    location = sent.headers["Location"]  # fmt: skip
        if location == "/referrer.html":
            return cookies
        url = urllib.parse.urljoin(url, location)
    raise AssertionError("the sign-in never came back to Jisr")


async def test_jisr_behind_the_deployed_caddyfile(tmp_path):
    jisr_port, caddy_port = free_port(), free_port()
    site = f"https://127.0.0.1:{caddy_port}"
    provider = OpenIdProvider(tmp_path, "org-a", USERS, [f"{site}/auth/callback"],
                              [f"{site}/signin.html"])  # fmt: skip
    provider.start()
    (tmp_path / "issuers.json").write_text(json.dumps({"issuer": [provider.issuer_entry()]}))
    jisr_env = {"JISR_PORT": str(jisr_port), "JISR_TRUSTED_PROXIES": "127.0.0.1",
                "JISR_ISSUERS_FILE": str(tmp_path / "issuers.json"),
                "JISR_RATE_LIMITS": "sign_in.address=3/minute"}  # fmt: skip
    caddy_env = {"JISR_SITE": site, "JISR_UPSTREAMS": f"127.0.0.1:{jisr_port}",
                 "JISR_CADDY_TLS": "internal", "JISR_CADDY_ADMIN": "off",
                 "JISR_CADDY_HTTP_PORT": str(free_port())}  # fmt: skip
    try:
        with jisr(tmp_path, jisr_env) as node, caddy(tmp_path, ROOT / "deploy/Caddyfile",
                                                      caddy_env) as proxy:  # fmt: skip
            wait_for(f"http://127.0.0.1:{jisr_port}/healthz", node, tmp_path / "jisr.log")
            unverified = ssl._create_unverified_context()  # only to know Caddy is up
            wait_for(site + "/healthz", proxy, tmp_path / "caddy.log", unverified)
            root = tmp_path / "data/caddy/pki/authorities/local/root.crt"  # Caddy's own CA
            await through_caddy(site, ssl.create_default_context(cafile=str(root)))
    finally:
        provider.stop()


async def through_caddy(site: str, context: ssl.SSLContext) -> None:
    async with browser("127.0.0.2", context) as http:
        async with http.get(site + "/index.html") as page:
            assert page.status == 200
            assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
        set_by_jisr = SimpleCookie()
        for line in await sign_in(http, site):
            set_by_jisr.load(line)
        for name in ("jisr_signin", "jisr_session"):  # Jisr saw https: both are Secure
            assert set_by_jisr[name]["secure"] is True, set_by_jisr[name]
        async with http.get(site + "/api/me") as me:
            assert me.status == 200 and (await me.json())["name"] == "Dr Amal"
        # The session cookie rides on a WebSocket through Caddy; Jisr checks the page's
        # Origin against its own, https://127.0.0.1:<Caddy's port>.
        async with http.ws_connect(site.replace("https", "wss") + "/ws",
                                   origin=site) as ws:  # fmt: skip
            await ws.send_json({"type": "auth"})
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
            await ws.send_json({"type": "ping", "ref": "through-caddy"})
            assert await ws.receive_json(timeout=10) == {"type": "pong", "ref": "through-caddy"}
        # Refused tokens count against the client's address, whatever it claims (Caddy
        # replaces X-Forwarded-*, and drops Forwarded).
        forged = [f"198.51.100.{i}" for i in range(5)]
        assert await refused_tokens(http, site, *forged) == [401, 401, 401, 429, 429]
        async with http.get(site + "/api/me", headers={"Forwarded": "for=198.51.100.9",
                            "Authorization": "Bearer not-a-token"}) as answer:  # fmt: skip
            assert answer.status == 429
    async with browser("127.0.0.3", context) as neighbour:  # not Caddy's address: not held
        assert await refused_tokens(neighbour, site, "198.51.100.1") == [401]
