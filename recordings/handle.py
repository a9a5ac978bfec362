"""A recording being written: its segments, each published when its writer closes,
and its metadata kept up to date as they are."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import structlog

from .crypto import SegmentWriter
from .errors import RecordingExists, RecordingNotFound
from .layout import FINAL_STATES, RESERVED_FIELDS, key_name, segment_name

if TYPE_CHECKING:
    from .vault import Vault

log = structlog.get_logger("jisr.recordings")


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
        if not storage.exists(key_name(self.recording_id)):
            raise RecordingNotFound(f"recording {self.recording_id} was deleted")
        name = segment_name(self.recording_id, index)
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
        if reserved := RESERVED_FIELDS & updates.keys():
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
            self._vault.storage.delete(segment_name(self.recording_id, index))
            log.warning(
                "recording.segment_dropped",
                recording_id=self.recording_id,
                segment=index,
                reason="recording deleted",
            )

    def _update(self, change: Callable[[dict], None]) -> dict:
        vault = self._vault
        if not vault.storage.exists(key_name(self.recording_id)):
            raise RecordingNotFound(f"recording {self.recording_id} was deleted")
        meta = vault._read_meta(self.recording_id, self._data_key)
        change(meta)
        vault._write_meta(self.recording_id, self._data_key, meta)
        return meta
