"""Recording playback by byte ranges through the real HTTP API: an encrypted vault on
disk holding real VP8/Opus segments, the aiohttp server, a client reading what it
serves. Ranges are exactly the bytes of the whole answer; memory per playback does not
grow with the recording's length; tampering and deletion stop playback."""

from __future__ import annotations

import os

import aiohttp
import pytest

from recordings.crypto import MasterKey
from recordings.playback import cache_name
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.keys import AUDIT
from signaling.store import MemoryStore
from tests.support.playback_node import PlaybackNode
from tests.unit.test_playback_cache import record_seconds
from tests.unit.test_vault import AuditLog, probe

RID, SHORT, LONG = "r_ranges01", "r_short01", "r_long01"
SHORT_S, LONG_S = 3, 40


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def vault(store) -> Vault:
    vault = Vault(FileStorage(store), MasterKey(os.urandom(32)))
    participants = {"participants": [{"sub": "dr-amal"}, {"sub": "dr-karim"}]}
    record_seconds(vault, RID, SHORT_S, **participants)
    return vault


@pytest.fixture
async def client(aiohttp_client, settings, vault):
    app = create_app(settings, store=MemoryStore(), vault=vault)
    app[AUDIT].recording_event = AuditLog()
    return await aiohttp_client(app)


def audited(client) -> list[str]:
    return [event for event, _ in client.server.app[AUDIT].recording_event]


async def get(client, token: str, headers: dict | None = None, query: str = "", rid: str = RID):
    return await client.get(
        f"/api/recordings/{rid}/media{query}",
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
    )


async def whole(client, token: str, **kw) -> bytes:
    response = await get(client, token, **kw)
    assert response.status == 200, await response.text()
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Content-Range" not in response.headers
    data = await response.read()
    assert int(response.headers["Content-Length"]) == len(data)
    return data


async def test_ranges_are_exactly_the_bytes_of_the_whole_file(client, tokens):
    data = await whole(client, tokens.supervisor)
    size = len(data)
    assert probe(data)["frames"] == SHORT_S * 30
    cases = {
        "bytes=0-99": (0, 100),  # the first bytes
        "bytes=1000-49999": (1000, 50000),  # the middle
        f"bytes={size // 2}-{size // 2}": (size // 2, size // 2 + 1),  # one byte
        "bytes=-500": (size - 500, size),  # the last bytes
        f"bytes={size - 700}-": (size - 700, size),  # from a point to the end
        f"bytes=70000-{size * 2}": (70000, size),  # past the end: to the end
        f"bytes=-{size * 3}": (0, size),  # a suffix longer than the file: all of it
    }
    for header, (start, end) in cases.items():
        response = await get(client, tokens.supervisor, {"Range": header})
        assert response.status == 206, (header, await response.text())
        assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}", header
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Content-Type"] == "video/webm"
        body = await response.read()
        assert int(response.headers["Content-Length"]) == len(body) == end - start, header
        assert body == data[start:end], header
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = await get(client, tokens.supervisor, {"Range": header})
        assert response.status == 416, header
        assert response.headers["Content-Range"] == f"bytes */{size}"
        assert (await response.json())["error"]["code"] == "range_not_satisfiable"
    # Several ranges, another unit, nonsense: the header is ignored, all is served.
    for header in ("bytes=0-9,20-29", "lines=1-2", "bytes=9-1", "bytes=x"):
        assert await whole(client, tokens.supervisor, headers={"Range": header}) == data


