"""What every HTTP answer goes through: errors become coded JSON answers (a bug
gets a request id, never a traceback), and the pages' security headers are set."""

from __future__ import annotations

import secrets

from aiohttp import web

from .attachments import UploadCut
from .cluster import FORWARDED, HEADER, ClusterAuthError, cluster_refused
from .errors import ApiError, refused, store_unavailable
from .keys import INTERNAL_ADDRESS, TRUST
from .logs import get_logger
from .records.fhir import operation_outcome
from .store import StoreUnavailable, TransitionRefused

log = get_logger()

FHIR_JSON = "application/fhir+json"
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


def error_response(error: ApiError, fhir_api: bool = False) -> web.Response:
    """``fhir_api``: answered on a FHIR endpoint, as FHIR clients expect (an
    OperationOutcome, application/fhir+json)."""
    if fhir_api:
        outcome = operation_outcome(error.status, error.code, error.message)
        response = web.json_response(outcome, status=error.status, content_type=FHIR_JSON)
    else:
        response = web.json_response(error.body(), status=error.status)
    if "retry_after" in error.extra:
        response.headers["Retry-After"] = str(error.extra["retry_after"])
    if error.status in (408, 413):
        response.force_close()  # what the client still sends is not read
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except Exception as exc:  # noqa: BLE001 - every failure gets a coded answer
        error = api_error(request, exc)
        if error is None:
            raise
        response = error_response(error, request.path.startswith("/fhir/"))
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def api_error(request: web.Request, exc: Exception) -> ApiError | None:
    """The coded error a failure is answered with (None: not a failure, a redirect)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TransitionRefused):
        return refused(exc)
    if isinstance(exc, StoreUnavailable):
        log.warning("store.unavailable", path=request.path, error=str(exc))
        return store_unavailable()
    if isinstance(exc, (UploadCut, ConnectionResetError)):
        # The client went away mid-request: nobody is left to answer, nothing is kept.
        log.info("http.client_gone", path=request.path, method=request.method,
                 error=type(exc).__name__)  # fmt: skip
        return ApiError(400, "incomplete_request", "the request ended early")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        return ApiError(exc.status, HTTP_CODES.get(exc.status, "http_error"), exc.reason)
    request_id = secrets.token_hex(6)
    log.exception("http.internal_error", path=request.path, request_id=request_id)
    return ApiError(500, "internal", f"internal error (request {request_id})")


def on_internal_listener(request: web.Request) -> bool:
    internal = request.app[INTERNAL_ADDRESS]
    if internal is None:
        return False
    transport = request.transport
    if transport is None:
        return True  # the connection is gone: answer nothing
    local = transport.get_extra_info("sockname")
    return local is not None and tuple(local[:2]) == tuple(internal[:2])


@web.middleware
async def cluster_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The internal listener answers only requests signed by a node (loopback
    included); a request anywhere that says another node carried it must be signed
    too. Refused: ``403 cluster_auth``."""
    signed = HEADER in request.headers or FORWARDED in request.headers
    if signed or on_internal_listener(request):
        trust = request.app[TRUST]
        try:
            if trust is None:
                raise ClusterAuthError("no_secret")  # a node alone takes no node's requests
            trust.check_request(request.method, request.path, request.headers.get(HEADER))
        except ClusterAuthError as exc:
            log.warning("cluster.request_refused", reason=exc.reason, path=request.path)
            raise cluster_refused() from None
    return await handler(request)
