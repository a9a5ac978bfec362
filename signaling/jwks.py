"""Where an issuer's signing keys come from: a shared secret or a PEM file (one site),
or its JWKS, found through OpenID discovery or at a URL, kept by ``kid``.

A JWKS is fetched when a token names a key not yet known (at most once per
``REFETCH_MIN_S``, so forged ``kid``s cannot make Jisr hammer a provider) and when it
is older than ``MAX_AGE_S``; a provider that cannot be reached leaves the keys
already fetched in use, so tokens they verify keep working.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import jwt
from aiohttp import ClientError, ClientSession, ClientTimeout

from .errors import ApiError
from .logs import get_logger

log = get_logger()
MAX_AGE_S = 3600.0
REFETCH_MIN_S = 30.0
FETCH_TIMEOUT_S = 5.0


def unknown_key() -> ApiError:
    return ApiError(401, "token_invalid", "the token is signed by a key its issuer does not list")


class KeySource(Protocol):
    async def key_for(self, header: dict[str, Any]) -> Any:
        """The key that verifies a token with this header; ApiError if none does."""
        ...

    async def close(self) -> None: ...


class StaticKey:
    """A shared secret (HS256, development) or a PEM public key (one site)."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def key_for(self, header: dict[str, Any]) -> Any:
        return self.key

    async def close(self) -> None:
        return None


class JwksKeys:
    def __init__(
        self, issuer: str, location: str, *, refetch_s: float = REFETCH_MIN_S,
        clock=time.monotonic,
    ) -> None:
        """``location``: "discovery" (the issuer's OpenID configuration names the
        JWKS) or the JWKS URL itself; ``refetch_s``: the least time between fetches."""
        self.issuer = issuer.rstrip("/")
        self.location = location
        self.clock = clock
        self.keys: dict[str | None, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.refetch_s = refetch_s
        self.tried_at = -refetch_s
        self._lock = asyncio.Lock()
        self._http: ClientSession | None = None
        self.discovery: dict[str, Any] | None = None

    async def key_for(self, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        stale = self.fetched_at is None or self.clock() - self.fetched_at > MAX_AGE_S
        if stale or kid not in self.keys:
            await self.refresh()
        if kid in self.keys:
            return self.keys[kid]
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        raise unknown_key()

    async def refresh(self) -> None:
        async with self._lock:
            if self.clock() - self.tried_at < self.refetch_s:
                return
            self.tried_at = self.clock()
            try:
                jwks = await self.fetch_json(await self.jwks_url())
                keys = jwt.PyJWKSet.from_dict(jwks).keys
            except (ClientError, TimeoutError, ValueError, KeyError, jwt.PyJWTError) as exc:
                log.warning("issuer.keys_unreachable", issuer=self.issuer,
                            error_type=type(exc).__name__)  # fmt: skip
                return
            self.keys = {key.key_id: key for key in keys}
            self.fetched_at = self.clock()
            log.info("issuer.keys_fetched", issuer=self.issuer, count=len(self.keys))

    async def jwks_url(self) -> str:
        if self.location != "discovery":
            return self.location
        return (await self.configuration())["jwks_uri"]

    async def configuration(self, fresh: bool = False) -> dict[str, Any]:
        """The issuer's OpenID configuration (it names its endpoints): kept once
        fetched; ``fresh`` fetches it again (a sign-in checks the provider is up)."""
        if self.discovery is None or fresh:
            found = await self.fetch_json(self.issuer + "/.well-known/openid-configuration")
            if found.get("issuer", "").rstrip("/") != self.issuer:
                raise ValueError("the discovery document names another issuer")
            self.discovery = found
        return self.discovery

    async def fetch_json(self, url: str) -> dict[str, Any]:
        if self._http is None:
            self._http = ClientSession(timeout=ClientTimeout(total=FETCH_TIMEOUT_S))
        async with self._http.get(url) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
