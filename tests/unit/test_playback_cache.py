"""Playback by byte ranges: the Range arithmetic, the seekable encrypted writer and its
random-access reader, the vault's playback cache (built once per rendition, rebuilt
when the segments change, tamper-evident, crypto-shredded with its recording) and
which requests start an audited playback."""

from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path

import av
import pytest

from recordings import vault as vault_module
from recordings.chunkfile import ChunkReader, SeekableWriter
from recordings.crypto import MasterKey, TamperedError, decrypt_segment
from recordings.playback import cache_name
from recordings.plays import RecentPlays
from recordings.ranges import ByteRange, RangeRequest, parse_range, resolve, unsatisfiable
from recordings.storage import FileStorage
from recordings.vault import RecordingNotFound, Vault
from tests.unit.test_recording_crypto import FPS, MS, opus_frames, vp8_frames
from tests.unit.test_vault import RID, AuditLog, Clock, metadata, probe, scan, segment_path

# ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "asked"),
    [
        ("bytes=0-99", RangeRequest(first=0, last=99)),
        ("bytes=100-", RangeRequest(first=100)),
        ("bytes=-500", RangeRequest(suffix=500)),
        ("Bytes = 5-5 ", RangeRequest(first=5, last=5)),  # units are case-insensitive
        ("bytes=7-9,", RangeRequest(first=7, last=9)),  # empty list elements are allowed
        ("bytes=0-0", RangeRequest(first=0, last=0)),
    ],
)
def test_one_range_is_understood(header, asked):
    assert parse_range(header) == asked


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=5-4",  # last before first: the field is invalid
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=１-2",  # digits are ASCII only
        "items=0-5",
        "bytes=0-1,5-9",  # several ranges: answered whole
        "bytes=" + "9" * 5000,  # beyond what anyone serves
    ],
)
def test_other_headers_are_ignored_and_the_whole_file_served(header):
    assert parse_range(header) is None


@pytest.mark.parametrize(
    ("asked", "size", "served"),
    [
        (RangeRequest(first=0, last=99), 1000, (0, 100)),
        (RangeRequest(first=100, last=199), 1000, (100, 200)),
        (RangeRequest(first=900), 1000, (900, 1000)),
        (RangeRequest(first=999), 1000, (999, 1000)),
        (RangeRequest(first=990, last=5000), 1000, (990, 1000)),  # the end is clamped
        (RangeRequest(suffix=10), 1000, (990, 1000)),
        (RangeRequest(suffix=5000), 1000, (0, 1000)),  # longer than the file: all of it
        (RangeRequest(first=1000), 1000, None),
        (RangeRequest(first=5000, last=6000), 1000, None),
        (RangeRequest(suffix=0), 1000, None),
        (RangeRequest(first=0), 0, None),
    ],
)
def test_ranges_resolve_against_the_size(asked, size, served):
    got = resolve(asked, size)
    assert (got.start, got.end) == served if served else got is None
    if got is not None:
        assert got.length == served[1] - served[0]
        assert got.content_range == f"bytes {served[0]}-{served[1] - 1}/{size}"
    assert unsatisfiable(size) == f"bytes */{size}"
    assert ByteRange(0, 1, 1).content_range == "bytes 0-0/1"


# the seekable writer and the reader -----------------------------------------------------


