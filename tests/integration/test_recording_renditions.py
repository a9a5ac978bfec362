"""Per-participant renditions of a recording: a browser plays only the first video
and audio track of a file, so the player fetches one rendition per participant (camera
and microphone) and one per shared screen. Real VP8/Opus packets muxed like the
recorder does, an encrypted vault on disk, the real HTTP API, PyAV reading what it
serves."""

from __future__ import annotations

import io
import os

import av
import pytest

from recordings.crypto import MasterKey
from recordings.storage import FileStorage
from recordings.vault import NoMedia, Vault
from signaling.app import create_app
from signaling.keys import AUDIT
from signaling.store import MemoryStore
from tests.unit.test_recording_crypto import FPS, MS, opus_frames, vp8_frames

RID = "r_renditions01"
LATE_S = 1  # the specialist's camera and microphone start this much after the referrer's
SCREEN_S = 2  # the referrer shares a screen from this second on (in RID only)
SECONDS = 3


def mux_segment(sink, start_s: int, slots: tuple[str, ...], screens: tuple[str, ...] = ()) -> None:
    """One 1 s segment as the recorder writes it: ms timestamps continuous across
    segments, each participant's audio, video and shared screen titled
    ``<slot>-<kind>``, each video starting on a keyframe."""
    container = av.open(sink, mode="w", format="webm", options={"live": "1"})
    events = []

    def add_stream(title: str, codec: str, **kw):
        stream = container.add_mux_stream(codec, **kw)
        stream.time_base = MS
        stream.metadata["title"] = title
        return stream

    def add_video(stream, first_s: int) -> None:
        frames = vp8_frames()  # a keyframe every second, from this track's start
        for i in range(start_s * FPS, (start_s + 1) * FPS):
            data, key = frames[i - first_s * FPS]
            events.append((round(i * 1000 / FPS), stream, data, key))

    for slot in slots:
        first_s = LATE_S if slot == "specialist" else 0
        add_video(add_stream(f"{slot}-video", "vp8", width=320, height=240), first_s)
        audio = add_stream(f"{slot}-audio", "opus", rate=48000)
        sounds = opus_frames(hz=440.0 if slot == "referrer" else 660.0)
        for i in range(start_s * 50, (start_s + 1) * 50):
            events.append((i * 20, audio, sounds[i - first_s * 50], True))
    for slot in screens:
        add_video(add_stream(f"{slot}-screen", "vp8", width=320, height=240), SCREEN_S)
    for pts, stream, data, key in sorted(events, key=lambda e: (e[0], e[1].index)):
        packet = av.Packet(data)
        packet.stream, packet.time_base = stream, MS
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        container.mux(packet)
    container.close()


def record(
    vault: Vault, recording_id: str = RID, specialist: bool = True, screen: bool = False
) -> None:
    handle = vault.create(recording_id, {"participants": [{"sub": "dr-amal"}, {"sub": "dr-karim"}]})
    for index in range(1, SECONDS + 1):
        joined = specialist and index - 1 >= LATE_S
        slots = ("referrer", "specialist") if joined else ("referrer",)
        screens = ("referrer",) if screen and index - 1 >= SCREEN_S else ()
        mux_segment(handle.open_segment(index), index - 1, slots, screens)
    handle.finish(duration_s=SECONDS)


def probe(data: bytes) -> dict[str, float]:
    """Track title -> the time of its first packet, in seconds."""
    starts: dict[str, float] = {}
    with av.open(io.BytesIO(data)) as container:
        for packet in container.demux():
            if packet.size and packet.pts is not None:
                title = packet.stream.metadata["title"]
                starts.setdefault(title, float(packet.pts * packet.time_base))
        for stream in container.streams.video:  # what the browser decodes is there
            assert stream.codec_context.name == "vp8"
    return starts


@pytest.fixture
def vault(tmp_path) -> Vault:
    vault = Vault(FileStorage(tmp_path / "store"), MasterKey(os.urandom(32)))
    record(vault, screen=True)
    record(vault, "r_referreronly", specialist=False)
    return vault


class AuditLog(list):
    def __call__(self, event: str, /, **fields) -> None:
        self.append((event, fields))


# the vault ------------------------------------------------------------------------


def test_renditions_share_the_recording_time_origin(vault):
    audit = AuditLog()
    whole = probe(vault.stream(RID, audit=audit).data)
    assert whole == {
        "referrer-video": 0.0,
        "referrer-audio": 0.0,
        "specialist-video": LATE_S,
        "specialist-audio": LATE_S,
        "referrer-screen": SCREEN_S,
    }
    referrer = vault.stream(RID, audit=audit, tracks={"referrer-audio", "referrer-video"})
    specialist = vault.stream(RID, audit=audit, tracks={"specialist-audio", "specialist-video"})
    screen = vault.stream(RID, audit=audit, tracks={"referrer-screen"})
    assert probe(referrer.data) == {"referrer-video": 0.0, "referrer-audio": 0.0}
    # Not shifted to its own zero: it starts where it started in the consult.
    assert probe(specialist.data) == {"specialist-video": LATE_S, "specialist-audio": LATE_S}
    assert probe(screen.data) == {"referrer-screen": SCREEN_S}
    assert [event for event, _ in audit] == ["recording.played"] * 4


