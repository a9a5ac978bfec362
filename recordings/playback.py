"""Playback from an encrypted cache: each rendition of a recording is remuxed once
into one object beside its segments, and byte ranges of it are served by decrypting
only the chunks they cover, so a playback holds a few chunks in memory whatever the
recording's length.

The object ``<id>/play-<rendition hash>.enc``::

    magic "JSRPLY" | version u8 (1) | description length u32 | description | body

The description is JSON sealed with the recording's data key (bound to the recording
and the object's name): the body's own fresh data key, the content type, the tracks
and the fingerprint of the segments the body was made from (their indices and storage
versions). The body is the chunked format of recordings.crypto under that fresh key
(recordings.chunkfile). So a cache opens only while its recording's key exists:
deleting the recording shreds the key, and with it every cache, wherever a copy lies.

A cache whose fingerprint no longer matches the segments is rebuilt; the rebuild
decrypts and verifies every segment before writing anything, so a tampered segment
fails the playback. A cache that fails authentication when opened is dropped and
rebuilt; a chunk that fails later stops the playback (the bytes already sent were
authentic) and drops the cache for the next one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
from collections.abc import Callable, Collection, Iterator

import structlog

from .chunkfile import ChunkReader, SeekableWriter
from .crypto import CHUNK_SIZE, TamperedError, new_data_key, seal, unseal
from .errors import RecordingNotFound
from .layout import SEGMENT
from .remux import Remux, Segments
from .storage import ObjectReader, Storage

MAGIC = b"JSRPLY"
VERSION = 1
PIECE = 128 * 1024  # plaintext decrypted per step of a playback
_PREAMBLE = struct.Struct(">6sBI")  # magic, version, description length
_MAX_DESCRIPTION = 64 * 1024

log = structlog.get_logger("jisr.recordings")


def cache_name(recording_id: str, tracks: Collection[str] | None) -> str:
    which = "*" if tracks is None else "\0".join(sorted(tracks))
    return f"{recording_id}/play-{hashlib.sha256(which.encode()).hexdigest()[:16]}.enc"


def _description_ad(recording_id: str, name: str) -> bytes:
    return b"jisr.playback.v1\0" + recording_id.encode() + b"\0" + name.encode()


class Playback:
    """One continuous playable file, read from its cache by byte range: iterate it
    for its bytes, or ``pieces(start, end)`` for some of them. Holds the cache open
    as it was (a rebuild elsewhere does not change it underfoot) until ``close()``;
    every piece first checks that the recording still exists."""

    def __init__(
        self,
        source: ObjectReader,
        body: ChunkReader,
        content_type: str,
        etag: str,
        alive: Callable[[], bool],
        dropped: Callable[[], None],
    ) -> None:
        self.content_type = content_type
        self.etag = etag  # names these exact bytes: the segments' fingerprint
        self.size = body.size
        self._source, self._body = source, body
        self._alive, self._dropped = alive, dropped

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        return self.pieces()

    @property
    def data(self) -> bytes:
        """The whole file in memory, for small files and tests; serving uses pieces."""
        return b"".join(self.pieces())

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[bytearray]:
        """The bytes ``[start, end)`` in pieces of about PIECE bytes, each verified
        before it is yielded."""
        end = self.size if end is None else end
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"bytes {start}-{end} are not within {self.size}")
        reader = self._body.read(start, end, PIECE)
        while True:
            if not self._alive():
                raise RecordingNotFound("the recording was deleted during its playback")
            try:
                piece = next(reader, None)
            except TamperedError:
                self._dropped()
                raise
            if piece is None:
                return
            yield piece

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Playback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Locks:
    """One lock per cache object, so that concurrent playbacks wait for one build."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def hold(self, name: str) -> _Held:
        with self._guard:
            lock, users = self._locks.get(name) or (threading.Lock(), 0)
            self._locks[name] = (lock, users + 1)
        return _Held(self, name, lock)

    def release(self, name: str) -> None:
        with self._guard:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class _Held:
    def __init__(self, locks: _Locks, name: str, lock: threading.Lock) -> None:
        self._locks, self._name, self._lock = locks, name, lock

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        self._locks.release(self._name)