class Sink:
    """An in-memory object writer with write_at, like FileStorage's."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def write_at(self, offset: int, data: bytes) -> None:
        if offset > len(self.data):
            self.data += bytes(offset - len(self.data))
        self.data[offset : offset + len(data)] = data

    def read_at(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset : offset + length])


class Source:
    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


KEY = bytes(range(32))
PREAMBLE = b"preamble-of-7"


def written(ops_seed: int, chunk_size: int) -> tuple[bytes, bytes]:
    """Random writes and backward seeks into a SeekableWriter and a BytesIO alike;
    returns the expected plaintext and the object."""
    rng = random.Random(ops_seed)
    sink, expected = Sink(), io.BytesIO()
    sink.write(PREAMBLE)
    writer = SeekableWriter(sink, KEY, "label", base=len(PREAMBLE), chunk_size=chunk_size)
    for _ in range(60):
        if rng.random() < 0.2 and expected.tell():
            at = rng.randrange(0, len(expected.getvalue()) + 1)
            assert writer.seek(at) == expected.seek(at)
        data = rng.randbytes(rng.randrange(0, 3 * chunk_size))
        assert writer.write(data) == len(data)
        expected.write(data)
        assert writer.tell() == expected.tell()
        if rng.random() < 0.3:
            writer.seek(0, 2)
            expected.seek(0, 2)
    writer.close()
    return expected.getvalue(), bytes(sink.data)


@pytest.mark.parametrize(("seed", "chunk_size"), [(1, 16), (2, 64), (3, 100), (4, 7)])
def test_a_seekable_writer_keeps_every_byte_where_it_was_written(seed, chunk_size):
    plaintext, blob = written(seed, chunk_size)
    assert blob.startswith(PREAMBLE)
    assert plaintext[:64] not in blob  # ciphertext only
    # The body is the segment format of recordings.crypto: it decrypts as one.
    assert decrypt_segment(blob[len(PREAMBLE) :], KEY, "label", 0) == plaintext
    reader = ChunkReader(Source(blob), KEY, "label", base=len(PREAMBLE))
    assert reader.size == len(plaintext)
    rng = random.Random(seed)
    for _ in range(50):
        start = rng.randrange(0, len(plaintext) + 1)
        end = rng.randrange(start, len(plaintext) + 1)
        piece = rng.choice([1, 50, 500])
        assert b"".join(reader.read(start, end, piece)) == plaintext[start:end]


def test_a_writer_keeps_a_few_chunks_in_memory():
    sink = Sink()
    writer = SeekableWriter(sink, KEY, "label", base=0, chunk_size=10)
    writer.write(bytes(1000))
    assert len(writer._chunks) <= 4  # the rest went out, encrypted
    assert len(sink.data) > 900
    with pytest.raises(ValueError, match="outside"):
        writer.seek(1001)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")


@pytest.fixture
def body() -> tuple[bytes, bytes]:
    plaintext, blob = written(5, 32)
    assert len(plaintext) > 10 * 32
    return plaintext, blob


def open_reader(blob: bytes) -> ChunkReader:
    return ChunkReader(Source(blob), KEY, "label", base=len(PREAMBLE))


@pytest.mark.parametrize("cut", [1, 16, 17 + 32 + 16, 17 + 32 + 16 + 1, 300])
def test_a_cut_or_extended_body_fails_when_opened(body, cut):
    _plaintext, blob = body
    with pytest.raises(TamperedError, match="label"):
        open_reader(blob[:-cut])
    with pytest.raises(TamperedError, match="label"):
        open_reader(blob + bytes(cut))


def test_an_altered_chunk_fails_when_read_and_never_yields_wrong_bytes(body):
    plaintext, blob = body
    stride = 17 + 32 + 16
    first = len(PREAMBLE) + 20
    altered = bytearray(blob)
    altered[first + 3 * stride + 30] ^= 1  # inside chunk 3's ciphertext
    reader = open_reader(bytes(altered))
    assert b"".join(reader.read(0, 3 * 32, piece=32)) == plaintext[: 3 * 32]
    pieces = reader.read(0, len(plaintext), piece=32)
    assert [next(pieces) for _ in range(3)] == [plaintext[i * 32 : (i + 1) * 32] for i in (0, 1, 2)]
    with pytest.raises(TamperedError, match="chunk 3 failed authentication"):
        next(pieces)
    # Two chunks swapped: each fails in the other's place.
    swapped = bytearray(blob)
    one, two = first + 1 * stride, first + 2 * stride
    swapped[one : one + stride] = blob[two : two + stride]
    swapped[two : two + stride] = blob[one : one + stride]
    with pytest.raises(TamperedError, match="chunk 1"):
        b"".join(open_reader(bytes(swapped)).read(32, 64, piece=32))
    with pytest.raises(TamperedError, match="another key"):
        ChunkReader(Source(blob), bytes(32), "label", base=len(PREAMBLE))


# the vault's playback cache -------------------------------------------------------------


def mux_seconds(sink, start_s: int, seconds: int = 1) -> None:
    """A segment like the recorder's, of any length at any point of a recording:
    the test clip's frames over and over, each segment starting on a keyframe."""
    container = av.open(sink, mode="w", format="webm", options={"live": "1"})
    video = container.add_mux_stream("vp8", width=320, height=240)
    audio = container.add_mux_stream("opus", rate=48000)
    for stream, title in ((video, "referrer-video"), (audio, "referrer-audio")):
        stream.time_base = MS
        stream.metadata["title"] = title
    frames, sounds = vp8_frames(), opus_frames()
    events = []
    for i in range(start_s * FPS, (start_s + seconds) * FPS):
        data, key = frames[i % len(frames)]
        events.append((round(i * 1000 / FPS), video, data, key))
    for i in range(start_s * 50, (start_s + seconds) * 50):
        events.append((i * 20, audio, sounds[i % len(sounds)], True))
    for pts, stream, data, key in sorted(events, key=lambda e: (e[0], e[1].index)):
        packet = av.Packet(data)
        packet.stream, packet.time_base = stream, MS
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        container.mux(packet)
    container.close()


