"""Settings from ``JISR_*`` environment variables, validated once at start."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .issuers import load_issuers
from .model import Urgency
from .proxies import parse_networks
from .ratelimit import parse_limits
from .tls import check_certificate, check_key, server_context

DEFAULT_SPECIALTIES = (
    "cardiology",
    "cardiac-surgery",
    "neurology",
    "neurosurgery",
    "intensive-care",
    "radiology",
    "pediatrics",
    "trauma-surgery",
)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JISR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # HTTPS served here: a PEM certificate (chain) and its unencrypted key, both or
    # neither (without them: plain HTTP, for loopback or behind a reverse proxy).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Reverse proxies whose Forwarded / X-Forwarded-* headers are believed: addresses
    # or networks (empty: none; every client is its socket's address).
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Redis shared by the nodes: one server by URL, or the master Sentinel names
    # (deploy/README.md). The password is best kept in a file (not in the URL).
    redis_url: str | None = Field(None, repr=False)
    redis_sentinels: Annotated[list[str], NoDecode] = []  # host:port,host:port
    redis_sentinel_master: str = "jisr"
    redis_username: str | None = None  # the ACL user (or user@ in the URL)
    redis_password_file: Path | None = None
    redis_tls: bool = False  # with Sentinel (a URL says rediss:// instead)
    redis_ca_file: Path | None = None  # the CA that signed Redis's certificate
    redis_cert_file: Path | None = None  # a client certificate, if Redis asks for one
    redis_key_file: Path | None = None
    redis_sentinel_username: str | None = None
    redis_sentinel_password_file: Path | None = None
    # Nodes sharing Redis sign their node-map entries and their requests to each
    # other with this secret (required with Redis); the file form is preferred.
    cluster_secret: str | None = Field(None, repr=False)
    cluster_secret_file: Path | None = None
    # The internal listener serves TLS with this certificate (internal URLs become
    # https://); other nodes check it against JISR_INTERNAL_CA_FILE.
    internal_tls_cert_file: Path | None = None
    internal_tls_key_file: Path | None = None
    internal_ca_file: Path | None = None
    # Ended consults and sessions are forgotten by the store this long after they end.
    state_retention_days: float = Field(30, gt=0, le=3650)
    # Where other nodes reach this one for signaling (a private, routable address).
    internal_host: str = "127.0.0.1"
    # Its port (what the other node's firewall lets through). Workers of `jisr serve
    # --workers N` take this port plus their index. 0: a port the system picks.
    internal_port: int = Field(0, ge=0, le=65535)
    node_id: str | None = None

    # JWT verification: HS256 with a shared secret, or RS256/ES256 with a public key.
    jwt_secret: str | None = Field(None, repr=False)
    jwt_public_key_file: Path | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    jwt_audience: str = "jisr"
    jwt_issuer: str = "jisr-dev"
    jwt_leeway_s: float = Field(10, ge=0, le=300)
    # The shorthand issuer's organisation (JISR_JWT_*: the demo's development tokens).
    organisation: str = Field("local", pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    # Each organisation's identity provider: a TOML or JSON file (docs/identity.md).
    issuers_file: Path | None = None
    # An issuer's JWKS is fetched again for an unknown key id at most this often.
    jwks_refetch_s: float = Field(30, gt=0, le=3600)

    # Addresses the media peers gather ICE host candidates on (empty: every interface
    # but loopback, aioice's default). Tests and single-host demos use 127.0.0.1.
    ice_addresses: Annotated[list[str], NoDecode] = []
    # The one UDP port every media peer of a node shares, on each of those addresses
    # (what a firewall opens). Workers of `jisr serve --workers N` take this port plus
    # their index. 0: a port the system picks, for each node and each address.
    media_udp_port: int = Field(7882, ge=0, le=65535)
    specialties: Annotated[list[str], NoDecode] = list(DEFAULT_SPECIALTIES)

    # Video bitrate ceilings (bits/s) the server asks publishers to stay under:
    # one for every leg, and lower ones for facilities on constrained links
    # ("hospital-b=600000,clinic-c=300000").
    max_video_bitrate: int = Field(2_500_000, ge=100_000, le=50_000_000)
    facility_video_bitrate: Annotated[dict[str, int], NoDecode] = {}
    # ICE servers handed to pages: stun:/turn:/turns: URLs; TURN credentials follow the
    # TURN REST scheme coturn checks with use-auth-secret, short-lived.
    turn_urls: Annotated[list[str], NoDecode] = []
    turn_secret: str | None = Field(None, repr=False)
    turn_ttl_s: int = Field(600, ge=60, le=86400)
    # "relay": pages send media only through the TURN servers above (a site that must
    # not expose its addresses, or whose firewall lets only TURN over TLS out).
    ice_transport_policy: Literal["all", "relay"] = "all"
    # Triage: how long each urgency may wait before escalation (half-way it is
    # announced again), and whom a specialty escalates to ("cardiology=dr-a|dr-b;...").
    deadline_critical_s: float = Field(Urgency.CRITICAL.default_deadline_s, gt=0)
    deadline_urgent_s: float = Field(Urgency.URGENT.default_deadline_s, gt=0)
    deadline_routine_s: float = Field(Urgency.ROUTINE.default_deadline_s, gt=0)
    escalation: Annotated[dict[str, list[str]], NoDecode] = {}
    triage_tick_s: float = Field(0.5, gt=0, le=3600)  # how often a node checks deadlines
    # Recording: off unless a master key file is given (jisr recordings init-key FILE).
    recording_key: Path | None = None
    # Retired master keys still accepted for unwrapping while a rotation finishes
    # (`jisr recordings rotate-key`); new keys are always wrapped by recording_key.
    recording_old_keys: Annotated[list[Path], NoDecode] = []
    recordings_dir: Path = Path("var/recordings")
    recording_segment_s: float = Field(10, ge=1, le=300)
    recording_retention_days: int = Field(365, ge=1, le=36500)
    # Every recording's segments authenticated this often, in a worker thread (0: never;
    # see docs/recordings.md); the events `jisr recordings` commands journalled go into
    # this node's audit log this often.
    recording_verify_interval_s: float = Field(86400, ge=0, le=366 * 86400)
    recording_trail_relay_s: float = Field(10, gt=0, le=3600)
    attachments_dir: Path = Path("var/attachments")
    # The data folder: the embedded record store (records.db) and each node's outbox
    # journal (outbox/) live under it.
    data_dir: Path = Path("var")
    # The record store (consults, reports, indexes, the audit trail): sqlite:///PATH
    # or postgresql://USER@HOST:PORT/DB (several nodes); default the SQLite file
    # under the data folder. It is on when the master key is (it seals what people
    # wrote with data keys of the keyring).
    records_url: str | None = Field(None, repr=False)
    records_password_file: Path | None = None  # PostgreSQL's password, kept out of the URL
    # How long records are kept after their consult ended: consults with their
    # history and reports; case-packet files (attachments).
    records_retention_days: int = Field(3650, ge=1, le=36500)
    attachment_retention_days: int = Field(3650, ge=1, le=36500)
    records_retention_check_s: float = Field(3600, gt=0, le=86400)
    # The hospital's FHIR server: each finished consult's Bundle is PUT there (through
    # a durable outbox), with the bearer token in the file, if given.
    fhir_push_url: str | None = None
    fhir_push_token_file: Path | None = None
    # Moves the clock consults, reports and audit entries are dated by (not the
    # tokens', nor the cluster's): to show and test consults from the past. 0 in
    # production.
    clock_offset_s: float = Field(0, ge=-3650 * 86400, le=3650 * 86400)
    max_attachment_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=500 * 1024 * 1024)
    max_message_bytes: int = Field(65536, ge=1024, le=10 * 1024 * 1024)
    max_observers: int = Field(8, ge=0, le=100)
    # How long a dropped participant keeps their place (shown as reconnecting).
    reconnect_grace_s: float = Field(60, ge=0, le=3600)
    node_heartbeat_s: float = Field(5, gt=0, le=300)
    # A connection that sends no complete request (idle, or stalled in its headers)
    # is closed after this long; a request body that stops arriving, after the next.
    http_idle_timeout_s: float = Field(75, gt=0, le=3600)
    # Rate limits: overrides of signaling.ratelimit.DEFAULT_LIMITS
    # ("chat.user=60/minute;consult.address=200/minute").
    rate_limits: Annotated[dict[str, str], NoDecode] = {}
    max_attachments_per_consult: int = Field(50, ge=1, le=10_000)
    max_waiting_per_referrer: int = Field(20, ge=1, le=10_000)
    max_sessions_per_node: int = Field(200, ge=1, le=100_000)
    # How long a sign-in on the pages lasts (its provider tokens refreshed meanwhile).
    session_lifetime_s: int = Field(12 * 3600, ge=300, le=30 * 86400)
    # Tokens living longer than this are refused, whoever signed them.
    max_token_lifetime_s: int = Field(12 * 3600, ge=60, le=30 * 86400)
    request_body_timeout_s: float = Field(30, gt=0, le=3600)
    web_dir: Path = Path(__file__).resolve().parent.parent / "web"

    _split = field_validator(
        "jwt_algorithms",
        "ice_addresses",
        "specialties",
        "turn_urls",
        "recording_old_keys",
        "trusted_proxies",
        "redis_sentinels",
        mode="before",
    )(_split_csv)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator("tls_cert_file")
    @classmethod
    def _tls_certificate(cls, value: Path | None) -> Path | None:
        if value is not None:
            check_certificate(value)
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _tls_key(cls, value: Path | None) -> Path | None:
        if value is not None:
            check_key(value)
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        cert, key = self.tls_cert_file, self.tls_key_file
        if (cert is None) != (key is None):
            raise ValueError("JISR_TLS_CERT_FILE and JISR_TLS_KEY_FILE go together: give both")
        if cert is not None and key is not None:
            server_context(cert, key)  # ValueError: the key is another certificate's
        return self

    @field_validator("facility_video_bitrate", mode="before")
    @classmethod
    def _facility_caps(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        caps = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            facility, _, bitrate = item.partition("=")
            if not facility or not bitrate.strip().isdigit():
                raise ValueError(f"{item!r} is not facility=bits_per_second")
            caps[facility.strip()] = int(bitrate)
        return caps

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _rate_limits(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [item.partition("=") for item in value.split(";") if item.strip()]
            value = {name.strip(): limit.strip() for name, _, limit in pairs}
        parse_limits(value)  # type: ignore[arg-type]
        return value

    @field_validator("escalation", mode="before")
    @classmethod
    def _escalation_lists(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        lists = {}
        for item in filter(None, (part.strip() for part in value.split(";"))):
            specialty, _, subs = item.partition("=")
            people = [p.strip() for p in subs.split("|") if p.strip()]
            if not specialty.strip() or not people:
                raise ValueError(f"{item!r} is not specialty=sub|sub")
            lists[specialty.strip()] = people
        return lists

    def deadlines(self) -> dict[Urgency, float]:
        return {urgency: getattr(self, f"deadline_{urgency}_s") for urgency in Urgency}

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"HS256", "RS256", "ES256"}
        unknown = [a for a in value if a not in allowed]
        if unknown or not value:
            raise ValueError(f"must be a comma-separated subset of {sorted(allowed)}")
        return value

    @field_validator("ice_addresses")
    @classmethod
    def _ip_addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address") from None
        return value

    @field_validator("turn_urls")
    @classmethod
    def _ice_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        return value

    @field_validator("records_url")
    @classmethod
    def _records_url(cls, value: str | None) -> str | None:
        from .records.database import database_url

        if value:
            database_url(value)  # ValueError: not a database Jisr can keep records in
        return value or None

    def records_database(self) -> str:
        from .records.database import sqlite_url

        return self.records_url or sqlite_url(self.data_dir.resolve() / "records.db")

    @field_validator("fhir_push_url")
    @classmethod
    def _fhir_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be the http:// or https:// base URL of a FHIR server")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("redis_sentinels")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item!r} is not host:port")
        return value

    @field_validator(
        "redis_password_file", "redis_sentinel_password_file", "cluster_secret_file",
        "fhir_push_token_file", "records_password_file",
    )
    @classmethod
    def _secret_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_secret_file(value)
        return value

    @field_validator("issuers_file")
    @classmethod
    def _issuers(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_issuers(value)  # IssuersError: one line per bad entry
        return value

    @field_validator(
        "jwt_public_key_file", "recording_key", "redis_ca_file", "redis_cert_file",
        "redis_key_file", "internal_tls_cert_file", "internal_tls_key_file", "internal_ca_file",
    )  # fmt: skip
    @classmethod
    def _readable_key(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("recording_old_keys")
    @classmethod
    def _readable_old_keys(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.is_file():
                raise ValueError(f"no such file: {path}")
        return value

    @model_validator(mode="after")
    def _keys_for_algorithms(self) -> Settings:
        if any(u.startswith("turn") for u in self.turn_urls) and not self.turn_secret:
            raise ValueError("JISR_TURN_SECRET is required for turn: URLs")
        if self.ice_transport_policy == "relay" and not any(
            u.startswith("turn") for u in self.turn_urls
        ):
            raise ValueError("JISR_ICE_TRANSPORT_POLICY=relay needs turn: or turns: URLs")
        shorthand = self.issuers_file is None or self.jwt_secret or self.jwt_public_key_file
        if shorthand and "HS256" in self.jwt_algorithms and not self.jwt_secret:
            raise ValueError("JISR_JWT_SECRET is required for HS256 (or give JISR_ISSUERS_FILE)")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ValueError("JISR_JWT_SECRET must be at least 32 characters")
        asymmetric = {"RS256", "ES256"} & set(self.jwt_algorithms)
        if self.recording_old_keys and self.recording_key is None:
            raise ValueError("JISR_RECORDING_OLD_KEYS needs JISR_RECORDING_KEY, the current key")
        if shorthand and asymmetric and self.jwt_public_key_file is None:
            raise ValueError(f"JISR_JWT_PUBLIC_KEY_FILE is required for {sorted(asymmetric)}")
        check_redis(self)
        check_cluster(self)
        return self

    @property
    def uses_redis(self) -> bool:
        """Nodes share state through Redis (one server, or through Sentinel)."""
        return bool(self.redis_url or self.redis_sentinels)

    def cluster_secret_value(self) -> str | None:
        if self.cluster_secret_file is not None:
            return read_secret_file(self.cluster_secret_file)
        return self.cluster_secret

    def public_key(self) -> str | None:
        return self.jwt_public_key_file.read_text() if self.jwt_public_key_file else None


def read_secret_file(path: Path) -> str:
    """A secret kept in a file (its one line, without the newline)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


