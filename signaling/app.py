"""``create_app(settings)``: one node of Jisr (signaling, media and web pages)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from aiohttp import ClientSession, web

from media import MediaNode, restrict_host_addresses
from recordings.crypto import load_master_key
from recordings.keyring import Keyring
from recordings.storage import FileStorage
from recordings.vault import Vault

from .api import routes
from .attachments import CasePacket, UploadCut
from .auth import TokenVerifier
from .consults import Clock, ConsultService
from .errors import ApiError, store_unavailable
from .keys import (
    AUDIT,
    CASE_PACKET,
    CONSULTS,
    HTTP_CLIENT,
    HUB,
    INTERNAL_URL,
    MEDIA,
    NODE_ID,
    RECORDING,
    SETTINGS,
    STORE,
    TRIAGE,
    VAULT,
    VERIFIER,
)
from .logs import Audit, get_logger
from .recording import RecordingService
from .settings import Settings
from .store import Store, StoreError, StoreUnavailable, make_store
from .triage import Triage
from .ws import Hub, websocket

log = get_logger()

SHUTDOWN_STEP_S = 5.0

HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}

# Pages may load only their own scripts and styles, and talk only to this origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
        "connect-src 'self' ws: wss:; frame-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self)",
}


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except StoreUnavailable as exc:
        log.warning("store.unavailable", path=request.path, error=str(exc))
        return web.json_response(store_unavailable().body(), status=503)
    except (UploadCut, ConnectionResetError) as exc:
        # The client went away mid-request: nobody is left to answer, nothing is kept.
        log.info("http.client_gone", path=request.path, method=request.method,
                 error=type(exc).__name__)  # fmt: skip
        return web.json_response(
            ApiError(400, "incomplete_request", "the request ended early").body(), status=400
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        return web.json_response(ApiError(exc.status, code, exc.reason).body(), status=exc.status)
    except Exception:
        request_id = secrets.token_hex(6)
        log.exception("http.internal_error", path=request.path, request_id=request_id)
        return web.json_response(
            ApiError(500, "internal", f"internal error (request {request_id})").body(), status=500
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/index.html")


async def unknown_api(request: web.Request) -> web.StreamResponse:
    raise ApiError(404, "not_found", f"no such endpoint: {request.method} {request.path}")


async def _heartbeat(app: web.Application) -> None:
    settings, store, node_id = app[SETTINGS], app[STORE], app[NODE_ID]
    while True:
        info = {
            "node": node_id,
            "internal_url": app[INTERNAL_URL],
            "sessions": app[MEDIA].stats()["sessions"],
        }
        try:
            await store.register_node(node_id, info, ttl_s=3 * settings.node_heartbeat_s)
            await app[CONSULTS].watch_nodes()
            await app[RECORDING].persist_unsaved()
        except StoreError as exc:  # the heartbeat must go on whatever the store says
            log.warning("node.heartbeat_failed", node=node_id, error=str(exc))
        await asyncio.sleep(settings.node_heartbeat_s)


async def _lifecycle(app: web.Application):
    store = app[STORE]
    await store.start()
    app[HTTP_CLIENT] = ClientSession()
    await _interrupted_recordings(app)
    await _check_keyring(app)
    tasks = [
        asyncio.ensure_future(app[HUB].pump()),
        asyncio.ensure_future(_heartbeat(app)),
        asyncio.ensure_future(_retention(app)),
        asyncio.ensure_future(app[TRIAGE].run()),
    ]
    log.info("node.started", node=app[NODE_ID])
    yield
    for task in tasks:
        task.cancel()
    app[RECORDING].close()  # recordings in progress end complete, not interrupted
    for ws_conn in list(app[HUB].connections.values()):
        with contextlib.suppress(Exception):
            await ws_conn.ws.close(code=1001, message=b"server shutdown")
    await app[MEDIA].close()
    # Shutdown is bounded: a store or task that does not let go must not keep the
    # node (or a test) from stopping.
    with contextlib.suppress(StoreUnavailable, TimeoutError):
        await asyncio.wait_for(store.remove_node(app[NODE_ID]), SHUTDOWN_STEP_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(store.close(), SHUTDOWN_STEP_S)
    await app[HTTP_CLIENT].close()
    log.info("node.stopped", node=app[NODE_ID])
    await asyncio.wait(tasks, timeout=SHUTDOWN_STEP_S)


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


def open_case_packet(settings: Settings, store, audit, keyring: Keyring | None) -> CasePacket:
    storage = None
    if keyring is not None:
        settings.attachments_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        storage = FileStorage(settings.attachments_dir)
    return CasePacket(store, storage, keyring, audit, max_bytes=settings.max_attachment_bytes)


async def _retention(app: web.Application) -> None:
    """Recordings older than the retention period are crypto-shredded, hourly."""
    vault, settings = app[VAULT], app[SETTINGS]
    while vault is not None:
        try:
            await asyncio.to_thread(
                vault.purge_older_than, settings.recording_retention_days,
                audit=app[AUDIT].recording_event, by="retention",
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - retention must never take the node down
            log.exception("recordings.purge_failed")
        await asyncio.sleep(3600)


async def _check_keyring(app: web.Application) -> None:
    """A rotation left unfinished shows at start: keys not yet under this node's
    master key still need ``jisr recordings rotate-key``."""
    vault = app[VAULT]
    if vault is None:
        return
    try:
        stale = await asyncio.to_thread(vault.keyring.stale)
    except Exception:  # noqa: BLE001 - a garbled key must not keep a node down
        log.exception("keyring.check_failed")
        return
    if any(stale.values()):
        log.warning("keyring.rotation_unfinished", keys_not_under_master=stale)


async def _interrupted_recordings(app: web.Application) -> None:
    """Recordings still marked as recording whose node is gone were cut short."""
    vault = app[VAULT]
    if vault is None:
        return
    try:
        nodes = await app[STORE].list_nodes()
    except StoreUnavailable:
        return
    live = {n for n in nodes if n != app[NODE_ID]}

    def is_live(recording_id: str) -> bool:
        return vault.get(recording_id).get("node") in live

    try:
        marked = await asyncio.to_thread(vault.mark_interrupted_stale, is_live)
    except Exception:  # noqa: BLE001 - an unreadable recording must not keep a node down
        log.exception("recordings.check_failed")
        return
    if marked:
        log.warning("recordings.interrupted", recordings=marked)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    node_id: str | None = None,
    internal_url: str | None = None,
    vault: Vault | None = None,
) -> web.Application:
    """One node. ``internal_url`` is where other nodes reach it (default: its own
    host and port)."""
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=settings.max_message_bytes
    )
    node = node_id or settings.node_id or "n_" + secrets.token_hex(4)
    app[SETTINGS] = settings
    app[NODE_ID] = node
    app[INTERNAL_URL] = internal_url or f"http://{settings.host}:{settings.port}"
    app[STORE] = (
        store
        if store is not None
        else make_store(settings.redis_url, retention_s=settings.state_retention_days * 86400)
    )
    app[VERIFIER] = TokenVerifier(settings)
    app[AUDIT] = Audit(node)
    service_kwargs = {"clock": clock} if clock else {}
    app[TRIAGE] = Triage(
        app[STORE], app[AUDIT], deadlines=settings.deadlines(), escalation=settings.escalation,
        tick_s=settings.triage_tick_s, **service_kwargs,
    )  # fmt: skip
    app[CONSULTS] = ConsultService(
        app[STORE], app[AUDIT], node_id=node, specialties=settings.specialties,
        triage=app[TRIAGE], **service_kwargs,
    )  # fmt: skip
    hub = Hub(app)
    app[HUB] = hub
    restrict_host_addresses(settings.ice_addresses)
    app[MEDIA] = MediaNode(on_state=hub.on_media_state, max_bitrate=settings.max_video_bitrate)
    keyring = vault.keyring if vault is not None else open_keyring(settings)
    if vault is None and keyring is not None:
        vault = open_vault(settings, keyring)
    app[VAULT] = vault
    app[CASE_PACKET] = open_case_packet(settings, app[STORE], app[AUDIT], keyring)
    app[RECORDING] = RecordingService(
        vault, app[MEDIA], app[AUDIT], segment_s=settings.recording_segment_s, node_id=node,
        store=app[STORE],
    )  # fmt: skip

    app.router.add_routes(routes)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", index)
    app.router.add_route("*", "/api/{tail:.*}", unknown_api)  # never fall through to files
    if settings.web_dir.is_dir():
        app.router.add_static("/", settings.web_dir, follow_symlinks=False)
    app.cleanup_ctx.append(_lifecycle)
    return app
