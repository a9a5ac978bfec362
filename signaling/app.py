"""``create_app(settings)``: one node of Jisr (signaling, media and web pages)."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from media import MediaNode, restrict_host_addresses
from recordings.crypto import load_master_key
from recordings.keyring import Keyring, Shelf
from recordings.storage import FileStorage
from recordings.vault import Vault

from .api import routes
from .attachments import CasePacket
from .auth import TokenVerifier
from .cluster import Cluster, LocalCluster, RedisCluster, open_trust
from .consults import Clock, ConsultService
from .errors import ApiError
from .fhir_api import routes as fhir_routes
from .hub import Hub
from .identity import Identity
from .keys import (
    AUDIT,
    CASE_PACKET,
    CLUSTER,
    CONSULTS,
    HUB,
    IDENTITY,
    INTERNAL_ADDRESS,
    INTERNAL_URL,
    LIMITS,
    MEDIA,
    NODE_ID,
    READS,
    RECORDING,
    RECORDING_CHECKS,
    RECORDS,
    SETTINGS,
    SIGNIN,
    STORE,
    TRIAGE,
    TRUST,
    VAULT,
    VERIFIER,
)
from .lifecycle import lifecycle
from .logs import Audit
from .middleware import cluster_middleware, errors_middleware
from .proxies import forwarded_middleware, parse_networks
from .ratelimit import RateLimits
from .reads import ReadLedger
from .recording import RecordingService
from .recordings_api import routes as recording_routes
from .records.service import Records
from .records_api import routes as records_routes
from .settings import Settings, read_secret_file
from .signin import SignIn
from .signin import routes as signin_routes
from .store import LiveState, RedisStore, Store, make_store
from .store.connect import from_settings as redis_config
from .tls import strict_transport
from .triage import Triage
from .verification import RecordingChecks
from .websocket import websocket

# The keyring's shelf for the web sessions' sealing key: <attachments>/signin/signin.key
# (recordings/cli.py rotates it with the rest).
SIGNIN_SHELF, SIGNIN_OWNER, SIGNIN_KEY_OBJECT = "signin", "signin", "signin.key"


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/index.html")


async def unknown_api(request: web.Request) -> web.StreamResponse:
    raise ApiError(404, "not_found", f"no such endpoint: {request.method} {request.path}")


def open_keyring(settings: Settings) -> Keyring | None:
    """The node's one keyring (None without a master key): recordings and
    attachments add their shelves to it, and a key rotation rewraps them all."""
    if settings.recording_key is None:
        return None
    return Keyring(
        load_master_key(settings.recording_key),
        retired=[load_master_key(path) for path in settings.recording_old_keys],
    )


def open_vault(settings: Settings, keyring: Keyring) -> Vault:
    settings.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Vault(FileStorage(settings.recordings_dir), keyring)


def open_case_packet(
    settings: Settings, state: LiveState, audit: Audit, keyring: Keyring | None
) -> CasePacket:
    storage = None
    if keyring is not None:
        settings.attachments_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        storage = FileStorage(settings.attachments_dir)
    return CasePacket(
        state, storage, keyring, audit, max_bytes=settings.max_attachment_bytes,
        max_files=settings.max_attachments_per_consult,
    )  # fmt: skip


def consult_routing(verifier: TokenVerifier) -> dict[str, list[str]]:
    """Each organisation's consults go to the specialists of those its issuer names
    (``consults_to``), else of its own."""
    return {
        i.config.organisation: i.config.consults_to or [i.config.organisation]
        for i in verifier.issuers
    }


def shifted(clock: Clock, offset_s: float) -> Clock:
    """The consults' clock moved by ``offset_s`` (JISR_CLOCK_OFFSET_S)."""
    return lambda: clock() + offset_s