def record_seconds(vault: Vault, recording_id: str, seconds: int, **meta) -> None:
    """A finished recording of ``seconds`` one-second segments."""
    handle = vault.create(recording_id, metadata(**meta))
    for index in range(1, seconds + 1):
        mux_seconds(handle.open_segment(index), index - 1)
    handle.finish(duration_s=seconds)


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(os.urandom(32))


@pytest.fixture
def vault(root, master) -> Vault:
    vault = Vault(FileStorage(root), master, Clock(), chunk_size=4096)
    record_seconds(vault, RID, 3)
    return vault


@pytest.fixture
def decrypts(monkeypatch) -> list[int]:
    """The segments decrypted, in order: a remux reads every one twice."""
    calls: list[int] = []

    def counting(data, key, rid, index):
        calls.append(index)
        return decrypt_segment(data, key, rid, index)

    monkeypatch.setattr(vault_module, "decrypt_segment", counting)
    return calls


def remuxed(vault: Vault, tracks=None) -> bytes:
    """The file as the vault remuxed it in memory before playback had a cache."""
    data_key, meta = vault._open(RID)
    buffer = io.BytesIO()
    vault._remux(RID, data_key, meta, buffer, tracks)
    return buffer.getvalue()


def cache_path(root: Path, tracks=None) -> Path:
    return root / cache_name(RID, tracks)


def test_a_rendition_is_remuxed_once_and_served_by_ranges(vault, root, decrypts):
    whole = remuxed(vault)
    decrypts.clear()
    audit = AuditLog()
    with vault.stream(RID, audit=audit) as playback:
        assert decrypts == [1, 2, 3, 1, 2, 3]  # built: every segment verified, then copied
        assert playback.data == whole and len(playback) == len(whole)
        assert playback.content_type == "video/webm"
        assert b"".join(playback.pieces(1000, 9000)) == whole[1000:9000]
        assert b"".join(playback.pieces(len(whole) - 5)) == whole[-5:]
        with pytest.raises(ValueError, match="not within"):
            next(playback.pieces(0, len(whole) + 1))
    with vault.stream(RID, audit=audit, played=False) as again:
        assert again.data == whole and again.etag == playback.etag
    assert decrypts == [1, 2, 3, 1, 2, 3]  # the second playback read the cache alone
    assert audit.events() == ["recording.played"]  # played=False: a later range of one
    assert probe(whole)["frames"] == 3 * FPS
    assert scan(root) >= 5  # key, metadata, three segments, the cache: no plaintext
    assert cache_path(root).stat().st_size < len(whole) * 1.01 + 4096


def test_each_rendition_has_its_own_cache(vault, root):
    tracks = {"referrer-video"}
    with vault.stream(RID, audit=AuditLog(), tracks=tracks) as one:
        assert one.data == remuxed(vault, tracks)
    with vault.stream(RID, audit=AuditLog()) as everything:
        assert everything.data == remuxed(vault)
    assert cache_path(root, tracks).exists() and cache_path(root).exists()
    assert one.etag != everything.etag


def test_new_segments_make_a_new_cache(root, master, decrypts):
    lost = Vault(FileStorage(root), master, Clock())
    handle = lost.create(RID, metadata())
    writer = handle.open_segment(1)
    mux_seconds(writer, 0)
    writer.close()  # published
    with lost.stream(RID, audit=AuditLog()) as first:  # a recording still going on
        assert probe(first.data)["frames"] == FPS
    del handle, writer
    taker = Vault(FileStorage(root), master, Clock())
    handle, _meta = taker.resume(RID, node="n_b")
    mux_seconds(handle.open_segment(2), 1)
    handle.finish()
    decrypts.clear()
    with taker.stream(RID, audit=AuditLog()) as second:
        assert probe(second.data)["frames"] == 2 * FPS and second.etag != first.etag
    assert decrypts == [1, 2, 1, 2]


def test_a_segment_tampered_after_caching_fails_the_playback(vault, root):
    with vault.stream(RID, audit=AuditLog()) as playback:
        assert playback.size
    path = segment_path(root, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    audit = AuditLog()
    with pytest.raises(TamperedError, match="segment 2 of recording r_casereview01"):
        vault.stream(RID, audit=audit)
    assert audit.events() == ["recording.playback_failed"]
    assert not cache_path(root).exists()  # made from a segment that no longer holds
    path.unlink()
    with pytest.raises(TamperedError, match=r"missing segment\(s\) \[2\]"):
        vault.stream(RID, audit=audit, played=False)
    assert audit.events() == ["recording.playback_failed"] * 2


STRIDE = 17 + 4096 + 16  # a chunk of the vault's, with its frame and tag


def flip_at(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: flip_at(p, 3),  # the magic
        lambda p: flip_at(p, 40),  # the sealed description
        lambda p: flip_at(p, p.stat().st_size - 1),  # the final chunk
        lambda p: p.write_bytes(p.read_bytes()[:-100]),  # cut
        lambda p: p.write_bytes(p.read_bytes()[:-STRIDE]),  # cut by a whole chunk
        lambda p: p.write_bytes(p.read_bytes() + bytes(STRIDE)),  # extended by one
        lambda p: p.write_bytes(b""),
    ],
)
def test_a_damaged_cache_is_rebuilt_when_opened(vault, root, decrypts, damage):
    with vault.stream(RID, audit=AuditLog()) as playback:
        whole = playback.data
    damage(cache_path(root))
    decrypts.clear()
    with vault.stream(RID, audit=AuditLog()) as rebuilt:
        assert rebuilt.data == whole
    assert decrypts == [1, 2, 3, 1, 2, 3]


