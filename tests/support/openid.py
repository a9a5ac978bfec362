"""Real OpenID providers for the tests: ``oidc-provider`` (npm) run with the
machine's Node.js, one process per organisation, each with its own users, claims
and signing keys (``tests/support/oidc/provider.mjs``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.redis_server import free_port

HERE = Path(__file__).parent / "oidc"
TESTER = "api-tester"  # a client the tests use to get tokens as an API caller would
TESTER_REDIRECT = "http://127.0.0.1:9/back"


def signing_key(kid: str) -> dict:
    jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def node_ready() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not installed (Debian: apt-get install nodejs npm)", pytrace=False)
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("run `npm ci` in tests/support/oidc (scripts/test.sh does)", pytrace=False)


class OpenIdProvider:
    """One organisation's provider on a free port of 127.0.0.1."""

    def __init__(self, folder: Path, organisation: str, users: dict, redirect_uris: list[str],
                 post_logout_uris: list[str], id_token_ttl: int | None = None) -> None:  # fmt: skip
        node_ready()
        self.id_token_ttl = id_token_ttl  # seconds; the provider's default is 600
        self.folder, self.organisation, self.users = folder, organisation, users
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_secret = secrets.token_urlsafe(24)
        self.keys = [signing_key(f"{organisation}-1")]
        self.redirect_uris, self.post_logout_uris = redirect_uris, post_logout_uris
        self.process: subprocess.Popen | None = None
        (folder / f"{organisation}.secret").write_text(self.client_secret)

    @property
    def secret_file(self) -> Path:
        return self.folder / f"{self.organisation}.secret"

    def config(self) -> dict:
        client = {"grant_types": ["authorization_code", "refresh_token"],
                  "response_types": ["code"], "id_token_signed_response_alg": "ES256"}  # fmt: skip
        return {
            "issuer": self.issuer, "port": self.port, "users": self.users, "keys": self.keys,
            "idTokenTtl": self.id_token_ttl,
            "clients": [
                {**client, "client_id": "jisr", "client_secret": self.client_secret,
                 "redirect_uris": self.redirect_uris,
                 "post_logout_redirect_uris": self.post_logout_uris},
                {**client, "client_id": TESTER, "client_secret": self.client_secret,
                 "redirect_uris": [TESTER_REDIRECT]},
            ],
        }  # fmt: skip

    def start(self) -> None:
        path = self.folder / f"{self.organisation}.json"
        path.write_text(json.dumps(self.config()))
        self.process = subprocess.Popen(
            ["node", str(HERE / "provider.mjs"), str(path)], cwd=HERE,
            stdout=subprocess.PIPE, stderr=(self.folder / f"{self.organisation}.log").open("a"),
            text=True,
        )  # fmt: skip
        line = self.process.stdout.readline()  # it says so once it listens
        assert "provider.started" in line, f"the provider did not start: {line!r}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def rotate_key(self) -> None:
        """A new signing key; the old one stays published for tokens it signed."""
        self.keys = [signing_key(f"{self.organisation}-{len(self.keys) + 1}"), *self.keys]
        self.stop()
        self.start()

    async def revoke(self, token: str, client_id: str = "jisr") -> None:
        """Revokes a token at the provider (RFC 7009), as its administrators would."""
        auth = {"Authorization": aiohttp.encode_basic_auth(client_id, self.client_secret)}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.issuer}/token/revocation", data={"token": token},
                                 headers=auth) as answer:  # fmt: skip
                assert answer.status == 200, await answer.text()

    def issuer_entry(self, **extra) -> dict:
        """This organisation as Jisr's issuers file lists it."""
        roles = ["referrer", "specialist", "supervisor", "admin"]
        return {
            "organisation": self.organisation, "name": self.organisation.upper(),
            "issuer": self.issuer, "roles": roles, "client_id": "jisr",
            "client_secret_file": str(self.secret_file), **extra,
        }  # fmt: skip

    async def tokens(self, login: str, password: str | None = None) -> dict:
        """Signs ``login`` in on the provider's own login form, as an API caller's
        client would, and returns its tokens (access token for Jisr, ID token)."""
        verifier = secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode({
            "client_id": TESTER, "response_type": "code", "scope": "openid profile jisr",
            "redirect_uri": TESTER_REDIRECT, "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256", "resource": "urn:jisr", "nonce": "n",
        })  # fmt: skip
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            code = await self._sign_in(http, f"{self.issuer}/auth?{query}", login,
                                       password or self.users[login]["password"])  # fmt: skip
            form = {"grant_type": "authorization_code", "code": code, "resource": "urn:jisr",
                    "redirect_uri": TESTER_REDIRECT, "code_verifier": verifier}  # fmt: skip
            auth = {"Authorization": aiohttp.encode_basic_auth(TESTER, self.client_secret)}
            async with http.post(f"{self.issuer}/token", data=form, headers=auth) as answer:
                assert answer.status == 200, await answer.text()
                return await answer.json()

    async def _sign_in(self, http, url: str, login: str, password: str) -> str:
        """Follows the provider's pages to the redirect that carries the code."""
        for _ in range(10):
            async with http.get(url, allow_redirects=False) as answer:
                location = answer.headers.get("Location")
                if location is None:  # the login form
                    form_url = url.rstrip("/") + "/login"
                    async with http.post(form_url, data={"login": login, "password": password},
                                         allow_redirects=False) as sent:  # fmt: skip
                        location = sent.headers["Location"]
            if location.startswith(TESTER_REDIRECT):
                return urllib.parse.parse_qs(urllib.parse.urlparse(location).query)["code"][0]
            url = urllib.parse.urljoin(url, location)
        raise AssertionError("the provider never sent the code back")


async def wait_until_listening(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"{url} did not answer"
            await asyncio.sleep(0.05)  # polling the starting provider, bounded