def open_cluster(app: web.Application, backend: Store, clock: Clock) -> Cluster:
    """Several nodes when they share Redis; otherwise this node alone."""
    def hosted() -> int:
        return app[MEDIA].stats()["sessions"]

    capacity = app[SETTINGS].max_sessions_per_node
    if not isinstance(backend, RedisStore):
        return LocalCluster(app[NODE_ID], app[STORE], hosted=hosted, capacity=capacity)
    trust = app[TRUST]
    if trust is None:  # settings with a Redis URL ask for it; a store given directly too
        raise ValueError("nodes sharing Redis need a cluster secret (JISR_CLUSTER_SECRET_FILE)")
    return RedisCluster(
        app[STORE], app[AUDIT], node_id=app[NODE_ID], internal_url=app[INTERNAL_URL],
        hosted=hosted, capacity=capacity, heartbeat_s=app[SETTINGS].node_heartbeat_s,
        clock=clock, trust=trust,
    )  # fmt: skip


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    node_id: str | None = None,
    internal_url: str | None = None,
    internal_address: tuple | None = None,
    vault: Vault | None = None,
) -> web.Application:
    """One node. ``store``: the live-state backend (default from the settings);
    ``internal_url``: where other nodes reach it (default: its own host and port);
    ``internal_address``: the socket address of its internal listener, where only
    signed node-to-node requests are answered (None: no separate listener)."""
    middlewares = [errors_middleware, cluster_middleware]
    if settings.trusted_proxies:  # outermost: every handler sees the client's side
        middlewares.insert(0, forwarded_middleware(parse_networks(settings.trusted_proxies)))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_message_bytes)
    app.on_response_prepare.append(strict_transport)
    node = node_id or settings.node_id or "n_" + secrets.token_hex(4)
    clock = clock or time.time
    wall = clock  # the cluster's heartbeats compare node clocks: never shifted
    if settings.clock_offset_s:
        clock = shifted(clock, settings.clock_offset_s)
    retention_s = settings.state_retention_days * 86400
    redis = redis_config(settings)
    backend = store if store is not None else make_store(redis, retention_s)
    app[SETTINGS], app[NODE_ID] = settings, node
    app[INTERNAL_URL] = internal_url or f"http://{settings.host}:{settings.port}"
    app[INTERNAL_ADDRESS], app[TRUST] = internal_address, open_trust(settings, node)
    app[STORE] = LiveState(backend)
    app[VERIFIER] = TokenVerifier(settings)
    app[LIMITS] = RateLimits.open(settings.rate_limits, redis)
    app[IDENTITY] = Identity(app[VERIFIER], app[LIMITS], app[STORE])
    app[AUDIT] = Audit(node)
    app[READS] = ReadLedger()
    app[CLUSTER] = open_cluster(app, backend, wall)
    app[TRIAGE] = Triage(
        app[STORE], app[AUDIT], deadlines=settings.deadlines(), escalation=settings.escalation,
        tick_s=settings.triage_tick_s, clock=clock,
    )  # fmt: skip
    app[CONSULTS] = ConsultService(
        app[STORE], app[AUDIT], place_session=app[CLUSTER].place_session,
        specialties=settings.specialties, triage=app[TRIAGE], clock=clock,
        max_waiting=settings.max_waiting_per_referrer, routing=consult_routing(app[VERIFIER]),
    )  # fmt: skip
    app[HUB] = Hub(app)
    restrict_host_addresses(settings.ice_addresses)
    app[MEDIA] = MediaNode(
        on_state=app[HUB].on_media_state, on_layers=app[HUB].on_media_layers,
        max_bitrate=settings.max_video_bitrate,
        udp_port=settings.media_udp_port,
    )  # fmt: skip
    add_records(app, settings, vault)
    add_routes(app, settings)
    app.cleanup_ctx.append(lifecycle)
    return app


def open_signin(settings: Settings, keyring: Keyring | None, verifier: TokenVerifier) -> SignIn:
    """Provider tokens of web sessions are sealed with a data key of the node's
    keyring, kept beside the attachments' (without a keyring they are not kept: a
    session ends with its provider tokens)."""
    sealing_key = None
    if keyring is not None and any(i.config.client_id for i in verifier.issuers):
        if SIGNIN_SHELF not in keyring.kinds:
            storage = FileStorage(settings.attachments_dir)
            keyring.add_shelf(Shelf(SIGNIN_SHELF, storage, SIGNIN_KEY_OBJECT))
        has = keyring.has(SIGNIN_SHELF, SIGNIN_OWNER)
        sealing_key = (keyring.data_key if has else keyring.create)(SIGNIN_SHELF, SIGNIN_OWNER)
    return SignIn(sealing_key, settings.session_lifetime_s)


def add_records(app: web.Application, settings: Settings, vault: Vault | None) -> None:
    """Recordings and attachments, sharing the node's one keyring."""
    keyring = vault.keyring if vault is not None else open_keyring(settings)
    if vault is None and keyring is not None:
        vault = open_vault(settings, keyring)
    app[VAULT] = vault
    app[RECORDS] = open_records(app, settings, keyring)
    app[CASE_PACKET] = open_case_packet(settings, app[STORE], app[AUDIT], keyring)
    app[RECORDING] = RecordingService(
        vault, app[MEDIA], app[AUDIT], segment_s=settings.recording_segment_s,
        node_id=app[NODE_ID], store=app[STORE],
    )  # fmt: skip
    if app[RECORDS] is not None:
        app[RECORDING].indexer = app[RECORDS].recording_indexed
    app[SIGNIN] = open_signin(settings, keyring, app[VERIFIER])
    app[RECORDING_CHECKS] = RecordingChecks(
        vault, app[AUDIT], app[TRIAGE].metrics.registry,
        interval_s=settings.recording_verify_interval_s,
        relay_s=settings.recording_trail_relay_s,
    )  # fmt: skip


def open_records(app: web.Application, settings: Settings, keyring: Keyring | None
                 ) -> Records | None:  # fmt: skip
    """The record store, fed by every consult change and audit event of this node
    (None without a master key: what people wrote is kept only sealed)."""
    if keyring is None:
        return None
    push, password_file = None, settings.records_password_file
    if settings.fhir_push_url:
        token_file = settings.fhir_push_token_file
        push = (settings.fhir_push_url, read_secret_file(token_file) if token_file else None)
    records = Records(
        settings.records_database(), keyring, node=app[NODE_ID],
        outbox_dir=settings.data_dir / "outbox", clock=app[CONSULTS].clock, fhir_push=push,
        password=read_secret_file(password_file) if password_file else None,
    )  # fmt: skip
    app[STORE].consult_observers.append(records.consult_changed)
    app[AUDIT].add_sink(records.audit)
    records.register_metrics(app[TRIAGE].metrics.registry)
    return records


def add_routes(app: web.Application, settings: Settings) -> None:
    app.router.add_routes(routes)
    app.router.add_routes(recording_routes)
    app.router.add_routes(signin_routes)
    app.router.add_routes(records_routes)
    app.router.add_routes(fhir_routes)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", index)
    # never fall through to files, whatever the rest of the path holds (newlines too)
    app.router.add_route("*", r"/api/{tail:[\s\S]*}", unknown_api)
    if settings.web_dir.is_dir():
        app.router.add_static("/", settings.web_dir, follow_symlinks=False)