def test_a_chunk_altered_inside_the_cache_stops_the_playback_and_is_rebuilt(vault, root):
    with vault.stream(RID, audit=AuditLog()) as playback:
        whole = playback.data
    path = cache_path(root)
    flip_at(path, path.stat().st_size // 2)
    with vault.stream(RID, audit=AuditLog()) as damaged:  # opens: its ends are intact
        served = bytearray()
        with pytest.raises(TamperedError, match="failed authentication"):
            for piece in damaged.pieces():
                served += piece
        assert whole.startswith(bytes(served)) and len(served) < len(whole)
    assert not path.exists()  # dropped: the next playback makes it again
    with vault.stream(RID, audit=AuditLog()) as rebuilt:
        assert rebuilt.data == whole


def test_deleting_the_recording_shreds_its_caches(vault, root, master):
    tracks = {"referrer-audio"}
    playing = vault.stream(RID, audit=AuditLog())
    vault.stream(RID, audit=AuditLog(), tracks=tracks).close()
    copies = {p: p.read_bytes() for p in (cache_path(root), cache_path(root, tracks))}
    pieces = playing.pieces()
    assert next(pieces)

    vault.delete(RID, audit=AuditLog())

    assert not (root / RID).exists()
    with pytest.raises(RecordingNotFound, match="deleted during its playback"):
        next(pieces)  # a playback under way stops
    playing.close()
    # Caches restored from a backup open nothing: their keys were sealed with the
    # recording's key, and it is gone.
    for path, data in copies.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    fresh = Vault(FileStorage(root), master)
    with pytest.raises(RecordingNotFound):
        fresh.stream(RID, audit=AuditLog())
    assert fresh.purge_older_than(0, audit=AuditLog()) == []  # finishes the deletion
    assert not (root / RID).exists()


def test_a_cache_built_while_its_recording_is_deleted_does_not_stay(vault, root, monkeypatch):
    original = vault.playbacks._build

    def deleted_midway(*args, **kwargs):
        vault.keyring.shred("recording", RID)
        return original(*args, **kwargs)

    monkeypatch.setattr(vault.playbacks, "_build", deleted_midway)
    with pytest.raises(RecordingNotFound):
        vault.stream(RID, audit=AuditLog())
    assert not cache_path(root).exists()


def test_the_same_segments_always_make_the_same_bytes(vault, root, master, tmp_path):
    """So a cache rebuilt elsewhere (another node, a restored copy) still matches the
    ranges a player already holds, under the same ETag."""
    with vault.stream(RID, audit=AuditLog()) as playback:
        whole, etag = playback.data, playback.etag
    target = vault.export(RID, tmp_path / "review.webm", audit=AuditLog())
    assert target.read_bytes() == whole  # whichever path made them
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with Vault(FileStorage(copy), master).stream(RID, audit=AuditLog()) as copied:
        assert copied.data == whole and copied.etag != etag  # rebuilt: new file versions


# which requests start a playback ---------------------------------------------------------


def test_a_playback_is_audited_at_its_start_not_per_range():
    clock = Clock(0.0)
    plays = RecentPlays(idle_s=300, capacity=2, clock=clock)
    viewer = ("r_1", None, "sup-leila")
    assert plays.starts(viewer, from_first_byte=False)  # a later range alone: audited
    plays.served(viewer)
    clock.now = 200
    assert not plays.starts(viewer, from_first_byte=False)  # a seek within one playback
    assert plays.starts(viewer, from_first_byte=True)  # from the start again: a new one
    plays.served(viewer)
    clock.now = 499
    assert not plays.starts(viewer, from_first_byte=False)  # the window slides
    clock.now = 501
    assert plays.starts(viewer, from_first_byte=False)  # idle too long: a new playback
    plays.served(("r_1", "referrer", "sup-leila"))
    plays.served(("r_2", None, "sup-leila"))  # beyond capacity: the oldest is forgotten
    assert plays.starts(viewer, from_first_byte=False)
    assert not plays.starts(("r_2", None, "sup-leila"), from_first_byte=False)