def test_tracks_and_a_selection_with_nothing_in_it(vault):
    assert vault.tracks(RID) == [
        "referrer-audio",
        "referrer-screen",
        "referrer-video",
        "specialist-audio",
        "specialist-video",
    ]
    assert vault.tracks("r_referreronly") == ["referrer-audio", "referrer-video"]
    audit = AuditLog()
    with pytest.raises(NoMedia, match="no media"):
        vault.stream("r_referreronly", audit=audit, tracks={"specialist-video"})
    assert [event for event, _ in audit] == ["recording.playback_failed"]


# the HTTP API ---------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client, settings, vault):
    app = create_app(settings, store=MemoryStore(), vault=vault)
    app[AUDIT].recording_event = AuditLog()  # the vault's audit callback, as it is called
    return await aiohttp_client(app)


def audited(client) -> AuditLog:
    return client.server.app[AUDIT].recording_event


async def media(client, token: str, recording_id: str = RID, query: str = ""):
    return await client.get(
        f"/api/recordings/{recording_id}/media{query}",
        headers={"Authorization": f"Bearer {token}"},
    )


async def error_code(response, status: int) -> str:
    assert response.status == status, await response.text()
    return (await response.json())["error"]["code"]


async def test_participant_renditions_over_http(client, tokens):
    for who, token in (("referrer", tokens.referrer), ("specialist", tokens.supervisor)):
        response = await media(client, token, query=f"?participant={who}")
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "video/webm"
        assert response.headers["Cache-Control"] == "no-store"
        start = 0.0 if who == "referrer" else LATE_S
        # Camera and microphone only: the referrer's shared screen is a rendition of its own.
        assert probe(await response.read()) == {f"{who}-video": start, f"{who}-audio": start}
    screen = await media(client, tokens.supervisor, query="?participant=referrer-screen")
    assert screen.status == 200, await screen.text()
    assert screen.headers["Content-Type"] == "video/webm"
    data = await screen.read()
    # Only the screen, on the recording's time origin like the other renditions.
    assert probe(data) == {"referrer-screen": SCREEN_S}
    with av.open(io.BytesIO(data)) as container:
        assert [s.type for s in container.streams] == ["video"]
    whole = await media(client, tokens.specialist)  # without the parameter: as before
    assert len(probe(await whole.read())) == 5

    events = audited(client)
    assert [event for event, _ in events] == ["recording.played"] * 4
    assert [(f.get("participant"), f["by"]["sub"]) for _, f in events] == [
        ("referrer", "dr-amal"),
        ("specialist", "sup-leila"),
        ("referrer-screen", "sup-leila"),
        (None, "dr-karim"),
    ]


async def test_participant_refusals(client, tokens):
    for query in ("?participant=supervisor", "?participant=", "?participant=referrer-audio",
                  "?participant=referrer-video", "?participant=supervisor-screen",
                  "?participant=screen", "?participant=referrer-screen-screen",
                  "?participant=Referrer-screen",
                  "?participant=referrer&participant=specialist"):  # fmt: skip
        response = await media(client, tokens.supervisor, query=query)
        assert await error_code(response, 400) == "invalid_participant", query
    absent = await media(client, tokens.supervisor, "r_referreronly", "?participant=specialist")
    assert await error_code(absent, 404) == "participant_not_found"
    # A participant with a camera but no shared screen, and a recording without any screen.
    for recording_id, query in ((RID, "?participant=specialist-screen"),
                                ("r_referreronly", "?participant=referrer-screen")):  # fmt: skip
        absent = await media(client, tokens.supervisor, recording_id, query)
        assert await error_code(absent, 404) == "participant_not_found", (recording_id, query)
    # Who may not play the recording learns nothing about its participants.
    outsider = await media(client, tokens.other_referrer, query="?participant=referrer")
    assert await error_code(outsider, 404) == "recording_not_found"
    assert [(e, f["participant"]) for e, f in audited(client)] == [
        ("recording.playback_failed", "specialist"),
        ("recording.playback_failed", "specialist-screen"),
        ("recording.playback_failed", "referrer-screen"),
    ]


async def test_metadata_names_the_participants_with_media(client, tokens):
    headers = {"Authorization": f"Bearer {tokens.supervisor}"}
    both = await (await client.get(f"/api/recordings/{RID}", headers=headers)).json()
    assert both["media_participants"] == ["referrer", "specialist"]
    assert both["media_screens"] == ["referrer"]
    assert both["tracks"] == [
        "referrer-audio",
        "referrer-screen",
        "referrer-video",
        "specialist-audio",
        "specialist-video",
    ]
    one = await (await client.get("/api/recordings/r_referreronly", headers=headers)).json()
    assert one["media_participants"] == ["referrer"]
    assert one["media_screens"] == []
    listing = await (await client.get("/api/recordings", headers=headers)).json()
    assert {r["id"] for r in listing["recordings"]} == {RID, "r_referreronly"}
    assert audited(client) == []  # metadata is not playback
