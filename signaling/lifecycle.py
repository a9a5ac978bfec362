"""A node's life: what starts with it, the loops that run while it serves (event
pump, heartbeat, retention, triage, verification of recordings and the relay of
commands' audit events), and a bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import ClientSession, web

from .keys import (
    AUDIT,
    CASE_PACKET,
    CLUSTER,
    CONSULTS,
    HTTP_CLIENT,
    HUB,
    IDENTITY,
    LIMITS,
    MEDIA,
    NODE_ID,
    RECORDING,
    RECORDING_CHECKS,
    RECORDS,
    SETTINGS,
    SIGNIN,
    STORE,
    TRIAGE,
    VAULT,
    VERIFIER,
)
from .logs import get_logger
from .records.retention import purge
from .store import StoreError, StoreUnavailable

log = get_logger()
SHUTDOWN_STEP_S = 5.0


async def heartbeat(app: web.Application) -> None:
    settings = app[SETTINGS]
    while True:
        try:
            await app[CLUSTER].heartbeat()
            await app[RECORDING].persist_unsaved()
        except StoreError as exc:  # the heartbeat must go on whatever the store says
            log.warning("node.heartbeat_failed", node=app[NODE_ID], error=str(exc))
        await asyncio.sleep(settings.node_heartbeat_s)


async def lifecycle(app: web.Application):
    await app[MEDIA].listen()  # a media port already in use stops the node here
    store = app[STORE]
    await store.start()
    if app[RECORDS] is not None:
        await app[RECORDS].start()
    app[HTTP_CLIENT] = ClientSession()
    with contextlib.suppress(StoreUnavailable):
        await app[IDENTITY].load()
    await interrupted_recordings(app)
    await check_keyring(app)
    tasks = [
        asyncio.ensure_future(app[HUB].pump()),
        asyncio.ensure_future(heartbeat(app)),
        asyncio.ensure_future(retention(app)),
        asyncio.ensure_future(records_retention(app)),
        asyncio.ensure_future(app[TRIAGE].run()),
        asyncio.ensure_future(app[RECORDING_CHECKS].verify_loop()),
        asyncio.ensure_future(app[RECORDING_CHECKS].relay_loop()),
    ]
    log.info("node.started", node=app[NODE_ID])
    yield
    for task in tasks:
        task.cancel()
    await shut_down(app)
    await asyncio.wait(tasks, timeout=SHUTDOWN_STEP_S)


async def shut_down(app: web.Application) -> None:
    app[RECORDING].close()  # recordings in progress end complete, not interrupted
    for ws_conn in list(app[HUB].connections.values()):
        with contextlib.suppress(Exception):
            await ws_conn.ws.close(code=1001, message=b"server shutdown")
    await app[MEDIA].close()
    # Shutdown is bounded: a store or task that does not let go must not keep the
    # node (or a test) from stopping.
    with contextlib.suppress(StoreUnavailable, TimeoutError):
        await asyncio.wait_for(app[CLUSTER].leave(), SHUTDOWN_STEP_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[STORE].close(), SHUTDOWN_STEP_S)
    if app[RECORDS] is not None:  # what it could not apply stays in its journal
        await app[RECORDS].close(drain_s=SHUTDOWN_STEP_S / 2)
    await app[HTTP_CLIENT].close()
    await app[LIMITS].close()
    await app[VERIFIER].close()
    await app[SIGNIN].close()
    log.info("node.stopped", node=app[NODE_ID])


async def retention(app: web.Application) -> None:
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


async def records_retention(app: web.Application) -> None:
    """Records past their retention are deleted and crypto-shredded (by kind)."""
    records, settings = app[RECORDS], app[SETTINGS]
    packet = app[CASE_PACKET]
    shred = packet.shred if packet.storage is not None else None
    while records is not None:
        await asyncio.sleep(settings.records_retention_check_s)
        try:
            purged = await purge(
                records, now=app[CONSULTS].clock(), records_days=settings.records_retention_days,
                attachment_days=settings.attachment_retention_days, shred_attachment=shred,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - retention must never take the node down
            log.exception("records.purge_failed")
            continue
        if purged.consults or purged.attachments:
            log.info("records.purged", count=len(purged.consults),
                     attachments=len(purged.attachments))  # fmt: skip


async def check_keyring(app: web.Application) -> None:
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


async def interrupted_recordings(app: web.Application) -> None:
    """Recordings still marked as recording whose node is gone were cut short; each
    is audited as ``recording.interrupted`` (and journalled with the recording)."""
    vault = app[VAULT]
    if vault is None:
        return
    try:
        nodes = await app[CLUSTER].live_nodes()
    except StoreUnavailable:
        return
    live = {n for n in nodes if n != app[NODE_ID]}

    def is_live(recording_id: str) -> bool:
        try:
            return vault.get(recording_id).get("node") in live
        except Exception:  # noqa: BLE001 - unreadable: mark_interrupted_stale says why
            return False

    try:
        marked = await asyncio.to_thread(
            vault.mark_interrupted_stale, is_live, audit=app[AUDIT].recording_event,
            reason="writer_lost",
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - an unreadable recording must not keep a node down
        log.exception("recordings.check_failed")
        return
    if marked:
        log.warning("recordings.interrupted", recordings=marked)


