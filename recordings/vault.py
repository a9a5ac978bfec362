"""The vault: encrypted recordings, their metadata, audited playback and destruction.

A recording (see recordings.layout for its objects) exists while its key object
does. Deleting destroys the key first, so a deletion cut short leaves only
ciphertext nobody can open (``purge_older_than`` finishes it). The metadata lists
the segments published so far, so a segment removed later is detected.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import av
import structlog

from .crypto import (
    CHUNK_SIZE,
    MasterKey,
    MasterKeyError,
    TamperedError,
    decrypt_segment,
    seal,
    unseal,
)
from .errors import NoMedia, RecordingExists, RecordingNotFound
from .handle import RecordingHandle
from .keyring import KeyNotFound, Keyring, Shelf
from .layout import (
    FINAL_STATES,
    KEY_OBJECT,
    RECORDING_ID,
    SEGMENT,
    check_id,
    key_name,
    meta_ad,
    meta_name,
    segment_name,
)
from .playback import Playback, PlaybackCache
from .plays import RecentPlays
from .remux import Segments, remux, track_name
from .storage import Storage
from .trail import Trail
from .verify import read_record, recorded_state, with_verification

__all__ = [
    "Audit",
    "NoMedia",
    "Playback",
    "RecordingExists",
    "RecordingHandle",
    "RecordingNotFound",
    "Vault",
]

KIND = "recording"  # the vault's shelf in the keyring
_DAY = 86400.0

log = structlog.get_logger("jisr.recordings")
T = TypeVar("T")


class Audit(Protocol):
    def __call__(self, event: str, /, **fields: Any) -> None: ...


class Vault:
    def __init__(
        self,
        storage: Storage,
        keys: MasterKey | Keyring,
        clock: Callable[[], float] = time.time,
        *,
        chunk_size: int = CHUNK_SIZE,
        origin: str = "node",
    ) -> None:
        """``keys``: the node's keyring (the vault adds its shelf to it), or just the
        master key for a vault alone. ``origin``: who journals what it audits (a
        node, or a ``jisr recordings`` command: see recordings.trail)."""
        self.storage = storage
        self.clock = clock
        self.chunk_size = chunk_size
        self.keyring = keys if isinstance(keys, Keyring) else Keyring(keys)
        self.keyring.add_shelf(Shelf(KIND, storage, KEY_OBJECT))
        self._live: weakref.WeakValueDictionary[str, RecordingHandle] = (
            weakref.WeakValueDictionary()
        )
        self.playbacks = PlaybackCache(storage, self._exists, chunk_size)
        self.plays = RecentPlays()  # which media requests start a playback (the API asks)
        self.trail = Trail(storage, self._data_key, origin=origin)

    @property
    def master_key_id(self) -> str:
        return self.keyring.master_key_id

    # writing ---------------------------------------------------------------------

    def create(self, recording_id: str, metadata: Mapping[str, Any]) -> RecordingHandle:
        check_id(recording_id)
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
        check_id(recording_id)
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

    def mark_interrupted_stale(
        self, is_live: Callable[[str], bool] | None = None, *, audit: Audit | None = None,
        **fields: Any,
    ) -> list[str]:
        """Recordings still "recording" whose writer died become "interrupted"; every
        segment they closed stays readable. ``is_live`` tells which recordings another
        node is still writing (this vault knows only its own). Each is audited as
        ``recording.interrupted`` (always in its journal)."""
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
            self._audit(
                _unaudited if audit is None else audit, "recording.interrupted", recording_id,
                {"ended_at": ended, **fields},
            )  # fmt: skip
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
        check_id(recording_id)
        data_key, meta = self._open(recording_id)
        public = self._public(meta, self._segment_indices(recording_id))
        return with_verification(public, read_record(self.storage, recording_id, data_key))

    def tracks(self, recording_id: str) -> list[str]:
        """The titles of the recording's tracks (e.g. ``referrer-video``), the union
        over its segments, sorted: as the recorder noted them in the metadata, else
        (recordings written without) from the segments' headers, each still decrypted
        and verified whole. No media leaves, so nothing is audited."""
        check_id(recording_id)
        data_key, meta = self._open(recording_id)
        if "tracks" in meta:
            return list(meta["tracks"])
        names: set[str] = set()
        for _index, plaintext in self._segments(recording_id, data_key, meta):
            with av.open(io.BytesIO(plaintext), mode="r") as source:
                names.update(track_name(stream) for stream in source.streams)
        return sorted(names)

    def read_segments(self, recording_id: str, *, audit: Audit, **fields: Any) -> Iterator[bytes]:
        """Plaintext segments in order, each verified whole before it is yielded."""
        check_id(recording_id)
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
        check_id(recording_id)
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
        played: bool = True,
        **fields: Any,
    ) -> Playback:
        """The recording (or ``tracks`` of it) as one playable file for HTTP playback,
        from its encrypted playback cache (recordings.playback): remuxed once per
        rendition until the segments change, verifying every segment before anything
        is written, so a tampered segment fails before any byte is sent; then read by
        byte ranges. ``played``: this opening starts a playback, audited as
        ``recording.played`` (a later range of one is not); a failure is audited
        always. Close the playback when done."""
        check_id(recording_id)

        def run() -> Playback:
            data_key, meta = self._open(recording_id)
            segments = self._plaintexts(recording_id, data_key, meta)
            return self.playbacks.open(recording_id, data_key, tracks, segments)

        if played:
            return self._audited(
                audit, "recording.played", "recording.playback_failed", recording_id, fields, run
            )
        try:
            return run()
        except Exception as exc:
            self._audit(audit, "recording.playback_failed", recording_id, fields, exc)
            raise

    def played(self, recording_id: str, *, audit: Audit, **fields: Any) -> None:
        """Audit the start of a playback opened with ``stream(played=False)``, once
        it is known to be one (see recordings.plays)."""
        self._audit(audit, "recording.played", recording_id, fields)

    # destroying --------------------------------------------------------------------

    def delete(self, recording_id: str, *, audit: Audit, **fields: Any) -> None:
        """Crypto-shredding: the wrapped key is overwritten and removed first, then
        the segments and metadata it alone could open."""
        check_id(recording_id)

        def run() -> None:
            if (handle := self._live.pop(recording_id, None)) is not None:
                handle._abort_writers()  # a segment in flight must not be published
            prefix = f"{recording_id}/"
            names = self.storage.list(prefix)
            if not names and not self.storage.discard_partials(prefix):
                raise RecordingNotFound(f"recording {recording_id} does not exist")
            key, meta = key_name(recording_id), meta_name(recording_id)
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
            if recorded_state(rec) in FINAL_STATES and rec["started_at"] < cutoff:
                self.delete(
                    rec["recording_id"],
                    audit=audit,
                    reason="retention",
                    older_than_days=days,
                    **fields,
                )
                purged.append(rec["recording_id"])
        keyed = set(self._ids())
        folders = {n.split("/", 1)[0] for n in self.storage.list()}
        for recording_id in sorted(f for f in folders - keyed if RECORDING_ID.fullmatch(f)):
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
            if match := SEGMENT.fullmatch(name.rpartition("/")[2]):
                indices.append(int(match[1]))
        return indices

    def _exists(self, recording_id: str) -> bool:
        return self.keyring.has(KIND, recording_id)

    def _data_key(self, recording_id: str) -> bytes:
        try:
            return self.keyring.data_key(KIND, recording_id)
        except KeyNotFound:
            raise RecordingNotFound(
                f"recording {recording_id} does not exist (or was deleted)"
            ) from None

    def _read_meta(self, recording_id: str, data_key: bytes) -> dict:
        try:
            blob = self.storage.read(meta_name(recording_id))
        except FileNotFoundError:
            raise RecordingNotFound(
                f"recording {recording_id} has no metadata (its creation was cut short)"
            ) from None
        what = f"the metadata of recording {recording_id}"
        return json.loads(unseal(data_key, blob, meta_ad(recording_id), what))

    def _write_meta(self, recording_id: str, data_key: bytes, meta: dict) -> None:
        blob = seal(data_key, json.dumps(meta).encode(), meta_ad(recording_id))
        self.storage.put(meta_name(recording_id), blob)

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
                blob = self.storage.read(segment_name(recording_id, index))
            except FileNotFoundError:
                raise TamperedError(
                    f"segment {index} of recording {recording_id} disappeared"
                ) from None
            yield index, decrypt_segment(blob, data_key, recording_id, index)

    def _plaintexts(self, recording_id: str, data_key: bytes, meta: dict) -> Segments:
        def plaintexts() -> Iterator[bytes]:
            for _index, plaintext in self._segments(recording_id, data_key, meta):
                yield plaintext

        return plaintexts

    def _remux(
        self,
        recording_id: str,
        data_key: bytes,
        meta: dict,
        file: Any,
        tracks: Collection[str] | None,
    ) -> str:
        """Join the segments into one playable file (see recordings.remux); returns
        its content type."""
        return remux(recording_id, self._plaintexts(recording_id, data_key, meta), file, tracks)

    def _audit(
        self,
        audit: Audit,
        event: str,
        recording_id: str,
        fields: Mapping[str, Any],
        error: BaseException | None = None,
    ) -> None:
        outcome = {"outcome": "ok"} if error is None else {"outcome": "failed", "error": str(error)}
        record = {"recording_id": recording_id, "at": self.clock(), **outcome, **fields}
        audit(event, **record)
        self.trail.record(recording_id, event, record)

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


def _unaudited(event: str, /, **fields: Any) -> None:
    """No audit line (the journal still has the event)."""
