"""App-scoped objects, one set per node (no module-level state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from media import MediaNode

    from .attachments import CasePacket
    from .auth import TokenVerifier
    from .consults import ConsultService
    from .logs import Audit
    from .recording import RecordingService
    from .settings import Settings
    from .store import Store
    from .triage import Triage
    from .ws import Hub

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[Store] = web.AppKey("store")
VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("verifier")
AUDIT: web.AppKey[Audit] = web.AppKey("audit")
CONSULTS: web.AppKey[ConsultService] = web.AppKey("consults")
MEDIA: web.AppKey[MediaNode] = web.AppKey("media")
HUB: web.AppKey[Hub] = web.AppKey("hub")
RECORDING: web.AppKey[RecordingService] = web.AppKey("recording")
TRIAGE: web.AppKey[Triage] = web.AppKey("triage")
CASE_PACKET: web.AppKey[CasePacket] = web.AppKey("case_packet")
VAULT: web.AppKey[object] = web.AppKey("vault")  # recordings.vault.Vault, or None
NODE_ID: web.AppKey[str] = web.AppKey("node_id")
# How other nodes reach this one (node-to-node signaling proxy).
INTERNAL_URL: web.AppKey[str] = web.AppKey("internal_url")
HTTP_CLIENT: web.AppKey[ClientSession] = web.AppKey("http_client")
