"""Signing in on the pages with each organisation's OpenID provider, as a
backend-for-frontend: the authorization code flow with PKCE, ``state`` and ``nonce``
runs between Jisr's server and the provider; the browser only ever holds an HttpOnly,
SameSite=Strict session cookie, never a token (current OAuth guidance for browser
apps). The provider's refresh and ID tokens stay on the server, sealed.

    GET  /auth/organisations          the organisations one can sign in with
    GET  /auth/login?organisation=&next=   to the provider's login page
    GET  /auth/callback?code=&state=  back from it: the session starts
    POST /auth/logout                 the session ends here; where to end it at the provider
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from dataclasses import asdict, replace
from typing import Any

import jwt
import msgspec
from aiohttp import ClientError, ClientSession, ClientTimeout, encode_basic_auth, web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .auth import Issuer, Principal
from .errors import ApiError
from .keys import AUDIT, IDENTITY, SIGNIN, STORE, VERIFIER
from .logs import get_logger
from .model import Record

log = get_logger()
routes = web.RouteTableDef()
COOKIE = "jisr_session"
LOGIN_COOKIE = "jisr_signin"
LOGIN_TTL_S = 600  # a sign-in at the provider must come back within this
REFRESH_AHEAD_S = 60  # provider tokens are refreshed this long before they expire
PAGES = ("/referrer.html", "/specialist.html", "/supervisor.html", "/index.html")


class ProviderUnavailable(ClientError):
    """The provider's token endpoint failed without answering (5xx, not JSON)."""


class PendingSignIn(Record):
    organisation: str
    nonce: str
    verifier: str
    next: str
    redirect_uri: str


class WebSession(Record):
    principal: dict[str, Any]
    expires_at: float
    provider_expires_at: float
    refresh_token: str | None = None  # sealed
    id_token: str | None = None  # sealed: the hint for signing out at the provider


