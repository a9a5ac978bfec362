"""Trusted issuers: each organisation's identity provider, and how its tokens' claims
become a Jisr identity.

``JISR_ISSUERS_FILE`` (TOML or JSON) lists them; ``JISR_JWT_*`` is a one-issuer
shorthand (the demo's and the tests' development tokens). An identity is namespaced
by its organisation: ``sub`` and ``facility`` of a file issuer are written
``<organisation>/<value>``, so two organisations' people and places never collide.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import msgspec

ROLES = ("referrer", "specialist", "supervisor", "admin")
ASYMMETRIC = ("RS256", "ES256", "PS256", "EdDSA")  # what a provider signs with
ORGANISATION = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class ClaimMap(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which claims of the issuer's tokens hold what Jisr needs."""

    role: str = "jisr_role"  # a claim holding one of ROLES
    groups: str | None = "groups"  # or a claim holding group names...
    group_roles: dict[str, str] = {}  # ...mapped to roles (the first that matches wins)
    facility: str = "facility"
    specialties: str = "specialties"
    name: str = "name"


class IssuerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    organisation: str  # Jisr's name for the organisation: [a-z0-9-]
    name: str  # as shown on the sign-in page
    issuer: str  # the tokens' "iss", exactly
    roles: list[str]  # the roles this issuer may grant
    audience: str = "jisr"  # the "aud" of tokens API callers send
    keys: str = "discovery"  # "discovery" | a JWKS URL | a PEM public key file
    algorithms: list[str] = msgspec.field(default_factory=lambda: list(ASYMMETRIC))
    claims: ClaimMap = ClaimMap()
    # Organisations whose specialists see this organisation's consults (None: all).
    consults_to: list[str] | None = None
    # Signing in on the pages (authorization code with PKCE, confidential client).
    client_id: str | None = None
    client_secret_file: str | None = None
    namespace: bool = True  # False only for the one-issuer shorthand

    def local_id(self, value: str) -> str:
        return f"{self.organisation}/{value}" if self.namespace else value


class IssuersError(ValueError):
    """The issuers file is unusable; the message has one line per problem."""


def _problems(entry: IssuerConfig) -> list[str]:
    where = f"issuer {entry.organisation!r}"
    problems = []
    if not ORGANISATION.fullmatch(entry.organisation):
        problems.append(f"{where}: organisation must be lower-case letters, digits and -")
    if not entry.issuer.startswith(("https://", "http://")):
        problems.append(f"{where}: issuer must be an http(s) URL")
    if not entry.roles or set(entry.roles) - set(ROLES):
        problems.append(f"{where}: roles must be some of {', '.join(ROLES)}")
    if bad := set(entry.claims.group_roles.values()) - set(ROLES):
        problems.append(f"{where}: group_roles map to unknown roles {sorted(bad)}")
    if entry.keys not in ("discovery",) and not entry.keys.startswith(("https://", "http://")):
        if not Path(entry.keys).is_file():
            problems.append(f"{where}: keys must be discovery, a JWKS URL or a PEM file")
    if (entry.client_id is None) != (entry.client_secret_file is None):
        problems.append(f"{where}: client_id and client_secret_file go together")
    elif entry.client_secret_file and not Path(entry.client_secret_file).is_file():
        problems.append(f"{where}: no such file {entry.client_secret_file}")
    return problems


def load_issuers(path: Path) -> list[IssuerConfig]:
    """The issuers of a TOML (``[[issuer]]`` tables) or JSON (``{"issuer": [...]}``)
    file; IssuersError says what is wrong with each bad entry."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise IssuersError(f"cannot read {path}: {exc}") from None
    entries = raw.get("issuer") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise IssuersError(f"{path}: expected a list of issuers under 'issuer'")
    issuers, problems = [], []
    for n, item in enumerate(entries, 1):
        try:
            entry = msgspec.convert(item, IssuerConfig)
        except msgspec.ValidationError as exc:
            problems.append(f"issuer #{n}: {exc}")
            continue
        problems += _problems(entry)
        issuers.append(entry)
    for kind in ("organisation", "issuer"):
        seen = [getattr(i, kind) for i in issuers]
        twice = sorted({v for v in seen if seen.count(v) > 1})
        problems += [f"{kind} {v!r} is listed twice" for v in twice]
    if problems:
        raise IssuersError(f"{path}:\n  " + "\n  ".join(problems))
    return issuers
