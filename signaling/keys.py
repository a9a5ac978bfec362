"""App-scoped objects, one set per node (no module-level state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from media import MediaNode
    from recordings.vault import Vault

    from .attachments import CasePacket
    from .auth import TokenVerifier
    from .cluster import Cluster, Trust
    from .consults import ConsultService
    from .hub import Hub
    from .identity import Identity
    from .logs import Audit
    from .ratelimit import RateLimits
    from .reads import ReadLedger
    from .recording import RecordingService
    from .records.service import Records
    from .settings import Settings
    from .signin import SignIn
    from .store import LiveState
    from .triage import Triage
    from .verification import RecordingChecks

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[LiveState] = web.AppKey("store")
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster")
VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("verifier")
IDENTITY: web.AppKey[Identity] = web.AppKey("identity")
SIGNIN: web.AppKey[SignIn] = web.AppKey("signin")
LIMITS: web.AppKey[RateLimits] = web.AppKey("limits")
AUDIT: web.AppKey[Audit] = web.AppKey("audit")
CONSULTS: web.AppKey[ConsultService] = web.AppKey("consults")
MEDIA: web.AppKey[MediaNode] = web.AppKey("media")
HUB: web.AppKey[Hub] = web.AppKey("hub")
RECORDING: web.AppKey[RecordingService] = web.AppKey("recording")
TRIAGE: web.AppKey[Triage] = web.AppKey("triage")
CASE_PACKET: web.AppKey[CasePacket] = web.AppKey("case_packet")
VAULT: web.AppKey[Vault | None] = web.AppKey("vault")  # None: recording is not configured
RECORDING_CHECKS: web.AppKey[RecordingChecks] = web.AppKey("recording_checks")
# The record store (None: no master key, so no records kept beyond the live state).
RECORDS: web.AppKey[Records | None] = web.AppKey("records")
READS: web.AppKey[ReadLedger] = web.AppKey("reads")  # reads a list carries, audited once
NODE_ID: web.AppKey[str] = web.AppKey("node_id")
# How other nodes reach this one (node-to-node signaling proxy).
INTERNAL_URL: web.AppKey[str] = web.AppKey("internal_url")
# The internal listener's socket address (None: the node has no separate one), and
# the cluster secret's signer and checker (None: a node alone, without a secret).
INTERNAL_ADDRESS: web.AppKey[tuple | None] = web.AppKey("internal_address")
TRUST: web.AppKey[Trust | None] = web.AppKey("trust")
HTTP_CLIENT: web.AppKey[ClientSession] = web.AppKey("http_client")
