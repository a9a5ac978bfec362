"""A web session keeps its provider's tokens fresh on the server: with ID tokens
that live 30 s, every use of the session refreshes them at the real provider
(oidc-provider); a provider that revokes the grant ends the session at its next use
(and its sockets); a provider that is down, or answers 5xx, does not end it."""

from __future__ import annotations

import json
import urllib.parse

import aiohttp
import pytest
import structlog
from aiohttp import web

from recordings.crypto import generate_key_file
from signaling import signin
from signaling.app import create_app
from signaling.keys import SIGNIN, STORE, VERIFIER
from signaling.signin import COOKIE, WebSession, session_id_key
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.redis_server import free_port
from tests.support.openid import OpenIdProvider

USERS = {"amal": {"password": "a-pass", "claims": {"name": "Dr Amal", "jisr_role": "referrer",
                                                   "facility": "ward-7"}}}  # fmt: skip


@pytest.fixture
async def signed_in(aiohttp_server, tmp_path):
    """A Jisr node trusting one provider whose ID tokens live 30 s, and a browser-like
    client signed in through the provider's login form."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = OpenIdProvider(tmp_path, "org-a", USERS, [f"{base}/auth/callback"],
                              [f"{base}/signin.html"], id_token_ttl=30)  # fmt: skip
    provider.start()
    (tmp_path / "issuers.json").write_text(json.dumps({"issuer": [provider.issuer_entry()]}))
    generate_key_file(tmp_path / "master.key")  # provider tokens are sealed with its keyring
    settings = make_settings(issuers_file=tmp_path / "issuers.json",
                             recording_key=tmp_path / "master.key",
                             attachments_dir=tmp_path / "files",
                             recordings_dir=tmp_path / "recordings")  # fmt: skip
    app = create_app(settings, store=MemoryStore())
    await aiohttp_server(app, port=port)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    await sign_in(browser, base, "amal")
    yield base, app, provider, browser
    await browser.close()
    provider.stop()


@pytest.fixture
def logs(monkeypatch) -> structlog.testing.LogCapture:
    """What the sign-in module logs (its own logger, whatever configured logging
    before and however it cached its loggers)."""
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(signin, "log", structlog.wrap_logger(None, processors=[capture]))
    return capture


async def sign_in(browser: aiohttp.ClientSession, base: str, login: str) -> None:
    url = f"{base}/auth/login?organisation=org-a&next=/referrer.html"
    for _ in range(12):
        async with browser.get(url, allow_redirects=False) as answer:
            location = answer.headers.get("Location")
            if location is None:  # the provider's login form
                async with browser.post(url.rstrip("/") + "/login", allow_redirects=False,
                                        data={"login": login, "password": "a-pass"}) as sent:
                    location = sent.headers["Location"]
        if location.startswith("/referrer.html"):
            return
        url = urllib.parse.urljoin(url, location)
    raise AssertionError("the sign-in never came back to Jisr")


async def session(app: web.Application, browser: aiohttp.ClientSession) -> WebSession:
    cookie = next(c.value for c in browser.cookie_jar if c.key == COOKIE)
    found = await app[STORE].get_secret("websession", session_id_key(cookie), WebSession)
    assert found is not None
    return found


async def me(browser: aiohttp.ClientSession, base: str) -> tuple[int, dict]:
    async with browser.get(f"{base}/api/me") as answer:
        return answer.status, await answer.json()


async def test_tokens_are_refreshed_and_a_revoked_grant_ends_the_session(signed_in, logs):
    base, app, provider, browser = signed_in
    first = await session(app, browser)
    status, body = await me(browser, base)
    assert status == 200 and body["sub"] == "org-a/amal"
    assert [e["event"] for e in logs.entries] == ["signin.refreshed"]
    second = await session(app, browser)
    assert second.id_token != first.id_token  # a new ID token, sealed again
    assert second.provider_expires_at >= first.provider_expires_at

    refresh_token = app[SIGNIN].unseal(second.refresh_token)
    assert refresh_token and refresh_token not in str(second)  # nothing readable kept
    await provider.revoke(refresh_token)
    status, body = await me(browser, base)
    assert status == 401 and body["error"]["code"] == "token_expired"
    cookie = next(c.value for c in browser.cookie_jar if c.key == COOKIE)
    assert await app[STORE].get_secret("websession", session_id_key(cookie), WebSession) is None
    status, body = await me(browser, base)  # and it stays ended
    assert status == 401 and body["error"]["code"] == "token_expired"


async def test_a_provider_that_is_down_does_not_end_the_session(signed_in, logs):
    base, app, provider, browser = signed_in
    provider.stop()
    status, body = await me(browser, base)
    assert status == 200 and body["sub"] == "org-a/amal"
    assert [e["event"] for e in logs.entries] == ["signin.refresh_unreachable"]


async def test_a_failing_token_endpoint_is_not_a_refusal(signed_in, aiohttp_server, logs):
    """A proxy in front of the provider answering 502 (HTML) leaves the user signed in."""
    base, app, provider, browser = signed_in

    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    proxy = web.Application()
    proxy.router.add_post("/token", bad_gateway)
    failing = await aiohttp_server(proxy)
    # the provider's discovery now names the failing proxy's token endpoint
    issuer_keys = app[VERIFIER].by_organisation["org-a"].keys
    configuration = await issuer_keys.configuration()
    configuration["token_endpoint"] = str(failing.make_url("/token"))
    status, _ = await me(browser, base)
    assert status == 200
    assert [e["event"] for e in logs.entries] == ["signin.refresh_unreachable"]
    assert logs.entries[0]["error_type"] == "ProviderUnavailable"
