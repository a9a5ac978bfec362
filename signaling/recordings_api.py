"""HTTP API of recordings (docs/protocol.md): list, read, play (whole or one
participant's rendition) and delete; every playback and deletion is audited."""

from __future__ import annotations

import asyncio

from aiohttp import web

from recordings.crypto import MasterKeyError, TamperedError
from recordings.tracks import RENDITIONS, media_participants, media_screens, rendition_tracks
from recordings.vault import NoMedia, RecordingNotFound, Vault

from .access import may_play
from .api import principal, respond
from .auth import Principal
from .errors import ApiError
from .keys import AUDIT, VAULT

routes = web.RouteTableDef()


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


async def _visible_recording(request: web.Request, who: Principal) -> dict:

    try:
        record = await asyncio.to_thread(_vault(request).get, request.match_info["id"])
    except (RecordingNotFound, ValueError):
        record = None
    except MasterKeyError:
        raise key_unavailable() from None
    except TamperedError:
        raise recording_tampered() from None
    if record is None or not may_play(who, record.get("participants", [])):
        raise ApiError(404, "recording_not_found", "no such recording")
    return record


@routes.get("/api/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    who = await principal(request)
    records = await asyncio.to_thread(_vault(request).list)
    visible = [_public_recording(r) for r in records if may_play(who, r.get("participants", []))]
    visible.sort(key=lambda r: r.get("started_at") or 0, reverse=True)
    return respond({"recordings": visible})


@routes.get("/api/recordings/{id}")
async def get_recording(request: web.Request) -> web.Response:
    """One recording's metadata, with its tracks and which participants have media
    (read from the segments, so not in the list: that would decrypt every recording)."""

    who = await principal(request)
    record = await _visible_recording(request, who)
    try:
        tracks = await asyncio.to_thread(_vault(request).tracks, record["recording_id"])
    except (TamperedError, MasterKeyError, RecordingNotFound):
        tracks = None  # the metadata still stands; playing it reports the failure
    return respond(_public_recording(record, tracks))


@routes.get("/api/recordings/{id}/media")
async def play_recording(request: web.Request) -> web.StreamResponse:
    """The whole recording, or with ``?participant=<slot>`` only that participant's
    camera and microphone, with ``?participant=<slot>-screen`` only their shared screen.
    Renditions share the recording's time origin, so a player can show them side by
    side in sync (a browser plays only one video and one audio track of a file)."""

    who = await principal(request)
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
    who = await principal(request)
    if who.role != "admin":
        raise ApiError(403, "forbidden", "only an admin deletes recordings")
    record = await _visible_recording(request, who)
    await asyncio.to_thread(
        request.app[VAULT].delete, record["recording_id"],
        audit=request.app[AUDIT].recording_event, by=who.public(),
    )  # fmt: skip
    return respond({"id": record["recording_id"], "state": "deleted"})
