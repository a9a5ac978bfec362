"""HTTP API handlers (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recordings.tracks import RENDITIONS, media_participants, media_screens, rendition_tracks

from .attachments import UploadCut, too_large
from .auth import Principal
from .errors import ApiError, store_unavailable
from .keys import AUDIT, CASE_PACKET, CONSULTS, HUB, SETTINGS, STORE, TRIAGE, VAULT, VERIFIER
from .protocol import ConsultReport, Decline, NewConsult, Transfer, parse_body, parse_json
from .store import StoreUnavailable
from .turn import ice_servers

routes = web.RouteTableDef()
BODY_CHUNK = 64 * 1024


def principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    return request.app[VERIFIER].verify(token.strip())


async def json_body(request: web.Request) -> object:
    limit = request.app[SETTINGS].max_message_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"body is larger than {limit} bytes")
    return parse_json(await request.read(), limit)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreUnavailable:
        raise store_unavailable() from None
    return web.json_response({"status": "ready"})


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    """Public settings; signed-in callers also get ICE servers with TURN
    credentials of their own (short-lived, TURN REST scheme)."""
    settings = request.app[SETTINGS]
    servers: list[dict] = []
    if request.headers.get("Authorization"):
        who = principal(request)
        servers = ice_servers(
            settings.turn_urls, settings.turn_secret, who.sub, settings.turn_ttl_s, time.time()
        )
    return web.json_response(
        {
            "specialties": settings.specialties,
            "urgencies": ["critical", "urgent", "routine"],
            "ice_servers": servers,
        }
    )


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    return web.json_response(principal(request).public())


@routes.post("/api/consults")
async def create_consult(request: web.Request) -> web.Response:
    who = principal(request)
    body = parse_body(NewConsult, await json_body(request))
    consult = await request.app[CONSULTS].create(who, body)
    return web.json_response(consult, status=201)


@routes.get("/api/consults")
async def list_consults(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"consults": await request.app[CONSULTS].visible(who)})


@routes.get("/api/consults/{id}")
async def get_consult(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(await request.app[CONSULTS].get(who, request.match_info["id"]))


@routes.post("/api/consults/{id}/accept")
async def accept_consult(request: web.Request) -> web.Response:
    who = principal(request)
    consult, session = await request.app[CONSULTS].accept(who, request.match_info["id"])
    return web.json_response({"consult": consult, "session": session})


@routes.post("/api/consults/{id}/cancel")
async def cancel_consult(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(await request.app[CONSULTS].cancel(who, request.match_info["id"]))


@routes.post("/api/consults/{id}/decline")
async def decline_consult(request: web.Request) -> web.Response:
    who = principal(request)
    body = parse_body(Decline, await json_body(request))
    consult = await request.app[CONSULTS].decline(who, request.match_info["id"], body.reason)
    return web.json_response(consult)


@routes.post("/api/consults/{id}/transfer")
async def transfer_consult(request: web.Request) -> web.Response:
    who = principal(request)
    body = parse_body(Transfer, await json_body(request))
    consult = await request.app[CONSULTS].transfer(
        who, request.match_info["id"], body.specialty, body.reason
    )
    return web.json_response(consult)


@routes.post("/api/consults/{id}/report")
async def report_consult(request: web.Request) -> web.Response:
    who = principal(request)
    body = parse_body(ConsultReport, await json_body(request))
    consult = await request.app[CONSULTS].report(who, request.match_info["id"], body.model_dump())
    return web.json_response(consult)


@routes.get("/api/consults/{id}/report")
async def export_report(request: web.Request) -> web.Response:
    who = principal(request)
    consult = await request.app[CONSULTS].get(who, request.match_info["id"])
    if not consult.get("report"):
        raise ApiError(404, "report_not_found", "this consult has no report yet")
    body = {"report": consult["report"], "sha256": consult["report_sha256"]}
    return web.json_response(
        body,
        headers={"Content-Disposition": f'attachment; filename="consult-{consult["id"]}.json"'},
    )


@routes.post("/api/consults/{id}/attachments")
async def add_attachment(request: web.Request) -> web.Response:
    """The file is the raw body (``Content-Length`` or chunked); its name travels
    URL-encoded in ``X-Filename``. It is streamed to its encrypted file as it comes."""
    who = principal(request)
    consult = await request.app[CONSULTS].get(who, request.match_info["id"])
    packet = request.app[CASE_PACKET]
    packet.check_may_add(who, consult)
    if request.content_length is not None and request.content_length > packet.max_bytes:
        raise too_large(packet.max_bytes)
    filename = urllib.parse.unquote(request.headers.get("X-Filename", ""))
    declared = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    entry = await packet.add(who, consult, filename, declared, body_chunks(request))
    return web.json_response(entry, status=201)


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; UploadCut if the client stops sending before
    its end (a dropped connection, a chunked body never finished)."""
    try:
        async for chunk in request.content.iter_chunked(BODY_CHUNK):
            yield chunk
    except (ConnectionError, ClientPayloadError, HttpProcessingError) as exc:
        raise UploadCut(type(exc).__name__) from None


