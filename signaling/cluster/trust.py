"""Nodes prove themselves to each other with the cluster secret (HMAC-SHA256).

Whoever can write to Redis could otherwise add a node to the node map and be sent
new sessions, and the bearer tokens carried to it. So each node signs its entry
(its id, internal URL, load, capacity and an expiry); an entry whose signature
does not hold is never placed on, proxied to or located, and is logged once as
``cluster.forged_entry``. A request one node makes of another (the signaling
proxy, ``ask_host``) carries a header signed over its method, path, time, a nonce
and the calling node's id; it is good for a few seconds, once.
"""

from __future__ import annotations

import hmac
import secrets
import ssl
import time
from collections.abc import Callable
from hashlib import sha256
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ApiError
from ..logs import get_logger
from ..model import NodeInfo, replace

if TYPE_CHECKING:
    from ..settings import Settings

HEADER = "X-Jisr-Cluster"
REQUEST_WINDOW_S = 10.0  # a signed request is good this long either side of its time
CLOCK_SKEW_S = 5.0  # a node-map entry is still trusted this long past its expiry
MAX_REMEMBERED = 100_000  # forged entries logged, nonces seen: bounded


class ClusterAuthError(Exception):
    """A node-to-node request without a valid signature; ``reason`` is a code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cluster_refused() -> ApiError:
    return ApiError(403, "cluster_auth", "node-to-node requests must be signed by a node")


class Trust:
    def __init__(
        self,
        secret: str,
        node_id: str,
        *,
        clock: Callable[[], float] = time.time,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        """``client_ssl``: how this node checks other nodes' certificates (their
        internal URLs are https://); None: the system's CAs."""
        self._key = secret.encode()
        self.node_id = node_id
        self.clock = clock
        self.client_ssl = client_ssl
        self._seen: dict[str, float] = {}  # nonce -> when it may be forgotten
        self._logged: set[str] = set()  # node ids of forged entries already logged

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "\n".join(parts).encode(), sha256).hexdigest()

    # node-map entries ---------------------------------------------------------------
    def _entry_mac(self, info: NodeInfo) -> str:
        fields = [info.node, info.internal_url, info.sessions, info.capacity, info.expires]
        return self._mac("jisr-node-v1", msgspec.json.encode(fields).decode())

    def sign(self, info: NodeInfo, ttl_s: float) -> NodeInfo:
        """The entry to register, good for ``ttl_s`` from now."""
        unsigned = replace(info, expires=int((self.clock() + ttl_s) * 1000), signature="")
        return replace(unsigned, signature=self._entry_mac(unsigned))

    def check_entry(self, key: str, raw: dict[str, Any]) -> NodeInfo | str:
        """The entry stored under node id ``key``, or why it is not trusted."""
        if not isinstance(raw, dict):
            return "malformed"
        try:
            info = msgspec.convert({"node": key, **raw}, NodeInfo)
        except msgspec.ValidationError:
            return "malformed"
        if not info.signature:
            return "unsigned"
        if not hmac.compare_digest(info.signature, self._entry_mac(info)):
            return "bad_signature"
        if info.node != key:
            return "mismatched_id"
        if info.expires / 1000 + CLOCK_SKEW_S < self.clock():
            return "expired"  # an old entry written again
        return info

    def trusted(self, entries: dict[str, dict[str, Any]]) -> dict[str, NodeInfo]:
        """The entries of the node map that hold; each other one is logged once."""
        nodes = {}
        for key, raw in entries.items():
            checked = self.check_entry(key, raw)
            if isinstance(checked, NodeInfo):
                nodes[key] = checked
            elif key not in self._logged:
                if len(self._logged) >= MAX_REMEMBERED:
                    self._logged.clear()
                self._logged.add(key)
                get_logger().warning("cluster.forged_entry", node=key, reason=checked)
        return nodes

    # node-to-node requests ----------------------------------------------------------
    def _request_mac(self, method: str, path: str, node: str, ts: str, nonce: str) -> str:
        return self._mac("jisr-request-v1", method.upper(), path, node, ts, nonce)

    def headers(self, method: str, path: str) -> dict[str, str]:
        """The header that signs this node's ``method path`` request."""
        ts, nonce = str(int(self.clock() * 1000)), secrets.token_hex(12)
        sig = self._request_mac(method, path, self.node_id, ts, nonce)
        return {HEADER: f"v1;node={self.node_id};ts={ts};nonce={nonce};sig={sig}"}

    def check_request(self, method: str, path: str, header: str | None) -> str:
        """The calling node's id; ClusterAuthError when the header is missing, bad,
        out of its time window or seen before."""
        if not header:
            raise ClusterAuthError("missing")
        version, *items = header.split(";")
        fields = dict(item.partition("=")[::2] for item in items)
        node, ts, nonce, sig = (fields.get(k, "") for k in ("node", "ts", "nonce", "sig"))
        if version != "v1" or not (node and ts.isdigit() and nonce and sig):
            raise ClusterAuthError("malformed")
        now = self.clock()
        if abs(now - int(ts) / 1000) > REQUEST_WINDOW_S:
            raise ClusterAuthError("expired")
        if not hmac.compare_digest(sig, self._request_mac(method, path, node, ts, nonce)):
            raise ClusterAuthError("bad_signature")
        if nonce in self._seen:
            raise ClusterAuthError("replayed")
        if len(self._seen) >= MAX_REMEMBERED:  # forget the nonces past their window
            self._seen = {n: until for n, until in self._seen.items() if until > now}
            if len(self._seen) >= MAX_REMEMBERED:
                raise ClusterAuthError("busy")  # more signed requests than a window holds
        self._seen[nonce] = int(ts) / 1000 + REQUEST_WINDOW_S
        return node


def open_trust(settings: Settings, node_id: str) -> Trust | None:
    """The node's trust, or None without a cluster secret (a node alone)."""
    secret = settings.cluster_secret_value()
    if secret is None:
        return None
    client_ssl = None
    if settings.internal_ca_file is not None:
        client_ssl = ssl.create_default_context(cafile=str(settings.internal_ca_file))
    return Trust(secret, node_id, client_ssl=client_ssl)


def server_ssl(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the internal listener, when it has a certificate."""
    if settings.internal_tls_cert_file is None or settings.internal_tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.internal_tls_cert_file, settings.internal_tls_key_file)
    return context