async def test_if_range_serves_the_whole_file_once_it_changed(client, tokens):
    first = await get(client, tokens.supervisor)
    data, etag = await first.read(), first.headers["ETag"]
    same = await get(client, tokens.supervisor, {"Range": "bytes=10-19", "If-Range": etag})
    assert same.status == 206 and await same.read() == data[10:20]
    other = await get(client, tokens.supervisor, {"Range": "bytes=10-19", "If-Range": '"old"'})
    assert other.status == 200 and await other.read() == data
    dated = {"Range": "bytes=10-19", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert (await get(client, tokens.supervisor, dated)).status == 200


async def test_a_rendition_by_ranges(client, tokens):
    query = "?participant=referrer"
    data = await whole(client, tokens.referrer, query=query)
    assert set(probe(data)["tracks"]) == {"referrer-video", "referrer-audio"}
    response = await get(client, tokens.referrer, {"Range": "bytes=-1234"}, query=query)
    assert response.status == 206 and await response.read() == data[-1234:]


async def test_a_playback_is_audited_once_not_per_range(client, tokens):
    await whole(client, tokens.supervisor)  # a whole file: a playback
    assert audited(client) == ["recording.played"]
    for header in ("bytes=0-", "bytes=5000-", "bytes=-100", "bytes=2000-2999"):
        assert (await get(client, tokens.referrer, {"Range": header})).status == 206
    # The player's first request (from byte 0) starts it; its seeks continue it.
    assert audited(client) == ["recording.played"] * 2
    # A part asked for alone, by a viewer with no playback under way, is audited.
    assert (await get(client, tokens.specialist, {"Range": "bytes=3000-"})).status == 206
    assert (await get(client, tokens.specialist, {"Range": "bytes=4000-"})).status == 206
    assert audited(client) == ["recording.played"] * 3
    # Nothing served, nothing played: an unsatisfiable range, a HEAD.
    assert (await get(client, tokens.admin, {"Range": "bytes=99999999-"})).status == 416
    head = await client.head(f"/api/recordings/{RID}/media", headers=tokens.header(tokens.admin))
    assert head.status == 200 and int(head.headers["Content-Length"]) > 0
    assert await head.read() == b""
    assert audited(client) == ["recording.played"] * 3
    fields = client.server.app[AUDIT].recording_event
    assert [f["by"]["sub"] for _, f in fields] == ["sup-leila", "dr-amal", "dr-karim"]


async def test_a_tampered_segment_fails_with_nothing_served(client, tokens, store):
    await whole(client, tokens.supervisor)  # cached
    path = store / RID / "seg-00000002.enc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    for headers in ({}, {"Range": "bytes=5000-"}):
        response = await get(client, tokens.supervisor, headers)
        assert response.status == 409
        assert response.headers["Content-Type"].startswith("application/json")
        assert (await response.json())["error"]["code"] == "recording_tampered"
    assert audited(client) == ["recording.played"] + ["recording.playback_failed"] * 2


async def test_an_altered_cache_cuts_the_answer_and_is_made_again(client, tokens, store):
    data = await whole(client, tokens.supervisor)
    cache = store / cache_name(RID, None)
    blob = bytearray(cache.read_bytes())
    blob[len(blob) * 3 // 4] ^= 0x01
    cache.write_bytes(bytes(blob))
    response = await get(client, tokens.supervisor)
    assert response.status == 200  # its ends verify: the altered chunk is found later
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()  # cut short, never wrong bytes
    assert await whole(client, tokens.supervisor) == data  # rebuilt


async def test_deletion_makes_the_cache_unreadable(client, tokens, store):
    await whole(client, tokens.supervisor)
    cache = store / cache_name(RID, None)
    saved = cache.read_bytes()
    deleted = await client.delete(f"/api/recordings/{RID}", headers=tokens.header(tokens.admin))
    assert deleted.status == 200
    assert not cache.exists() and not (store / RID).exists()
    response = await get(client, tokens.supervisor)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "recording_not_found"
    cache.parent.mkdir()
    cache.write_bytes(saved)  # restored from a backup: the key that opened it is gone
    assert (await get(client, tokens.supervisor, {"Range": "bytes=0-9"})).status == 404


async def drain(http: aiohttp.ClientSession, node: PlaybackNode, token: str, rid: str):
    """Play one recording whole, reading as a player does without keeping it; the
    bytes read and the peak of the server's Python memory meanwhile (MiB)."""
    node.mark()
    size = 0
    async with http.get(
        f"{node.base}/api/recordings/{rid}/media", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200
        async for piece in response.content.iter_chunked(64 * 1024):
            size += len(piece)
    return size, node.peak()


async def test_memory_per_playback_does_not_grow_with_the_recording(settings, tokens, store):
    master_key = os.urandom(32)
    vault = Vault(FileStorage(store), MasterKey(master_key))  # 64 KiB chunks
    record_seconds(vault, SHORT, SHORT_S)
    record_seconds(vault, LONG, LONG_S)
    figures = {}
    with PlaybackNode(settings, store, master_key) as node:
        async with aiohttp.ClientSession() as http:
            for rid in (SHORT, LONG):
                size, first = await drain(http, node, tokens.supervisor, rid)  # remuxed, served
                again = max(
                    [(await drain(http, node, tokens.supervisor, rid))[1] for _ in range(3)]
                )
                figures[rid] = (size, first, again)
    print(
        "the server's peak Python memory per playback (MiB), first (remux into the cache) / "
        "again (from the cache, the highest of 3): "
        + "; ".join(
            f"{rid} {size / 2**20:.2f} MiB file: {first:.2f} / {again:.2f}"
            for rid, (size, first, again) in figures.items()
        )
    )
    (short, short_first, short_again), (long, long_first, long_again) = figures.values()
    assert long >= 6 * short
    # A few chunks and pieces in flight, whatever the length (the margin is timing:
    # how much the server's transport holds at the peak).
    assert long_again <= short_again + 0.5
    assert long_first <= short_first + 0.5  # one segment at a time while remuxing
    assert long_again < long / 2**20 / 4 and long_first < long / 2**20 / 4
