"""The outbox's durable half: each node's append-only journal on its own disk.

A change is appended here (one line, sealed with a key derived from the master
key, so nothing readable reaches the disk) before the request that made it is
answered; the node's outbox then applies the journal to the record store in order
and remembers how far it got (``<name>.done``). A database that is down only makes
the journal longer. The file is locked while its node lives, and a node adopts the
journals of nodes that are gone (a restart under a new id) and finishes them.

What survives: a crash of the process (each line is written with one ``write``
before the answer); a power cut loses at most the last second, as Redis with
``appendfsync everysec`` (the outbox calls ``sync`` each second, off the loop).
"""

from __future__ import annotations

import base64
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from recordings.crypto import TamperedError, seal, unseal

SUFFIX = ".journal"
SEP = b":"


class Journal:
    def __init__(self, path: Path, key_for: Callable[[str | None], tuple[str, bytes]]) -> None:
        """Open (creating) and lock ``path``; BlockingIOError if another living node
        holds it. ``key_for(key_id)``: the sealing key (id, key) of that master key
        (None: the current one)."""
        self.path = path
        self.name = path.name.removesuffix(SUFFIX)
        self._done_path = path.with_suffix(".done")
        self._key_for = key_for
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise
        self._drop_torn_tail()
        size = os.fstat(self._fd).st_size
        done = self._read_done()
        self._offset = done if done <= size else 0  # larger: emptied after it was applied
        self.backlog = self._count_from(self._offset)
        self.unsynced = False  # appended since the last sync

    @property
    def ad(self) -> bytes:
        return b"jisr.outbox\0" + self.name.encode()

    def _read_done(self) -> int:
        try:
            return int(self._done_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _drop_torn_tail(self) -> None:
        """A line cut short by a crash never was: drop it before appending more."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as file:
            data = file.read()
        keep = data.rfind(b"\n") + 1
        if keep != size:
            os.ftruncate(self._fd, keep)

    def _count_from(self, offset: int) -> int:
        with open(self.path, "rb") as file:
            file.seek(offset)
            return sum(1 for _ in file)

    def append(self, data: bytes) -> None:
        key_id, key = self._key_for(None)
        line = key_id.encode() + SEP + base64.b64encode(seal(key, data, self.ad)) + b"\n"
        os.write(self._fd, line)  # O_APPEND: one write, one whole line
        self.backlog += 1
        self.unsynced = True

    def sync(self) -> None:
        """Everything appended so far on the disk itself (blocks: call it off the loop)."""
        self.unsynced = False
        os.fsync(self._fd)

    def read(self, limit: int) -> list[tuple[int, bytes | None]]:
        """Up to ``limit`` entries after the last applied one, each with the offset
        just past it; None for a line that fails to open (altered on disk)."""
        found: list[tuple[int, bytes | None]] = []
        with open(self.path, "rb") as file:
            file.seek(self._offset)
            offset = self._offset
            for line in file:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                found.append((offset, self._open_line(line.rstrip(b"\n"))))
                if len(found) >= limit:
                    break
        return found

    def _open_line(self, line: bytes) -> bytes | None:
        key_id, _, sealed = line.partition(SEP)
        try:
            _, key = self._key_for(key_id.decode())
            return unseal(key, base64.b64decode(sealed), self.ad, "an outbox entry")
        except (TamperedError, ValueError, UnicodeDecodeError, LookupError):
            return None
        except Exception:  # noqa: BLE001 - a key this node lacks: the entry cannot be read
            return None

    def ack(self, offset: int, count: int) -> None:
        """Entries up to ``offset`` are in the record store. When that is all of
        them the journal is emptied (the same call: no line is appended between)."""
        self._offset = offset
        self.backlog = max(0, self.backlog - count)
        if offset >= os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, 0)
            self._offset = 0
        tmp = self._done_path.with_suffix(".done.tmp")
        tmp.write_text(str(self._offset))
        os.replace(tmp, self._done_path)

    def close(self, *, remove: bool = False) -> None:
        if remove:
            self.path.unlink(missing_ok=True)
            self._done_path.unlink(missing_ok=True)
        os.close(self._fd)  # and the lock with it


def adopt(folder: Path, key_for: Callable[[str | None], tuple[str, bytes]],
          exclude: Path) -> list[Journal]:  # fmt: skip
    """Journals in ``folder`` whose nodes are gone (nobody holds their lock)."""
    found = []
    for path in sorted(folder.glob("*" + SUFFIX)):
        if path == exclude:
            continue
        try:
            found.append(Journal(path, key_for))
        except BlockingIOError:
            continue
    return found