def session_id_key(session_id: str) -> str:
    """What the store files a session under: its id's hash, so a store dump holds
    no usable cookie."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SignIn:
    def __init__(self, sealing_key: bytes | None, lifetime_s: float) -> None:
        """``sealing_key``: seals provider tokens in the store (None: they are not
        kept, and a session ends when its provider tokens do)."""
        self.aead = AESGCM(sealing_key) if sealing_key else None
        self.lifetime_s = lifetime_s
        self._http: ClientSession | None = None

    def http(self) -> ClientSession:
        if self._http is None:
            self._http = ClientSession(timeout=ClientTimeout(total=10))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def seal(self, text: str | None) -> str | None:
        if text is None or self.aead is None:
            return None
        nonce = secrets.token_bytes(12)
        sealed = nonce + self.aead.encrypt(nonce, text.encode(), b"jisr.web")
        return base64.b64encode(sealed).decode()

    def unseal(self, sealed: str | None) -> str | None:
        if sealed is None or self.aead is None:
            return None
        try:
            raw = base64.b64decode(sealed)
            return self.aead.decrypt(raw[:12], raw[12:], b"jisr.web").decode()
        except (ValueError, InvalidTag):
            return None


def principal_record(who: Principal) -> dict[str, Any]:
    record = asdict(who)
    record["specialties"] = list(who.specialties)
    return record


def principal_of(record: dict[str, Any]) -> Principal:
    return Principal(**{**record, "specialties": tuple(record.get("specialties", ()))})


def signin_issuer(app: web.Application, organisation: str) -> Issuer:
    issuer = app[VERIFIER].by_organisation.get(organisation)
    if issuer is None or issuer.config.client_id is None:
        raise ApiError(404, "unknown_organisation", "no such organisation signs in here")
    return issuer


def client_secret(issuer: Issuer) -> str:
    path = issuer.config.client_secret_file
    return open(path, encoding="utf-8").read().strip() if path else ""


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def back_to_signin(error: str, organisation: str = "") -> web.HTTPFound:
    query = urllib.parse.urlencode({"error": error, "organisation": organisation})
    return web.HTTPFound(f"/signin.html?{query}")


@routes.get("/auth/organisations")
async def organisations(request: web.Request) -> web.Response:
    issuers = request.app[VERIFIER].issuers
    return web.json_response({"organisations": [
        {"organisation": i.config.organisation, "name": i.config.name}
        for i in issuers if i.config.client_id
    ]})  # fmt: skip


@routes.get("/auth/login")
async def login(request: web.Request) -> web.StreamResponse:
    organisation = request.query.get("organisation", "")
    issuer = signin_issuer(request.app, organisation)
    page = request.query.get("next", "/index.html")
    if page not in PAGES:
        page = "/index.html"
    try:  # fetched afresh: a provider that is down gets a clear page, not a dead link
        provider = await issuer.keys.configuration(fresh=True)  # type: ignore[attr-defined]
    except (ClientError, TimeoutError, ValueError, AttributeError, KeyError):
        log.warning("signin.provider_unreachable", organisation=organisation)
        raise back_to_signin("provider_unreachable", organisation) from None
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    redirect_uri = own_origin(request) + "/auth/callback"
    pending = PendingSignIn(organisation=organisation, nonce=nonce, verifier=verifier,
                            next=page, redirect_uri=redirect_uri)  # fmt: skip
    await request.app[STORE].put_secret("signin", state, pending, LOGIN_TTL_S)
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": issuer.config.client_id,
        "redirect_uri": redirect_uri, "scope": "openid profile jisr offline_access",
        "state": state, "nonce": nonce, "code_challenge": challenge.decode(),
        "code_challenge_method": "S256", "prompt": "consent",
    })  # fmt: skip
    response = web.HTTPFound(f"{provider['authorization_endpoint']}?{query}")
    # Binds the sign-in to this browser: a callback carrying someone else's state fails.
    response.set_cookie(LOGIN_COOKIE, state, max_age=LOGIN_TTL_S, httponly=True,
                        samesite="Lax", path="/auth", secure=request.secure)  # fmt: skip
    raise response


async def exchange_code(
    signin: SignIn, issuer: Issuer, pending: PendingSignIn, code: str
) -> dict[str, Any]:
    provider = await issuer.keys.configuration()  # type: ignore[attr-defined]
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": pending.redirect_uri, "code_verifier": pending.verifier}  # fmt: skip
    return await token_request(signin, issuer, provider["token_endpoint"], form)


async def token_request(
    signin: SignIn, issuer: Issuer, endpoint: str, form: dict[str, str]
) -> dict[str, Any]:
    basic = encode_basic_auth(issuer.config.client_id or "", client_secret(issuer))
    auth = {"Authorization": basic}
    async with signin.http().post(endpoint, data=form, headers=auth) as response:
        if response.status >= 500:  # down or behind a failing proxy: not a refusal
            raise ProviderUnavailable(response.status)
        try:
            body = await response.json(content_type=None)
        except ValueError:
            raise ProviderUnavailable(response.status) from None
        if response.status != 200 or not isinstance(body, dict) or "id_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise ValueError(f"the provider refused: {error or response.status}")
        return body


@routes.get("/auth/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    state = request.query.get("state", "")
    if not state or request.cookies.get(LOGIN_COOKIE) != state:
        raise back_to_signin("signin_not_started")
    pending = await request.app[STORE].take_secret("signin", state, PendingSignIn)
    if pending is None:
        raise back_to_signin("signin_expired")
    if "error" in request.query or "code" not in request.query:
        raise back_to_signin("signin_refused", pending.organisation)
    issuer = signin_issuer(request.app, pending.organisation)
    signin = request.app[SIGNIN]
    try:
        tokens = await exchange_code(signin, issuer, pending, request.query["code"])
    except (ClientError, TimeoutError, ValueError, KeyError) as exc:
        log.warning("signin.exchange_failed", organisation=pending.organisation,
                    error_type=type(exc).__name__)  # fmt: skip
        raise back_to_signin("provider_unreachable", pending.organisation) from None
    who = await verified_id_token(request, issuer, tokens["id_token"], pending.nonce)
    session_id = await start_session(request, who, tokens)
    request.app[AUDIT].record("user.signed_in", who.public(), via="openid")
    response = web.HTTPFound(pending.next)
    response.del_cookie(LOGIN_COOKIE, path="/auth")
    response.set_cookie(COOKIE, session_id, max_age=int(signin.lifetime_s), httponly=True,
                        samesite="Strict", path="/", secure=request.secure)  # fmt: skip
    raise response


async def verified_id_token(
    request: web.Request, issuer: Issuer, id_token: str, nonce: str
) -> Principal:
    try:
        who = await request.app[VERIFIER].verify(id_token, audience=issuer.config.client_id)
    except ApiError as exc:
        log.warning("signin.id_token_refused", organisation=issuer.config.organisation,
                    error=exc.code)  # fmt: skip
        raise back_to_signin("signin_refused", issuer.config.organisation) from None
    claims = jwt.decode(id_token, options={"verify_signature": False})  # verified just now
    if who.organisation != issuer.config.organisation or claims.get("nonce") != nonce:
        raise back_to_signin("signin_refused", issuer.config.organisation)
    return who


async def start_session(request: web.Request, who: Principal, tokens: dict[str, Any]) -> str:
    signin = request.app[SIGNIN]
    now = time.time()
    expires_at = now + signin.lifetime_s
    if signin.aead is None:  # nothing to refresh with: the provider's tokens bound it
        expires_at = min(expires_at, who.expires_at)
    session_id = secrets.token_urlsafe(32)
    key = session_id_key(session_id)
    # The session is what signing out revokes, and what its sockets live by.
    web_principal = replace(who, token_id="web:" + key, expires_at=expires_at)
    session = WebSession(
        principal=principal_record(web_principal), expires_at=expires_at,
        provider_expires_at=who.expires_at, refresh_token=signin.seal(tokens.get("refresh_token")),
        id_token=signin.seal(tokens["id_token"]),
    )  # fmt: skip
    await request.app[STORE].put_secret("websession", key, session, expires_at - now)
    return session_id


async def session_principal(app: web.Application, session_id: str) -> Principal:
    """The signed-in user of a session cookie; its provider tokens are refreshed
    shortly before they expire (a provider that is down does not end the session; one
    that refuses does)."""
    key = session_id_key(session_id)
    state = app[STORE]
    session = await state.get_secret("websession", key, WebSession)
    if session is None or session.expires_at <= time.time():
        raise ApiError(401, "token_expired", "the session has ended; sign in again")
    who = principal_of(session.principal)
    if session.provider_expires_at - time.time() < REFRESH_AHEAD_S and session.refresh_token:
        try:
            session = await refreshed(app, who, session)
        except ApiError:
            await state.drop_secret("websession", key)
            raise
        await state.put_secret("websession", key, session, session.expires_at - time.time())
    return who


async def refreshed(app: web.Application, who: Principal, session: WebSession) -> WebSession:
    signin, issuer = app[SIGNIN], signin_issuer(app, who.organisation)
    refresh_token = signin.unseal(session.refresh_token)
    try:
        provider = await issuer.keys.configuration()  # type: ignore[attr-defined]
        tokens = await token_request(signin, issuer, provider["token_endpoint"],
                                     {"grant_type": "refresh_token",
                                      "refresh_token": refresh_token or ""})  # fmt: skip
        fresh = await app[VERIFIER].verify(tokens["id_token"], audience=issuer.config.client_id)
    except (ClientError, TimeoutError, KeyError, AttributeError) as exc:
        log.warning("signin.refresh_unreachable", organisation=who.organisation,
                    error_type=type(exc).__name__)  # fmt: skip
        return session  # tried again on the next request
    except (ValueError, ApiError):  # the provider no longer vouches for this user
        await app[IDENTITY].sign_out(who)
        raise ApiError(401, "token_expired", "the sign-in was ended at the provider") from None
    log.info("signin.refreshed", organisation=who.organisation)
    return msgspec.structs.replace(
        session, provider_expires_at=fresh.expires_at,
        refresh_token=signin.seal(tokens.get("refresh_token")) or session.refresh_token,
        id_token=signin.seal(tokens["id_token"]),
    )  # fmt: skip


def check_origin(request: web.Request) -> None:
    """A request riding on the session cookie must come from Jisr's own pages (the
    cookie is SameSite=Strict; this also stops a cross-site WebSocket)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != own_origin(request):
        raise ApiError(403, "bad_origin", "this request did not come from Jisr's pages")
    if origin is None and request.method not in ("GET", "HEAD"):
        raise ApiError(403, "bad_origin", "this request did not come from Jisr's pages")


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    """Ends the session here (its sockets on every node too) and answers where the
    page goes to end it at the provider."""
    check_origin(request)
    session_id = request.cookies.get(COOKIE, "")
    key = session_id_key(session_id)
    session = await request.app[STORE].take_secret("websession", key, WebSession)
    redirect = "/signin.html"
    if session is not None:
        who = principal_of(session.principal)
        await request.app[IDENTITY].sign_out(who)
        request.app[AUDIT].record("user.signed_out", who.public(), via="openid")
        redirect = await provider_logout(request, who, session) or redirect
    response = web.json_response({"signed_out": True, "redirect": redirect})
    response.del_cookie(COOKIE, path="/")
    return response


async def provider_logout(request: web.Request, who: Principal, session: WebSession) -> str | None:
    issuer = request.app[VERIFIER].by_organisation.get(who.organisation)
    try:
        provider = await issuer.keys.configuration()  # type: ignore[union-attr]
    except (ClientError, TimeoutError, ValueError, AttributeError, KeyError):
        return None  # the provider is down: signed out here at least
    endpoint = provider.get("end_session_endpoint")
    if not endpoint:
        return None
    query = {"client_id": issuer.config.client_id,
             "post_logout_redirect_uri": own_origin(request) + "/signin.html"}  # fmt: skip
    if id_token := request.app[SIGNIN].unseal(session.id_token):
        query["id_token_hint"] = id_token
    return f"{endpoint}?{urllib.parse.urlencode(query)}"
