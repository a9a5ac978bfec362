"""Short-lived TURN credentials (the "TURN REST API" scheme coturn checks with
``use-auth-secret`` / ``static-auth-secret``) and the ``RTCIceServer`` list a page
passes to ``RTCPeerConnection``.

The username is ``"<expiry>:<user>"`` (expiry in seconds since the Unix epoch) and
the password is ``base64(HMAC-SHA1(secret, username))``; coturn recomputes the
password from its copy of the secret and refuses the username once its expiry has
passed. Nothing here is stored: every credential is derived on demand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

TURN_SCHEMES = ("turn:", "turns:")
STUN_SCHEMES = ("stun:", "stuns:")


def turn_credentials(secret: str, user: str, ttl_s: int, now: float) -> tuple[str, str]:
    """``(username, password)`` valid until ``int(now) + ttl_s``."""
    if not secret:
        raise ValueError("the TURN secret is empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    username = f"{int(now) + int(ttl_s)}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(
    urls: list[str], secret: str | None, user: str, ttl_s: int, now: float
) -> list[dict]:
    """``RTCIceServer`` dictionaries for a browser: one for the STUN URLs (no
    credentials) and one for the TURN URLs (with fresh credentials). TURN URLs are
    left out when there is no secret, since a browser cannot use them without one.
    Empty when there are no URLs."""
    stun = [url for url in urls if url.lower().startswith(STUN_SCHEMES)]
    turn = [url for url in urls if url.lower().startswith(TURN_SCHEMES)]
    unknown = [url for url in urls if url not in stun and url not in turn]
    if unknown:
        raise ValueError(f"not a stun:, stuns:, turn: or turns: URL: {unknown[0]!r}")
    servers: list[dict] = []
    if stun:
        servers.append({"urls": stun})
    if turn and secret:
        username, credential = turn_credentials(secret, user, ttl_s, now)
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers
