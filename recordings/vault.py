"""The vault: encrypted recordings, their metadata, audited playback and destruction.

Objects of one recording in the storage::

    <id>/key.json           its data key wrapped by the master key (crypto.wrap_data_key)
    <id>/meta.enc           its metadata, JSON sealed with the data key
    <id>/seg-00000001.enc   its segments, each a Matroska/WebM file (crypto.SegmentWriter)

A recording exists while its key object does. Deleting destroys the key first, so a
deletion cut short leaves only ciphertext nobody can open (``purge_older_than``
finishes it). The metadata lists the segments published so far, so a segment
removed later is detected.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, TypeVar

import av
import structlog

from .crypto import (
    CHUNK_SIZE,
    MasterKey,
    MasterKeyError,
    SegmentWriter,
    TamperedError,
    decrypt_segment,
    seal,
    unseal,
)
from .keyring import KeyNotFound, Keyring, Shelf
from .storage import Storage

RECORDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
KEY_OBJECT = "key.json"
KIND = "recording"  # the vault's shelf in the keyring
META_OBJECT = "meta.enc"
_SEGMENT = re.compile(r"seg-(\d{8})\.enc")
FINAL_STATES = ("complete", "interrupted")
WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "libdav1d", "opus", "vorbis"})
_RESERVED = frozenset({"recording_id", "state", "segment_indices"})
_DAY = 86400.0

log = structlog.get_logger("jisr.recordings")
T = TypeVar("T")


class Audit(Protocol):
    def __call__(self, event: str, /, **fields: Any) -> None: ...


class RecordingNotFound(LookupError):
    pass


class RecordingExists(Exception):
    pass


class NoMedia(ValueError):
    """The recording, or the part of it asked for, holds no media to play."""


@dataclass(frozen=True)
class Playback:
    """One continuous playable file, remuxed in memory; iterate it for its bytes."""

    data: bytes = field(repr=False)
    content_type: str
    chunk_size: int = 64 * 1024

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.chunk_size):
            yield self.data[start : start + self.chunk_size]


def _check_id(recording_id: str) -> str:
    if not isinstance(recording_id, str) or not RECORDING_ID.fullmatch(recording_id):
        raise ValueError(f"invalid recording id {recording_id!r}")
    return recording_id


def _segment_name(recording_id: str, index: int) -> str:
    return f"{recording_id}/seg-{index:08d}.enc"


def _meta_ad(recording_id: str) -> bytes:
    return b"jisr.meta.v1\0" + recording_id.encode()


def _track_name(stream: av.stream.Stream) -> str:
    return stream.metadata.get("title") or f"{stream.type}-{stream.index}"


class RecordingHandle:
    """A recording being written. Segments are published when their writer closes;
    the recorder closes only its muxer, so opening the next segment or finishing
    closes any writer still open."""

    def __init__(
        self, vault: Vault, recording_id: str, data_key: bytes, next_segment: int = 1
    ) -> None:
        self.recording_id = recording_id
        self.next_segment = next_segment  # the index the recorder's first segment takes
        self._vault = vault
        self._data_key = data_key
        self._writers: list[SegmentWriter] = []
        self._segment_tracks: dict[int, list[str]] = {}
        self._finished = False

    def open_segment(self, index: int, tracks: Collection[str] = ()) -> SegmentWriter:
        """A writer for segment ``index``; ``tracks`` are the titles of the tracks it
        will hold, noted in the metadata when it is published."""
        if self._finished:
            raise RuntimeError(f"recording {self.recording_id} is already finished")
        self._close_writers()
        storage = self._vault.storage
        if not storage.exists(f"{self.recording_id}/{KEY_OBJECT}"):
            raise RecordingNotFound(f"recording {self.recording_id} was deleted")
        name = _segment_name(self.recording_id, index)
        if storage.exists(name):
            raise RecordingExists(f"segment {index} of recording {self.recording_id} exists")
        writer = SegmentWriter(
            storage.create(name),
            self._data_key,
            self.recording_id,
            index,
            chunk_size=self._vault.chunk_size,
            on_close=self._published,
        )
        self._writers.append(writer)
        self._segment_tracks[index] = list(tracks)
        return writer

    def finish(
        self,
        state: str = "complete",
        ended_at: float | None = None,
        duration_s: float | None = None,
        **updates: Any,
    ) -> dict:
        """Close the recording; ``updates`` are extra metadata (e.g. the final
        consent record)."""
        if state not in FINAL_STATES:
            raise ValueError(f"state must be one of {FINAL_STATES}, not {state!r}")
        if reserved := _RESERVED & updates.keys():
            raise ValueError(f"metadata fields {sorted(reserved)} are the vault's own")
        self._close_writers()
        ended = self._vault.clock() if ended_at is None else ended_at

        def change(meta: dict) -> None:
            meta.update(updates)
            duration = ended - meta["started_at"] if duration_s is None else duration_s
            meta.update(state=state, ended_at=ended, duration_s=max(0.0, duration))

        meta = self._update(change)
        self._finished = True
        self._vault._live.pop(self.recording_id, None)
        return self._vault._public(meta, self._vault._segment_indices(self.recording_id))

    def _close_writers(self) -> None:
        for writer in self._writers:
            try:
                writer.close()
            except OSError:  # a segment lost to a disk error must not stop the recording
                log.exception(
                    "recording.segment_publish_failed",
                    recording_id=self.recording_id,
                    segment=writer.segment_index,
                )
        self._writers.clear()

    def _abort_writers(self) -> None:
        for writer in self._writers:
            writer.abort()
        self._writers.clear()

    def _published(self, index: int) -> None:
        tracks = self._segment_tracks.pop(index, [])

        def change(meta: dict) -> None:
            meta["segment_indices"] = sorted({*meta["segment_indices"], index})
            meta["updated_at"] = self._vault.clock()
            if tracks:
                meta["tracks"] = sorted({*meta.get("tracks", []), *tracks})

        try:
            self._update(change)
        except RecordingNotFound:
            # Deleted while this segment was written: it must not outlive its key.
            self._vault.storage.delete(_segment_name(self.recording_id, index))
            log.warning(
                "recording.segment_dropped",
                recording_id=self.recording_id,
                segment=index,
                reason="recording deleted",
            )

    def _update(self, change: Callable[[dict], None]) -> dict:
        vault = self._vault
        if not vault.storage.exists(f"{self.recording_id}/{KEY_OBJECT}"):
            raise RecordingNotFound(f"recording {self.recording_id} was deleted")
        meta = vault._read_meta(self.recording_id, self._data_key)
        change(meta)
        vault._write_meta(self.recording_id, self._data_key, meta)
        return meta


class Vault:
    def __init__(
        self,
        storage: Storage,
        keys: MasterKey | Keyring,
        clock: Callable[[], float] = time.time,
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        """``keys``: the node's keyring (the vault adds its shelf to it), or just the
        master key for a vault alone."""
        self.storage = storage
        self.clock = clock
        self.chunk_size = chunk_size
        self.keyring = keys if isinstance(keys, Keyring) else Keyring(keys)
        self.keyring.add_shelf(Shelf(KIND, storage, KEY_OBJECT))
        self._live: weakref.WeakValueDictionary[str, RecordingHandle] = (
            weakref.WeakValueDictionary()
        )

    @property
    def master_key_id(self) -> str:
        return self.keyring.master_key_id

    # writing ---------------------------------------------------------------------

    def create(self, recording_id: str, metadata: Mapping[str, Any]) -> RecordingHandle:
        _check_id(recording_id)
        if self.storage.list(f"{recording_id}/"):
            raise RecordingExists(f"recording {recording_id} already exists")
        meta = {
            **metadata,
            "recording_id": recording_id,
            "state": "recording",
            "started_at": metadata.get("started_at") or self.clock(),
            "ended_at": None,
            "duration_s": None,
            "segment_indices": [],
        }
        json.dumps(meta)  # refuse what cannot be stored before anything is written
        data_key = self.keyring.create(KIND, recording_id)
        self._write_meta(recording_id, data_key, meta)
        handle = RecordingHandle(self, recording_id, data_key)
        self._live[recording_id] = handle
        return handle

    def resume(self, recording_id: str, *, node: str) -> tuple[RecordingHandle, dict]:
        """Continue a recording whose node was lost as a new part on ``node``: the
        segment that node was writing is unreadable and discarded; the new part's
        segments follow the last one it published. Returns the handle and the
        metadata (``started_at`` keeps the parts on one timeline)."""
        _check_id(recording_id)
        data_key = self._data_key(recording_id)
        meta = self._read_meta(recording_id, data_key)
        if meta["state"] not in ("recording", "interrupted"):
            raise ValueError(f"recording {recording_id} is {meta['state']}; it cannot go on")
        self.storage.discard_partials(f"{recording_id}/")
        indices = {*meta["segment_indices"], *self._segment_indices(recording_id)}
        next_segment = max(indices, default=0) + 1
        now = self.clock()
        parts = meta.get("parts") or [
            {"node": meta.get("node"), "started_at": meta["started_at"], "first_segment": 1}
        ]
        parts.append({"node": node, "started_at": now, "first_segment": next_segment})
        meta.update(
            state="recording", ended_at=None, duration_s=None, node=node, parts=parts,
            segment_indices=sorted(indices), updated_at=now,
        )  # fmt: skip
        self._write_meta(recording_id, data_key, meta)
        handle = RecordingHandle(self, recording_id, data_key, next_segment)
        self._live[recording_id] = handle
        return handle, meta

    def mark_interrupted_stale(self, is_live: Callable[[str], bool] | None = None) -> list[str]:
        """Recordings still "recording" whose writer died become "interrupted"; every
        segment they closed stays readable. ``is_live`` tells which recordings another
        node is still writing (this vault knows only its own)."""
        marked = []
        for recording_id in self._ids():
            if recording_id in self._live or (is_live is not None and is_live(recording_id)):
                continue
            try:
                data_key = self._data_key(recording_id)
                meta = self._read_meta(recording_id, data_key)
            except (RecordingNotFound, MasterKeyError, TamperedError) as exc:
                log.warning("recording.unreadable", recording_id=recording_id, error=str(exc))
                continue
            if meta["state"] != "recording":
                continue
            ended = meta.get("updated_at") or meta["started_at"]
            indices = {*meta["segment_indices"], *self._segment_indices(recording_id)}
            meta.update(
                state="interrupted",
                ended_at=ended,
                duration_s=max(0.0, ended - meta["started_at"]),
                segment_indices=sorted(indices),
            )
            self.storage.discard_partials(f"{recording_id}/")
            self._write_meta(recording_id, data_key, meta)
            marked.append(recording_id)
        return marked

    # reading ---------------------------------------------------------------------

    def list(self) -> list[dict]:
        recordings = []
        for recording_id in self._ids():
            try:
                recordings.append(self.get(recording_id))
            except (RecordingNotFound, MasterKeyError, TamperedError) as exc:
                recordings.append(
                    {"recording_id": recording_id, "state": "unreadable", "error": str(exc)}
                )
        return sorted(recordings, key=lambda r: (r.get("started_at") or 0, r["recording_id"]))

    def get(self, recording_id: str) -> dict:
        _check_id(recording_id)
        meta = self._read_meta(recording_id, self._data_key(recording_id))
        return self._public(meta, self._segment_indices(recording_id))

    def tracks(self, recording_id: str) -> list[str]:
        """The titles of the recording's tracks (e.g. ``referrer-video``), the union
        over its segments, sorted: as the recorder noted them in the metadata, else
        (recordings written without) from the segments' headers, each still decrypted
        and verified whole. No media leaves, so nothing is audited."""
        _check_id(recording_id)
        data_key, meta = self._open(recording_id)
        if "tracks" in meta:
            return list(meta["tracks"])
        names: set[str] = set()
        for _index, plaintext in self._segments(recording_id, data_key, meta):
            with av.open(io.BytesIO(plaintext), mode="r") as source:
                names.update(_track_name(stream) for stream in source.streams)
        return sorted(names)

    def read_segments(self, recording_id: str, *, audit: Audit, **fields: Any) -> Iterator[bytes]:
        """Plaintext segments in order, each verified whole before it is yielded."""
        _check_id(recording_id)
        data_key, meta = self._open(recording_id)
        self._audit(audit, "recording.read", recording_id, fields)
        try:
            for _index, plaintext in self._segments(recording_id, data_key, meta):
                yield plaintext
        except TamperedError as exc:
            self._audit(audit, "recording.read_failed", recording_id, fields, exc)
            raise

    def export(
        self,
        recording_id: str,
        path: str | os.PathLike[str],
        *,
        audit: Audit,
        tracks: Collection[str] | None = None,
        **fields: Any,
    ) -> Path:
        """Write the whole recording as one playable WebM (Matroska if a codec needs
        it) to ``path``; on any error no file is left behind."""
        _check_id(recording_id)
        target = Path(path)

        def run() -> Path:
            data_key, meta = self._open(recording_id)
            partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w+b") as file:
                    self._remux(recording_id, data_key, meta, file, tracks)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            return target

        return self._audited(
            audit,
            "recording.exported",
            "recording.export_failed",
            recording_id,
            {"path": str(target), **fields},
            run,
        )

    def stream(
        self,
        recording_id: str,
        *,
        audit: Audit,
        tracks: Collection[str] | None = None,
        **fields: Any,
    ) -> Playback:
        """The recording as one playable file for HTTP playback, remuxed whole in
        memory first, so a tampered segment fails before any byte is sent."""
        _check_id(recording_id)

        def run() -> Playback:
            data_key, meta = self._open(recording_id)
            buffer = io.BytesIO()
            content_type = self._remux(recording_id, data_key, meta, buffer, tracks)
            return Playback(buffer.getvalue(), content_type)

        return self._audited(
            audit, "recording.played", "recording.playback_failed", recording_id, fields, run
        )

    # destroying --------------------------------------------------------------------

    def delete(self, recording_id: str, *, audit: Audit, **fields: Any) -> None:
        """Crypto-shredding: the wrapped key is overwritten and removed first, then
        the segments and metadata it alone could open."""
        _check_id(recording_id)

        def run() -> None:
            if (handle := self._live.pop(recording_id, None)) is not None:
                handle._abort_writers()  # a segment in flight must not be published
            prefix = f"{recording_id}/"
            names = self.storage.list(prefix)
            if not names and not self.storage.discard_partials(prefix):
                raise RecordingNotFound(f"recording {recording_id} does not exist")
            key, meta = prefix + KEY_OBJECT, prefix + META_OBJECT
            if key in names:
                self.keyring.shred(KIND, recording_id)
            for name in names:
                if name not in (key, meta):
                    self.storage.delete(name)
            if meta in names:
                self.storage.delete(meta)
            self.storage.discard_partials(prefix)

        self._audited(
            audit, "recording.deleted", "recording.delete_failed", recording_id, fields, run
        )

    def purge_older_than(self, days: float, *, audit: Audit, **fields: Any) -> list[str]:
        """Delete finished recordings started more than ``days`` ago, and finish
        deletions a crash cut short."""
        if days < 0:
            raise ValueError("days must not be negative")
        cutoff = self.clock() - days * _DAY
        purged = []
        for rec in self.list():
            if rec["state"] in FINAL_STATES and rec["started_at"] < cutoff:
                self.delete(
                    rec["recording_id"],
                    audit=audit,
                    reason="retention",
                    older_than_days=days,
                    **fields,
                )
                purged.append(rec["recording_id"])
        keyed = set(self._ids())
        for recording_id in sorted({n.split("/", 1)[0] for n in self.storage.list()} - keyed):
            self.delete(recording_id, audit=audit, reason="interrupted_deletion", **fields)
        return purged

    def rotate_master_key(self, new_master_key: MasterKey) -> int:
        """Rewrap every data key of the keyring (this vault's and every other shelf's)
        under ``new_master_key``; see Keyring.rotate. Returns how many were rewrapped."""
        return self.keyring.rotate(new_master_key).count

    # internals ---------------------------------------------------------------------

    def _ids(self) -> list[str]:
        return self.keyring.shelf(KIND).owners()

    def _segment_indices(self, recording_id: str) -> list[int]:
        indices = []
        for name in self.storage.list(f"{recording_id}/seg-"):
            if match := _SEGMENT.fullmatch(name.rpartition("/")[2]):
                indices.append(int(match[1]))
        return indices

    def _data_key(self, recording_id: str) -> bytes:
        try:
            return self.keyring.data_key(KIND, recording_id)
        except KeyNotFound:
            raise RecordingNotFound(
                f"recording {recording_id} does not exist (or was deleted)"
            ) from None

    def _read_meta(self, recording_id: str, data_key: bytes) -> dict:
        try:
            blob = self.storage.read(f"{recording_id}/{META_OBJECT}")
        except FileNotFoundError:
            raise RecordingNotFound(
                f"recording {recording_id} has no metadata (its creation was cut short)"
            ) from None
        what = f"the metadata of recording {recording_id}"
        return json.loads(unseal(data_key, blob, _meta_ad(recording_id), what))

    def _write_meta(self, recording_id: str, data_key: bytes, meta: dict) -> None:
        blob = seal(data_key, json.dumps(meta).encode(), _meta_ad(recording_id))
        self.storage.put(f"{recording_id}/{META_OBJECT}", blob)

    def _open(self, recording_id: str) -> tuple[bytes, dict]:
        data_key = self._data_key(recording_id)
        return data_key, self._read_meta(recording_id, data_key)

    @staticmethod
    def _public(meta: dict, indices: list[int]) -> dict:
        public = {k: v for k, v in meta.items() if k != "segment_indices"}
        public["segments"] = len(indices)
        return public

    def _segments(
        self, recording_id: str, data_key: bytes, meta: dict
    ) -> Iterator[tuple[int, bytes]]:
        indices = self._segment_indices(recording_id)
        if missing := sorted(set(meta["segment_indices"]) - set(indices)):
            raise TamperedError(f"recording {recording_id} is missing segment(s) {missing}")
        for index in indices:
            try:
                blob = self.storage.read(_segment_name(recording_id, index))
            except FileNotFoundError:
                raise TamperedError(
                    f"segment {index} of recording {recording_id} disappeared"
                ) from None
            yield index, decrypt_segment(blob, data_key, recording_id, index)

    def _remux(
        self,
        recording_id: str,
        data_key: bytes,
        meta: dict,
        file: Any,
        tracks: Collection[str] | None,
    ) -> str:
        """Join the segments' packets into one file; returns its content type.

        A segment may bring a track the earlier ones lacked (a camera that started
        late), so the output's tracks are the union over all segments, known after a
        first pass that also verifies every segment before any output is written.
        Timestamps are kept (the recorder's are continuous across segments), shifted
        so that the *recording* starts at zero: the shift comes from every track, not
        just the selected ones, so renditions of a few tracks (one participant's) share
        one time origin and line up when played side by side.
        """
        templates: dict[str, av.stream.Stream] = {}
        keep: list[av.container.InputContainer] = []  # templates must outlive add_stream
        start: Fraction | None = None
        try:
            for _index, plaintext in self._segments(recording_id, data_key, meta):
                source = av.open(io.BytesIO(plaintext), mode="r")
                wanted, contributes = set(), False
                for stream in source.streams:
                    name = _track_name(stream)
                    if tracks is None or name in tracks:
                        wanted.add(stream.index)
                        if name not in templates:
                            templates[name], contributes = stream, True
                for packet in source.demux():
                    ts = packet.dts if packet.dts is not None else packet.pts
                    if ts is not None and packet.size:
                        at = ts * packet.time_base
                        start = at if start is None else min(start, at)
                if contributes:
                    keep.append(source)
                else:
                    source.close()
            if not templates or start is None:
                which = "" if tracks is None else f" in tracks {sorted(tracks)}"
                raise NoMedia(f"recording {recording_id} has no media to play{which}")
            codecs = {s.codec_context.name for s in templates.values()}
            container_format = "webm" if codecs <= WEBM_CODECS else "matroska"
            output = av.open(file, mode="w", format=container_format)
            targets = {}
            for name, template in templates.items():
                targets[name] = output.add_stream_from_template(template)
                targets[name].metadata["title"] = name
        finally:
            for source in keep:
                source.close()

        last_dts: dict[str, int] = {}
        for _index, plaintext in self._segments(recording_id, data_key, meta):
            with av.open(io.BytesIO(plaintext), mode="r") as source:
                names = {s.index: _track_name(s) for s in source.streams}
                for packet in source.demux():
                    name = names[packet.stream.index]
                    pts, dts = packet.pts, packet.dts if packet.dts is not None else packet.pts
                    if name not in targets or dts is None or not packet.size:
                        continue
                    shift = round(start / packet.time_base)
                    if dts - shift < last_dts.get(name, -(2**62)):
                        continue  # overlaps the previous segment: the muxer refuses it
                    last_dts[name] = dts - shift
                    packet.dts = dts - shift
                    packet.pts = None if pts is None else pts - shift
                    packet.stream = targets[name]
                    output.mux(packet)
        output.close()
        return "video/webm" if container_format == "webm" else "video/x-matroska"

    def _audit(
        self,
        audit: Audit,
        event: str,
        recording_id: str,
        fields: Mapping[str, Any],
        error: BaseException | None = None,
    ) -> None:
        outcome = {"outcome": "ok"} if error is None else {"outcome": "failed", "error": str(error)}
        audit(event, recording_id=recording_id, at=self.clock(), **outcome, **fields)

    def _audited(
        self,
        audit: Audit,
        event: str,
        failed_event: str,
        recording_id: str,
        fields: Mapping[str, Any],
        action: Callable[[], T],
    ) -> T:
        try:
            result = action()
        except Exception as exc:
            self._audit(audit, failed_event, recording_id, fields, exc)
            raise
        self._audit(audit, event, recording_id, fields)
        return result