class PlaybackCache:
    """The vault's playback caches, in its storage beside each recording."""

    def __init__(
        self, storage: Storage, alive: Callable[[str], bool], chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.storage = storage
        self.chunk_size = chunk_size
        self._alive = alive  # whether a recording's key still exists
        self._locks = _Locks()

    def fingerprint(self, recording_id: str, tracks: Collection[str] | None) -> str:
        """What a cache was made from: the tracks and every segment's version."""
        segments = []
        for name in self.storage.list(f"{recording_id}/seg-"):
            if SEGMENT.fullmatch(name.rpartition("/")[2]):
                try:
                    segments.append([name, self.storage.version(name)])
                except FileNotFoundError:
                    segments.append([name, None])  # the rebuild says what is missing
        which = None if tracks is None else sorted(tracks)
        blob = json.dumps({"v": VERSION, "tracks": which, "segments": segments}).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def open(
        self,
        recording_id: str,
        data_key: bytes,
        tracks: Collection[str] | None,
        segments: Segments,
    ) -> Playback:
        """The playback of these tracks (None: all), from its cache, built first if
        there is none for the segments as they are now."""
        name = cache_name(recording_id, tracks)
        fingerprint = self.fingerprint(recording_id, tracks)
        if (playback := self._open(recording_id, name, data_key, fingerprint)) is not None:
            return playback
        with self._locks.hold(name):
            # Dropping a bad cache only here: no build of this process is under way.
            playback = self._open(recording_id, name, data_key, fingerprint, drop=True)
            for _attempt in range(3):  # another node may replace it right after a build
                if playback is not None:
                    return playback
                self._build(recording_id, name, data_key, tracks, fingerprint, segments)
                playback = self._open(recording_id, name, data_key, fingerprint, drop=True)
        raise TamperedError(f"the playback of recording {recording_id} did not verify once made")

    def _open(
        self, recording_id: str, name: str, data_key: bytes, fingerprint: str, drop: bool = False
    ) -> Playback | None:
        """The cache if it is there, authentic and made from these segments; ``drop``
        one that is not authentic."""
        try:
            source = self.storage.open(name)
        except FileNotFoundError:
            return None
        try:
            description, base = self._description(source, recording_id, name, data_key)
            if description["fingerprint"] != fingerprint:
                source.close()
                return None
            key = base64.b64decode(description["key"])
            body = ChunkReader(source, key, f"playback {name}", base=base)
        except (TamperedError, KeyError, ValueError, TypeError) as exc:
            source.close()
            if drop:
                log.warning("recording.playback_cache_dropped", recording_id=recording_id,
                            cache=name, error=str(exc))  # fmt: skip
                self._drop(name)
            return None
        return Playback(
            source, body, description["content_type"], fingerprint,
            alive=lambda: self._alive(recording_id), dropped=lambda: self._drop(name),
        )  # fmt: skip

    @staticmethod
    def _description(
        source: ObjectReader, recording_id: str, name: str, data_key: bytes
    ) -> tuple[dict, int]:
        head = source.read_at(0, _PREAMBLE.size)
        if len(head) < _PREAMBLE.size:
            raise TamperedError(f"playback {name} is truncated")
        magic, version, length = _PREAMBLE.unpack(head)
        if magic != MAGIC or version != VERSION or length > _MAX_DESCRIPTION:
            raise TamperedError(f"playback {name} is not a playback cache this version reads")
        blob = source.read_at(_PREAMBLE.size, length)
        what = f"the description of playback {name}"
        plaintext = unseal(data_key, blob, _description_ad(recording_id, name), what)
        return json.loads(plaintext), _PREAMBLE.size + length

    def _build(
        self,
        recording_id: str,
        name: str,
        data_key: bytes,
        tracks: Collection[str] | None,
        fingerprint: str,
        segments: Segments,
    ) -> None:
        try:
            job = Remux(recording_id, segments, tracks)  # every segment verified here
        except TamperedError:
            self._drop(name)  # made from segments that no longer hold
            raise
        with job:
            key = new_data_key()
            description = {
                "key": base64.b64encode(key).decode(),
                "content_type": job.content_type,
                "tracks": None if tracks is None else sorted(tracks),
                "fingerprint": fingerprint,
            }
            blob = seal(data_key, json.dumps(description).encode(),
                        _description_ad(recording_id, name))  # fmt: skip
            sink = self.storage.create(name)
            try:
                sink.write(_PREAMBLE.pack(MAGIC, VERSION, len(blob)) + blob)
                base = _PREAMBLE.size + len(blob)
                body = SeekableWriter(
                    sink, key, f"playback {name}", base=base, chunk_size=self.chunk_size
                )
                job.write(body)
                body.close()
            except BaseException:
                sink.abort()
                raise
            sink.close()
        if not self._alive(recording_id):  # deleted meanwhile: it must not outlive the key
            self._drop(name)
            raise RecordingNotFound(f"recording {recording_id} was deleted")

    def _drop(self, name: str) -> None:
        try:
            self.storage.delete(name)
        except FileNotFoundError:
            pass
