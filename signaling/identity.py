"""Who is calling: a bearer token verified, not signed out, from an address that
has not sent too many refused tokens. Used alike by HTTP requests and WebSocket
sign-ins."""

from __future__ import annotations

import time

from .auth import Principal, TokenVerifier
from .errors import ApiError
from .logs import get_logger
from .model import TokenRevoked
from .ratelimit import RateLimits
from .store import LiveState

log = get_logger()
MAX_REVOKED = 100_000


class Identity:
    def __init__(self, verifier: TokenVerifier, limits: RateLimits, state: LiveState) -> None:
        self.verifier = verifier
        self.limits = limits
        self.state = state
        # token id -> until: every node keeps the whole list (it is small: tokens
        # signed out before they expired), so checking one costs no store round trip.
        self.revoked: dict[str, float] = {}

    async def authenticate(self, token: object, address: str | None) -> Principal:
        self.limits.check_sign_in(address)
        try:
            who = await self.verifier.verify(token)
        except ApiError as exc:
            if exc.code == "token_invalid":  # forged or garbled: counts against the address
                await self.limits.sign_in_refused(address)
            raise
        self.check_not_revoked(who)
        return who

    def check_not_revoked(self, who: Principal) -> None:
        until = self.revoked.get(who.token_id)
        if until is not None and until > time.time():
            raise ApiError(401, "token_revoked", "this token was signed out; sign in again")

    async def sign_out(self, who: Principal) -> TokenRevoked:
        """Revoke ``who``'s token on every node until it would have expired."""
        event = TokenRevoked(token_id=who.token_id, until=who.expires_at)
        await self.state.revoke_token(who.token_id, max(1.0, who.expires_at - time.time()))
        self.remember(event)
        await self.state.publish(event)
        return event

    def remember(self, event: TokenRevoked) -> None:
        now = time.time()
        if len(self.revoked) >= MAX_REVOKED:
            self.revoked = {t: u for t, u in self.revoked.items() if u > now}
        self.revoked[event.token_id] = event.until

    async def load(self) -> None:
        """At start: the tokens other nodes revoked before this one was running."""
        for token_id in await self.state.list_revoked():
            self.revoked.setdefault(token_id, time.time() + self.verifier.max_lifetime)