@routes.get("/api/consults/{id}/attachments/{attachment}")
async def get_attachment(request: web.Request) -> web.Response:
    who = principal(request)
    consult = await request.app[CONSULTS].store.get_consult(request.match_info["id"])
    if consult is None:
        raise ApiError(404, "attachment_not_found", "no such attachment")
    entry, data = await asyncio.to_thread(
        request.app[CASE_PACKET].read, who, consult, request.match_info["attachment"]
    )
    return web.Response(
        body=data,
        headers={
            "Content-Type": entry["content_type"],
            "Content-Disposition": "inline",
            "Cache-Control": "no-store",
        },
    )


@routes.get("/api/oncall")
async def on_call(request: web.Request) -> web.Response:
    who = principal(request)
    if not who.sees_everything:
        raise ApiError(403, "forbidden", "only supervisors see who is on call")
    presence = await request.app[STORE].list_presence()
    return web.json_response({"presence": [{"sub": s, **info} for s, info in presence.items()]})


@routes.get("/api/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    """The supervisor's live picture: the queue by urgency with its oldest waiting
    time, escalated consults, who is on call, and accept times so far."""
    who = principal(request)
    if not who.sees_everything:
        raise ApiError(403, "forbidden", "only supervisors see the dashboard")
    consults = await request.app[STORE].list_consults()
    presence = await request.app[STORE].list_presence()
    now = request.app[CONSULTS].clock()
    waiting = [c for c in consults if c["state"] == "waiting"]
    by_urgency = {}
    for urgency in ("critical", "urgent", "routine"):
        group = [c for c in waiting if c["urgency"] == urgency]
        by_urgency[urgency] = {
            "waiting": len(group),
            "oldest_s": round(max((now - c["created_at"] for c in group), default=0), 1),
        }
    totals: dict[str, list[float]] = {}  # urgency -> [seconds, count], this node's accepts
    for metric in request.app[TRIAGE].metrics.time_to_accept.collect():
        for sample in metric.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind in ("sum", "count"):
                entry = totals.setdefault(sample.labels["urgency"], [0.0, 0.0])
                entry[kind == "count"] += sample.value
    mean_accept = {u: round(t[0] / t[1], 1) for u, t in totals.items() if t[1]}
    return web.json_response(
        {
            "queue": by_urgency,
            "escalated": [c for c in waiting if c.get("escalated_at")],
            "live": [c for c in consults if c["state"] in ("accepted", "live")],
            "on_call": [{"sub": s, **info} for s, info in presence.items()],
            "mean_time_to_accept_s": mean_accept,
        }
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    triage = request.app[TRIAGE]
    with contextlib.suppress(StoreUnavailable):
        await triage.refresh_gauges()
    return web.Response(
        body=generate_latest(triage.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"sessions": await request.app[CONSULTS].live_sessions(who)})


@routes.get("/api/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    who = principal(request)
    session, _ = await request.app[CONSULTS].session_for(who, request.match_info["id"])
    return web.json_response({**session, "roster": request.app[HUB].roster(session["id"])})


@routes.post("/api/sessions/{id}/end")
async def end_session(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(await request.app[CONSULTS].end(who, request.match_info["id"]))


# recordings -----------------------------------------------------------------


def _vault(request: web.Request):
    vault = request.app[VAULT]
    if vault is None:
        raise ApiError(503, "recording_unavailable", "recording is not configured on this server")
    return vault


def _public_recording(record: dict, tracks: list[str] | None = None) -> dict:
    """``tracks`` (the recording's track titles) is known only where it was read
    from the segments; it also tells which participants have camera or microphone
    media and which shared a screen."""
    public = {"id": record.get("recording_id"), **record}
    if tracks is not None:
        public["tracks"] = tracks
        public["media_participants"] = media_participants(tracks)
        public["media_screens"] = media_screens(tracks)
    return public


def _participant(request: web.Request) -> str | None:
    """The ``participant`` query parameter: a slot, ``<slot>-screen``, or None for
    the whole recording."""
    values = request.query.getall("participant", [])
    if not values:
        return None
    if len(values) > 1 or values[0] not in RENDITIONS:
        raise ApiError(
            400, "invalid_participant", f"participant must be one of: {', '.join(RENDITIONS)}"
        )
    return values[0]


def _may_play(who: Principal, record: dict) -> bool:
    """Participants of that session, supervisors and admins."""
    if who.sees_everything:
        return True
    return any(p.get("sub") == who.sub for p in record.get("participants", []))


def recording_tampered() -> ApiError:
    return ApiError(
        409, "recording_tampered", "the recording failed its integrity check; nothing is served"
    )


def key_unavailable() -> ApiError:
    return ApiError(
        503, "key_unavailable",
        "this recording's key is wrapped by a master key this server does not hold",
    )  # fmt: skip


async def _visible_recording(request: web.Request, who: Principal) -> dict:
    from recordings.crypto import MasterKeyError, TamperedError
    from recordings.vault import RecordingNotFound

    try:
        record = await asyncio.to_thread(_vault(request).get, request.match_info["id"])
    except (RecordingNotFound, ValueError):
        record = None
    except MasterKeyError:
        raise key_unavailable() from None
    except TamperedError:
        raise recording_tampered() from None
    if record is None or not _may_play(who, record):
        raise ApiError(404, "recording_not_found", "no such recording")
    return record


@routes.get("/api/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    who = principal(request)
    records = await asyncio.to_thread(_vault(request).list)
    visible = [_public_recording(r) for r in records if _may_play(who, r)]
    visible.sort(key=lambda r: r.get("started_at") or 0, reverse=True)
    return web.json_response({"recordings": visible})


@routes.get("/api/recordings/{id}")
async def get_recording(request: web.Request) -> web.Response:
    """One recording's metadata, with its tracks and which participants have media
    (read from the segments, so not in the list: that would decrypt every recording)."""
    from recordings.crypto import MasterKeyError, TamperedError
    from recordings.vault import RecordingNotFound

    who = principal(request)
    record = await _visible_recording(request, who)
    try:
        tracks = await asyncio.to_thread(_vault(request).tracks, record["recording_id"])
    except (TamperedError, MasterKeyError, RecordingNotFound):
        tracks = None  # the metadata still stands; playing it reports the failure
    return web.json_response(_public_recording(record, tracks))


@routes.get("/api/recordings/{id}/media")
async def play_recording(request: web.Request) -> web.StreamResponse:
    """The whole recording, or with ``?participant=<slot>`` only that participant's
    camera and microphone, with ``?participant=<slot>-screen`` only their shared screen.
    Renditions share the recording's time origin, so a player can show them side by
    side in sync (a browser plays only one video and one audio track of a file)."""
    from recordings.crypto import MasterKeyError, TamperedError
    from recordings.vault import NoMedia

    who = principal(request)
    participant = _participant(request)
    record = await _visible_recording(request, who)
    audit = request.app[AUDIT]
    tracks, fields = None, {"by": who.public()}
    if participant is not None:
        tracks = rendition_tracks(participant)
        fields["participant"] = participant
    try:
        playback = await asyncio.to_thread(
            request.app[VAULT].stream, record["recording_id"], audit=audit.recording_event,
            tracks=tracks, **fields,
        )  # fmt: skip
    except MasterKeyError:
        raise key_unavailable() from None
    except TamperedError:
        raise recording_tampered() from None
    except NoMedia:
        if participant is None:
            raise
        slot, _, screen = participant.partition("-")
        what = "shared screen" if screen else "media"
        raise ApiError(
            404, "participant_not_found", f"this recording holds no {what} of the {slot}"
        ) from None
    response = web.StreamResponse(
        headers={
            "Content-Type": playback.content_type,
            "Cache-Control": "no-store",
            "Content-Length": str(len(playback)),
        }  # fmt: skip
    )
    await response.prepare(request)
    for chunk in playback:
        await response.write(chunk)
    await response.write_eof()
    return response


@routes.delete("/api/recordings/{id}")
async def delete_recording(request: web.Request) -> web.Response:
    who = principal(request)
    if who.role != "admin":
        raise ApiError(403, "forbidden", "only an admin deletes recordings")
    record = await _visible_recording(request, who)
    await asyncio.to_thread(
        request.app[VAULT].delete, record["recording_id"],
        audit=request.app[AUDIT].recording_event, by=who.public(),
    )  # fmt: skip
    return web.json_response({"id": record["recording_id"], "state": "deleted"})
