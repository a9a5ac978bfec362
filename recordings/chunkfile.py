"""Random access to the chunked AES-256-GCM format of recordings.crypto.

Every chunk but the final one holds exactly ``chunk size`` plaintext bytes, so chunk
``i`` lies at a fixed offset and a byte range is read by decrypting only the chunks
it covers. The final chunk is verified whenever an object is opened: it carries the
last flag and its index in its associated data, so a truncated or extended object
fails there, before its size is believed.

The writer is seekable, because a muxer goes back to fill in a file's header once it
knows the duration and where the cues are: a few chunks stay in memory while they
are written, and a chunk written again is read back, decrypted and re-encrypted in
its place under a fresh nonce. The object holds ciphertext only, at every moment.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .crypto import (
    _CHUNK,
    _HEADER,
    _POSITION,
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    NONCE_BYTES,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    TAG_BYTES,
    TamperedError,
    _associated_prefix,
    data_key_id,
)
from .storage import ObjectReader, ObjectWriter

OVERHEAD = _CHUNK.size + TAG_BYTES  # per chunk: frame and tag
IN_MEMORY = 4  # chunks a writer keeps before writing the oldest out


@dataclass(frozen=True)
class Layout:
    """Where the chunks of a body starting at ``base`` of its object lie."""

    base: int
    chunk_size: int

    @property
    def first_chunk(self) -> int:
        return self.base + _HEADER.size

    @property
    def stride(self) -> int:
        return OVERHEAD + self.chunk_size

    def offset(self, index: int) -> int:
        return self.first_chunk + index * self.stride


class _Cipher:
    """One body's key and associated data (as SegmentWriter's: segment index 0)."""

    def __init__(self, header: bytes, data_key: bytes, label: str) -> None:
        self.aead = AESGCM(data_key)
        self.prefix = _associated_prefix(header, label)

    def seal(self, index: int, plaintext: bytes, last: bool) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ad = self.prefix + _POSITION.pack(0, index, last)
        ciphertext = self.aead.encrypt(nonce, plaintext, ad)
        return _CHUNK.pack(last, nonce, len(ciphertext)) + ciphertext

    def open(self, index: int, frame: bytes, last: bool) -> bytes:
        flag, nonce, length = _CHUNK.unpack_from(frame)
        if flag != last or length != len(frame) - _CHUNK.size:
            raise InvalidTag
        ad = self.prefix + _POSITION.pack(0, index, last)
        return self.aead.decrypt(nonce, frame[_CHUNK.size :], ad)


class SeekableWriter:
    """A seekable, write-only binary file that encrypts into ``sink`` from ``base``
    on. Give it to PyAV as the output file; ``close()`` writes what is still in
    memory and the final chunk, and leaves publishing the sink to the caller."""

    mode = "wb"

    def __init__(
        self,
        sink: ObjectWriter,
        data_key: bytes,
        label: str,
        *,
        base: int,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}")
        header = _HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, chunk_size, data_key_id(data_key))
        self._sink = sink
        self._layout = Layout(base, chunk_size)
        self._cipher = _Cipher(header, data_key, label)
        self._chunks: OrderedDict[int, bytearray] = OrderedDict()  # plaintext, oldest first
        self._pos = self._size = 0
        self._closed = False
        sink.write_at(base, header)

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._size)[whence]
        if not 0 <= base + offset <= self._size:
            raise ValueError("seek outside what is written")  # a gap could never be filled
        self._pos = base + offset
        return self._pos

    def flush(self) -> None:
        pass  # chunks go out when they leave memory: a partial one is not final yet

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed SeekableWriter")
        view, size = memoryview(data).cast("B"), self._layout.chunk_size
        while view:
            index, at = divmod(self._pos, size)
            chunk = self._chunk(index)
            n = min(size - at, len(view))
            chunk[at : at + n] = view[:n]
            view = view[n:]
            self._pos += n
            self._size = max(self._size, self._pos)
        self._spill()
        return memoryview(data).nbytes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        final = self._size // self._layout.chunk_size
        for index, chunk in self._chunks.items():
            if index != final:
                self._put(index, chunk, last=False)
        self._put(final, self._chunks.get(final, bytearray()), last=True)
        self._chunks.clear()

    def _chunk(self, index: int) -> bytearray:
        if index in self._chunks:
            self._chunks.move_to_end(index)
        elif index * self._layout.chunk_size < self._size:  # written out: read it back
            frame = self._sink.read_at(self._layout.offset(index), self._layout.stride)
            try:
                plaintext = self._cipher.open(index, frame, last=False)
            except InvalidTag:
                raise TamperedError(f"chunk {index} changed while it was written") from None
            self._chunks[index] = bytearray(plaintext)
        else:
            self._chunks[index] = bytearray()
        return self._chunks[index]

    def _spill(self) -> None:
        """Write the least recently used full chunks out, keeping IN_MEMORY."""
        size = self._layout.chunk_size
        for index in list(self._chunks):
            if len(self._chunks) <= IN_MEMORY:
                return
            if len(self._chunks[index]) == size:  # the partial last one stays
                self._put(index, self._chunks.pop(index), last=False)

    def _put(self, index: int, plaintext: bytearray, last: bool) -> None:
        frame = self._cipher.seal(index, bytes(plaintext), last)
        self._sink.write_at(self._layout.offset(index), frame)


class ChunkReader:
    """The plaintext of a body starting at ``base`` of ``source``, by byte range."""

    def __init__(self, source: ObjectReader, data_key: bytes, label: str, *, base: int) -> None:
        self._source = source
        self._where = label
        header = source.read_at(base, _HEADER.size)
        if len(header) < _HEADER.size:
            raise TamperedError(f"{label} is truncated: its header is incomplete")
        magic, version, _flags, chunk_size, key_id = _HEADER.unpack(header)
        if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION:
            raise TamperedError(f"{label} is not an encrypted body this version reads")
        if not secrets.compare_digest(key_id, data_key_id(data_key)):
            raise TamperedError(f"{label} was encrypted under another key")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise TamperedError(f"{label} declares an invalid chunk size")
        self._layout = Layout(base, chunk_size)
        self._cipher = _Cipher(header, data_key, label)
        body = source.size - self._layout.first_chunk - OVERHEAD
        self.final, rest = divmod(body, self._layout.stride)
        if body < 0 or rest >= chunk_size:
            raise TamperedError(f"{label} is truncated or extended: its length is impossible")
        self.size = self.final * chunk_size + rest
        self.chunk(self.final)  # the end is where it should be, or nothing is believed

    @property
    def chunk_size(self) -> int:
        return self._layout.chunk_size

    def chunk(self, index: int) -> bytes:
        """One chunk's plaintext, verified; TamperedError if it is not authentic."""
        last = index == self.final
        length = OVERHEAD + (self.size - index * self.chunk_size if last else self.chunk_size)
        frame = self._source.read_at(self._layout.offset(index), length)
        try:
            return self._cipher.open(index, frame, last)
        except InvalidTag:
            raise TamperedError(
                f"{self._where}: chunk {index} failed authentication (altered, moved or cut)"
            ) from None

    def read(self, start: int, end: int, piece: int) -> Iterator[bytearray]:
        """The bytes ``[start, end)``, at most ``piece`` bytes (rounded up to whole
        chunks) at a time, each chunk verified before any of it is yielded."""
        size = self.chunk_size
        per_piece = max(1, -(-piece // size))
        index = start // size
        while start < end:
            out = bytearray()
            for i in range(index, min(index + per_piece, (end - 1) // size + 1)):
                plaintext = memoryview(self.chunk(i))
                out += plaintext[max(0, start - i * size) : end - i * size]
                index = i + 1
            start += len(out)
            yield out
