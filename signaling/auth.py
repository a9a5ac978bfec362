"""JWT verification and development token minting (PyJWT)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

import jwt

from .errors import ApiError
from .model import Person
from .settings import Settings

ROLES = ("referrer", "specialist", "supervisor", "admin")
REQUIRED_CLAIMS = ["sub", "role", "exp", "iat", "iss", "aud"]


@dataclass(frozen=True)
class Principal:
    sub: str
    name: str
    role: str
    facility: str | None = None
    specialties: tuple[str, ...] = field(default_factory=tuple)
    token_id: str = ""  # the token's jti (or its hash): what signing out revokes
    expires_at: float = 0.0  # the token's exp

    @property
    def sees_everything(self) -> bool:
        return self.role in ("supervisor", "admin")

    def public(self) -> dict:
        return {
            "sub": self.sub,
            "name": self.name,
            "role": self.role,
            "facility": self.facility,
            "specialties": list(self.specialties),
        }

    def ref(self) -> dict:
        return {"sub": self.sub, "name": self.name}

    def person(self) -> Person:
        """Who this is, as a record keeps it."""
        return Person(sub=self.sub, name=self.name)


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._algorithms = settings.jwt_algorithms
        self._secret = settings.jwt_secret
        self._public_key = settings.public_key()
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_s
        self.max_lifetime = settings.max_token_lifetime_s

    def _key_for(self, token: str) -> str:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise ApiError(401, "token_invalid", "the token is malformed") from None
        if alg not in self._algorithms:
            raise ApiError(401, "token_invalid", "the token's algorithm is not accepted")
        key = self._secret if alg == "HS256" else self._public_key
        if not key:
            raise ApiError(401, "token_invalid", "the token's algorithm is not accepted")
        return key

    def verify(self, token: object) -> Principal:
        if not isinstance(token, str) or not token:
            raise ApiError(401, "unauthenticated", "a bearer token is required")
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "token_expired", "the token has expired; sign in again") from None
        except jwt.PyJWTError as exc:
            raise ApiError(401, "token_invalid", f"the token was refused: {exc}") from None
        if claims["exp"] - claims["iat"] > self.max_lifetime + self._leeway:
            raise ApiError(
                401, "token_invalid",
                f"the token lives longer than the {self.max_lifetime} s this server accepts",
            )  # fmt: skip
        role = claims.get("role")
        if role not in ROLES:
            raise ApiError(401, "token_invalid", "the token carries no known role")
        specialties = claims.get("specialties") or []
        if not isinstance(specialties, list) or not all(isinstance(s, str) for s in specialties):
            raise ApiError(401, "token_invalid", "specialties must be a list of strings")
        facility = claims.get("facility")
        if role == "referrer" and not facility:
            raise ApiError(401, "token_invalid", "a referrer token must name its facility")
        return Principal(
            sub=str(claims["sub"]),
            name=str(claims.get("name") or claims["sub"]),
            role=role,
            facility=str(facility) if facility else None,
            specialties=tuple(specialties),
            token_id=str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest()[:32]),
            expires_at=float(claims["exp"]),
        )


def mint_token(
    settings: Settings,
    *,
    role: str,
    sub: str,
    name: str | None = None,
    facility: str | None = None,
    specialties: list[str] | None = None,
    ttl_s: int = 12 * 3600,
    private_key: str | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A development token; production tokens come from the identity system."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": sub,
        "name": name or sub,
        "role": role,
        "iat": issued,
        "exp": issued + ttl_s,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": secrets.token_urlsafe(16),
    }
    if facility:
        claims["facility"] = facility
    if specialties:
        claims["specialties"] = specialties
    key = private_key if algorithm != "HS256" else settings.jwt_secret
    return jwt.encode(claims, key, algorithm=algorithm)
