"""HTTP API of recordings (docs/protocol.md): list, read (with its audit journal for
supervisors and admins), play (whole or one participant's rendition, by byte ranges)
and delete; every playback and deletion is audited."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from recordings.crypto import MasterKeyError, TamperedError
from recordings.layout import RECORDING_ID
from recordings.ranges import ByteRange, parse_range, resolve, unsatisfiable
from recordings.tracks import RENDITIONS, media_participants, media_screens, rendition_tracks
from recordings.vault import NoMedia, Playback, RecordingNotFound, Vault

from .access import may_play
from .api import principal, respond
from .auth import Principal
from .errors import ApiError
from .keys import AUDIT, VAULT

routes = web.RouteTableDef()
log = structlog.get_logger("jisr.recordings")
TRAIL_SHOWN = 200  # the newest events of a recording's journal in its answer


def _vault(request: web.Request) -> Vault:
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


def recording_tampered() -> ApiError:
    return ApiError(
        409, "recording_tampered", "the recording failed its integrity check; nothing is served"
    )


def key_unavailable() -> ApiError:
    return ApiError(
        503, "key_unavailable",
        "this recording's key is wrapped by a master key this server does not hold",
    )  # fmt: skip


def _recording_id(request: web.Request) -> str:
    recording_id = request.match_info["id"]
    if not RECORDING_ID.fullmatch(recording_id):
        raise ApiError(
            400, "invalid_recording_id",
            "a recording id is 1 to 128 letters, digits, '_' or '-', starting with a letter "
            "or digit",
        )  # fmt: skip
    return recording_id


async def _visible_recording(request: web.Request, who: Principal) -> dict:
    recording_id = _recording_id(request)
    try:
        record = await asyncio.to_thread(_vault(request).get, recording_id)
    except RecordingNotFound:
        record = None
    except MasterKeyError:
        raise key_unavailable() from None
    except TamperedError:
        raise recording_tampered() from None
    if record is None or not may_play(who, record):
        raise ApiError(404, "recording_not_found", "no such recording")
    return record


@routes.get("/api/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    who = await principal(request)
    records = await asyncio.to_thread(_vault(request).list)
    visible = [_public_recording(r) for r in records if may_play(who, r)]
    visible.sort(key=lambda r: r.get("started_at") or 0, reverse=True)
    return respond({"recordings": visible})


@routes.get("/api/recordings/{id}")
async def get_recording(request: web.Request) -> web.Response:
    """One recording's metadata, with its tracks and which participants have media
    (read from the segments, so not in the list: that would decrypt every recording);
    for supervisors and admins, its audit journal (recordings.trail), newest last."""

    who = await principal(request)
    record = await _visible_recording(request, who)
    vault = _vault(request)
    try:
        tracks = await asyncio.to_thread(vault.tracks, record["recording_id"])
    except (TamperedError, MasterKeyError, RecordingNotFound):
        tracks = None  # the metadata still stands; playing it reports the failure
    public = _public_recording(record, tracks)
    if who.is_overseer:
        try:
            trail = await asyncio.to_thread(vault.trail.events, record["recording_id"])
        except (MasterKeyError, RecordingNotFound, TamperedError):
            trail = None
        if trail is not None:
            public["trail"], public["trail_total"] = trail[-TRAIL_SHOWN:], len(trail)
    return respond(public)


@routes.get("/api/recordings/{id}/media")
async def play_recording(request: web.Request) -> web.StreamResponse:
    """The whole recording, or with ``?participant=<slot>`` only that participant's
    camera and microphone, with ``?participant=<slot>-screen`` only their shared screen.
    Renditions share the recording's time origin, so a player can show them side by
    side in sync (a browser plays only one video and one audio track of a file).
    One ``Range`` of bytes is answered 206 (see recordings.ranges); a playback is
    audited once, not once per range (see recordings.plays)."""

    who = await principal(request)
    participant = _participant(request)
    record = await _visible_recording(request, who)
    vault = _vault(request)
    recording_id = record["recording_id"]
    fields: dict = {"by": who.public()}
    if participant is not None:
        fields["participant"] = participant
    playback = await _open_playback(request, vault, recording_id, participant, fields)
    try:
        asked = parse_range(request.headers.get("Range"))
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range.strip() != _etag(playback):
            asked = None  # the file changed since the client's first part: all of it
        size = playback.size
        served = ByteRange(0, size, size) if asked is None else resolve(asked, size)
        if served is None:
            return _unsatisfiable(playback)
        if request.method != "HEAD":
            viewer = (recording_id, participant, who.sub)
            if vault.plays.starts(viewer, from_first_byte=served.start == 0):
                await asyncio.to_thread(  # journalled with the recording: a file write
                    vault.played, recording_id, audit=request.app[AUDIT].recording_event,
                    **fields,
                )  # fmt: skip
            vault.plays.served(viewer)
        return await _send(request, playback, served, partial=asked is not None)
    finally:
        playback.close()


async def _open_playback(
    request: web.Request, vault: Vault, recording_id: str, participant: str | None, fields: dict
) -> Playback:
    """The playback, its start not yet audited; a failure is, with its coded answer."""
    tracks = None if participant is None else rendition_tracks(participant)
    try:
        return await asyncio.to_thread(
            vault.stream, recording_id, audit=request.app[AUDIT].recording_event,
            tracks=tracks, played=False, **fields,
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


def _etag(playback: Playback) -> str:
    return f'"{playback.etag}"'


def _headers(playback: Playback) -> dict[str, str]:
    return {
        "Content-Type": playback.content_type,
        "Cache-Control": "no-store",
        "Accept-Ranges": "bytes",
        "ETag": _etag(playback),
    }


def _unsatisfiable(playback: Playback) -> web.Response:
    error = ApiError(416, "range_not_satisfiable",
                     f"the range starts past the end of the {playback.size} bytes")  # fmt: skip
    headers = {**_headers(playback), "Content-Range": unsatisfiable(playback.size)}
    del headers["Content-Type"]  # the answer is the JSON error
    return respond(error.body(), status=416, headers=headers)


async def _send(
    request: web.Request, playback: Playback, served: ByteRange, *, partial: bool
) -> web.StreamResponse:
    """The bytes asked for, a piece at a time, decrypted off the event loop. A piece
    that fails (the cache altered, the recording deleted meanwhile) cuts the
    connection: the status is sent already, and a short body must not look whole."""
    headers = {**_headers(playback), "Content-Length": str(served.length)}
    if partial:
        headers["Content-Range"] = served.content_range
    response = web.StreamResponse(status=206 if partial else 200, headers=headers)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    pieces = playback.pieces(served.start, served.end)
    try:
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            await response.write(piece)
    except (TamperedError, RecordingNotFound) as exc:
        log.warning("recording.playback_cut", recording_id=request.match_info["id"],
                    error=str(exc))  # fmt: skip
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


@routes.delete("/api/recordings/{id}")
async def delete_recording(request: web.Request) -> web.Response:
    who = await principal(request)
    if who.role != "admin":
        raise ApiError(403, "forbidden", "only an admin deletes recordings")
    record = await _visible_recording(request, who)
    await asyncio.to_thread(
        request.app[VAULT].delete, record["recording_id"],
        audit=request.app[AUDIT].recording_event, by=who.public(),
    )  # fmt: skip
    return respond({"id": record["recording_id"], "state": "deleted"})
