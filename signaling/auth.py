"""Who a token says its bearer is: verification against every trusted issuer
(PyJWT; keys from ``jwks``), the claim mapping, and development token minting."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from .errors import ApiError
from .issuers import ROLES, ClaimMap, IssuerConfig, load_issuers
from .jwks import JwksKeys, KeySource, StaticKey
from .model import Person
from .settings import Settings

REQUIRED_CLAIMS = ["sub", "exp", "iat", "iss", "aud"]


@dataclass(frozen=True)
class Principal:
    sub: str
    name: str
    role: str
    facility: str | None = None
    specialties: tuple[str, ...] = field(default_factory=tuple)
    token_id: str = ""  # the token's jti (or its hash): what signing out revokes
    expires_at: float = 0.0  # the token's exp
    organisation: str = "local"  # whose identity provider vouches for this person

    @property
    def is_overseer(self) -> bool:
        """A supervisor or admin: oversees their organisation."""
        return self.role in ("supervisor", "admin")

    def public(self) -> dict:
        return {
            "sub": self.sub,
            "name": self.name,
            "role": self.role,
            "facility": self.facility,
            "specialties": list(self.specialties),
            "organisation": self.organisation,
        }

    def ref(self) -> dict:
        return {"sub": self.sub, "name": self.name}

    def person(self) -> Person:
        """Who this is, as a record keeps it."""
        return Person(sub=self.sub, name=self.name)


class ShorthandKeys:
    """The one-issuer shorthand's keys (``JISR_JWT_*``): the secret for HS256, the
    PEM public key for the others."""

    def __init__(self, settings: Settings) -> None:
        self.secret, self.public_key = settings.jwt_secret, settings.public_key()

    async def key_for(self, header: dict[str, Any]) -> Any:
        key = self.secret if header.get("alg") == "HS256" else self.public_key
        if not key:
            raise ApiError(401, "token_invalid", "the token's algorithm is not accepted")
        return key

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Issuer:
    config: IssuerConfig
    keys: KeySource


def trusted_issuers(settings: Settings) -> list[Issuer]:
    """The shorthand issuer (when a JWT secret or key is set), then the file's."""
    issuers = []
    if settings.jwt_secret or settings.jwt_public_key_file:
        shorthand = IssuerConfig(
            organisation=settings.organisation, name=settings.organisation,
            issuer=settings.jwt_issuer, roles=list(ROLES), audience=settings.jwt_audience,
            keys="shorthand", algorithms=list(settings.jwt_algorithms),
            claims=ClaimMap(role="role", groups=None), namespace=False,
        )  # fmt: skip
        issuers.append(Issuer(shorthand, ShorthandKeys(settings)))
    if settings.issuers_file is not None:
        for config in load_issuers(settings.issuers_file):
            if config.keys == "discovery" or config.keys.startswith(("https://", "http://")):
                keys: KeySource = JwksKeys(
                    config.issuer, config.keys, refetch_s=settings.jwks_refetch_s
                )
            else:
                keys = StaticKey(Path(config.keys).read_text())
            issuers.append(Issuer(config, keys))
    return issuers


def _claim_role(config: IssuerConfig, claims: dict[str, Any]) -> str:
    """The role a token's claims give, by the issuer's mapping and within what it
    may grant."""
    role = claims.get(config.claims.role)
    if role not in ROLES and config.claims.groups:
        groups = claims.get(config.claims.groups) or []
        role = next((config.claims.group_roles[g] for g in groups
                     if isinstance(g, str) and g in config.claims.group_roles), None)  # fmt: skip
    if role not in ROLES:
        raise ApiError(401, "token_invalid", "the token carries no known role")
    if role not in config.roles:
        raise ApiError(
            401, "token_invalid", f"{config.name} is not trusted to grant the role {role}"
        )
    return role


def principal_from(config: IssuerConfig, claims: dict[str, Any], token: str) -> Principal:
    """A verified token's identity, namespaced by its organisation."""
    role = _claim_role(config, claims)
    specialties = claims.get(config.claims.specialties) or []
    if not isinstance(specialties, list) or not all(isinstance(s, str) for s in specialties):
        raise ApiError(401, "token_invalid", "specialties must be a list of strings")
    facility = claims.get(config.claims.facility)
    if role == "referrer" and not facility:
        raise ApiError(401, "token_invalid", "a referrer token must name its facility")
    return Principal(
        sub=config.local_id(str(claims["sub"])),
        name=str(claims.get(config.claims.name) or claims["sub"]),
        role=role,
        facility=config.local_id(str(facility)) if facility else None,
        specialties=tuple(specialties),
        token_id=str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest()[:32]),
        expires_at=float(claims["exp"]),
        organisation=config.organisation,
    )


class TokenVerifier:
    """Bearer tokens of every trusted issuer, each checked against its own keys,
    audience and issuer."""

    def __init__(self, settings: Settings) -> None:
        self.issuers = trusted_issuers(settings)
        self.by_iss = {issuer.config.issuer: issuer for issuer in self.issuers}
        self.by_organisation = {issuer.config.organisation: issuer for issuer in self.issuers}
        self._leeway = settings.jwt_leeway_s
        self.max_lifetime = settings.max_token_lifetime_s

    def issuer_of(self, token: str) -> tuple[Issuer, dict[str, Any]]:
        """The trusted issuer a token claims to come from, and its header."""
        try:
            header = jwt.get_unverified_header(token)
            claimed = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise ApiError(401, "token_invalid", "the token is malformed") from None
        issuer = self.by_iss.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise ApiError(401, "token_invalid", "the token's issuer is not trusted here")
        if header.get("alg") not in issuer.config.algorithms:
            raise ApiError(401, "token_invalid", "the token's algorithm is not accepted")
        return issuer, header

    async def verify(self, token: object, *, audience: str | None = None) -> Principal:
        """``audience``: what ``aud`` must hold (default: the issuer's API audience;
        an ID token's is the client id)."""
        if not isinstance(token, str) or not token:
            raise ApiError(401, "unauthenticated", "a bearer token is required")
        issuer, header = self.issuer_of(token)
        claims = self.decode(token, issuer, await issuer.keys.key_for(header), audience)
        if claims["exp"] - claims["iat"] > self.max_lifetime + self._leeway:
            raise ApiError(
                401, "token_invalid",
                f"the token lives longer than the {self.max_lifetime} s this server accepts",
            )  # fmt: skip
        return principal_from(issuer.config, claims, token)

    def decode(self, token: str, issuer: Issuer, key: Any, audience: str | None) -> dict:
        config = issuer.config
        try:
            return jwt.decode(
                token, key, algorithms=config.algorithms, audience=audience or config.audience,
                issuer=config.issuer, leeway=self._leeway, options={"require": REQUIRED_CLAIMS},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "token_expired", "the token has expired; sign in again") from None
        except jwt.PyJWTError as exc:
            raise ApiError(401, "token_invalid", f"the token was refused: {exc}") from None

    async def close(self) -> None:
        for issuer in self.issuers:
            await issuer.keys.close()


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