def check_redis(settings: Settings) -> None:
    """Redis settings that only make sense together."""
    url = urlsplit(settings.redis_url or "")
    if settings.redis_url and settings.redis_sentinels:
        raise ValueError("give JISR_REDIS_URL or JISR_REDIS_SENTINELS, not both")
    tls = url.scheme == "rediss" or (settings.redis_tls and not settings.redis_url)
    if settings.redis_tls and settings.redis_url and url.scheme != "rediss":
        raise ValueError("JISR_REDIS_TLS with a URL: write it rediss://")
    files = (settings.redis_ca_file, settings.redis_cert_file, settings.redis_key_file)
    if any(files) and not tls:
        raise ValueError("JISR_REDIS_CA/CERT/KEY_FILE need TLS (rediss://, or JISR_REDIS_TLS)")
    if (settings.redis_cert_file is None) != (settings.redis_key_file is None):
        raise ValueError("JISR_REDIS_CERT_FILE and JISR_REDIS_KEY_FILE go together")
    if settings.redis_password_file and url.password:
        raise ValueError("a password in JISR_REDIS_URL and JISR_REDIS_PASSWORD_FILE: give one")
    if settings.redis_username and url.username:
        raise ValueError("a user in JISR_REDIS_URL and JISR_REDIS_USERNAME: give one")


def check_cluster(settings: Settings) -> None:
    """Nodes sharing Redis must prove themselves to each other."""
    if settings.cluster_secret and settings.cluster_secret_file:
        raise ValueError("give JISR_CLUSTER_SECRET or JISR_CLUSTER_SECRET_FILE, not both")
    secret = settings.cluster_secret_value()
    if settings.uses_redis and secret is None:
        raise ValueError(
            "JISR_CLUSTER_SECRET_FILE (or JISR_CLUSTER_SECRET) is required with Redis: nodes "
            "sign their node-map entries and their requests to each other with it"
        )
    if secret is not None and len(secret) < 32:
        raise ValueError("the cluster secret must be at least 32 characters")
    tls = (settings.internal_tls_cert_file, settings.internal_tls_key_file)
    if (tls[0] is None) != (tls[1] is None):
        raise ValueError("JISR_INTERNAL_TLS_CERT_FILE and JISR_INTERNAL_TLS_KEY_FILE go together")


class SettingsError(Exception):
    """Bad configuration; the message lists one line per bad value."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = error["loc"]
            name = f"JISR_{str(loc[0]).upper()}" if loc else "settings"
            lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
