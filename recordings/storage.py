"""Where encrypted recording objects live.

Objects have "/"-separated names (``<recording id>/seg-00000001.enc``) and are only
ever visible whole: a streaming write is published atomically by ``close()``, and a
writer that dies leaves at most a partial object that is not listed and not read.
The interface is small enough for an S3-compatible store (multipart upload completed
on close, prefix listing, incomplete uploads aborted by ``discard_partials``, ranged
reads, the ETag as an object's version; ``write_at`` would build the object locally
before its upload).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from pathlib import Path
from typing import Protocol

PART_SUFFIX = ".part"
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


class ObjectWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None:
        """Make the object durable and visible under its name, atomically."""
        ...

    def abort(self) -> None:
        """Discard what was written; nothing becomes visible."""
        ...

    def write_at(self, offset: int, data: bytes, /) -> None:
        """Write ``data`` at ``offset``, for a format whose chunks have fixed places
        and may be rewritten; a gap left before it must be filled before close."""
        ...

    def read_at(self, offset: int, length: int, /) -> bytes:
        """Read back what was written, to rewrite part of it."""
        ...


class ObjectReader(Protocol):
    size: int

    def read_at(self, offset: int, length: int, /) -> bytes:
        """Up to ``length`` bytes from ``offset``: fewer only at the end."""
        ...

    def close(self) -> None: ...


class Storage(Protocol):
    def create(self, name: str) -> ObjectWriter: ...
    def put(self, name: str, data: bytes) -> None:
        """Write a whole object atomically, replacing any previous one."""
        ...

    def read(self, name: str) -> bytes:
        """The whole object; FileNotFoundError if there is none."""
        ...

    def open(self, name: str) -> ObjectReader:
        """Random access to one published object, as it was when opened (a later
        replacement is not seen); FileNotFoundError if there is none."""
        ...

    def version(self, name: str) -> str:
        """A token that changes whenever the object is written again;
        FileNotFoundError if there is none."""
        ...

    def exists(self, name: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]:
        """Names of published objects starting with ``prefix``, sorted."""
        ...

    def delete(self, name: str, *, shred: bool = False) -> None:
        """Remove an object; ``shred`` first overwrites it where the store can."""
        ...

    def discard_partials(self, prefix: str = "") -> int:
        """Remove objects whose writer never published them; how many."""
        ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter:
    def __init__(self, path: Path) -> None:
        self._final = path
        # Unique, so that two writers of one name (two nodes caching one playback)
        # never write into each other's file; the last to close wins.
        self._part = path.with_name(f"{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        fd = os.open(self._part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "w+b")

    def write(self, data: bytes, /) -> int:
        return self._file.write(data)

    def write_at(self, offset: int, data: bytes, /) -> None:
        self._file.flush()
        os.pwrite(self._file.fileno(), data, offset)

    def read_at(self, offset: int, length: int, /) -> bytes:
        self._file.flush()
        return os.pread(self._file.fileno(), length, offset)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
        os.replace(self._part, self._final)
        _fsync_dir(self._final.parent)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
            self._part.unlink(missing_ok=True)


class _FileReader:
    def __init__(self, path: Path) -> None:
        # A read runs in a worker thread; closing waits for it, so a closed (and
        # reused) descriptor number is never read.
        self._lock = threading.Lock()
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, length: int, /) -> bytes:
        with self._lock:
            if self._fd < 0:
                raise ValueError("read from a closed object")
            return os.pread(self._fd, length, offset)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        self.close()


class FileStorage:
    """Objects as files under ``root`` (``JISR_RECORDINGS_DIR``), owner-only."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        for part in parts:
            if not _COMPONENT.fullmatch(part) or part.endswith(PART_SUFFIX):
                raise ValueError(f"invalid object name {name!r}")
        return self.root.joinpath(*parts)

    def create(self, name: str) -> ObjectWriter:
        path = self._path(name)
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _fsync_dir(path.parent.parent)
        return _FileWriter(path)

    def put(self, name: str, data: bytes) -> None:
        writer = self.create(name)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.close()

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def open(self, name: str) -> ObjectReader:
        return _FileReader(self._path(name))

    def version(self, name: str) -> str:
        # ctime cannot be set back by a writer, so a rewrite that restores the size
        # and modification time still shows.
        st = self._path(name).stat()
        return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def _walk(self, prefix: str, partial: bool) -> list[str]:
        head = prefix.rpartition("/")[0]
        start = self._path(head) if head else self.root
        names = []
        for directory, _dirs, files in os.walk(start):
            base = Path(directory).relative_to(self.root).as_posix()
            for file in files:
                if file.endswith(PART_SUFFIX) != partial:
                    continue
                name = file if base == "." else f"{base}/{file}"
                if name.startswith(prefix):
                    names.append(name)
        return sorted(names)

    def list(self, prefix: str = "") -> list[str]:
        return self._walk(prefix, partial=False)

    def delete(self, name: str, *, shred: bool = False) -> None:
        path = self._path(name)
        if shred:
            # Best effort on journaling/copy-on-write file systems and flash; what
            # makes a shredded key truly unrecoverable is retiring the master key.
            with open(path, "r+b") as file:
                file.write(os.urandom(os.fstat(file.fileno()).st_size))
                file.flush()
                os.fsync(file.fileno())
        path.unlink()
        _fsync_dir(path.parent)
        self._prune(path.parent)

    def discard_partials(self, prefix: str = "") -> int:
        names = self._walk(prefix, partial=True)
        for name in names:
            path = self.root / name
            path.unlink(missing_ok=True)
            self._prune(path.parent)
        return len(names)

    def _prune(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty
                return
            directory = directory.parent
