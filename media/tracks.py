"""A sender-side track whose source can be swapped while the call runs."""

from __future__ import annotations

import asyncio
import contextlib

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class SlotTrack(MediaStreamTrack):
    """What one subscriber receives from one publisher slot (e.g. "the referrer's
    video"). It yields nothing until a source is attached, follows the publisher
    across reconnects, and waits again when the publisher leaves."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source: MediaStreamTrack | None = None
        self._changed = asyncio.Event()

    @property
    def source(self) -> MediaStreamTrack | None:
        return self._source

    def attach(self, source: MediaStreamTrack | None) -> None:
        previous, self._source = self._source, source
        if previous is not None and previous is not source:
            previous.stop()
        self._changed.set()

    async def recv(self):
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            if source is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._changed.clear()
            frame_task = asyncio.ensure_future(source.recv())
            changed_task = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({frame_task, changed_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed_task.cancel()
                if not frame_task.done():
                    frame_task.cancel()
            if frame_task.cancelled():
                continue
            try:
                frame = frame_task.result()
            except MediaStreamError:
                if self._source is source:
                    self._source = None
                continue
            if self._source is source:
                return frame

    def stop(self) -> None:
        super().stop()
        self._changed.set()
        if self._source is not None:
            with contextlib.suppress(Exception):
                self._source.stop()
            self._source = None
