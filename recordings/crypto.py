"""Encryption at rest for recordings.

A master key (32 random bytes, base64 in the file ``JISR_RECORDING_KEY`` names) wraps
one random data key per recording. Segments are encrypted with the data key as they
are written: the muxer writes into a :class:`SegmentWriter`, which never lets
plaintext leave memory.

Segment format (all integers big-endian)::

    header  magic "JSRSEG" | version u8 (1) | flags u8 (0) | chunk size u32 | data key id 8B
    chunk*  last u8 (0/1) | nonce 12B | length u32 | AES-256-GCM ciphertext + 16B tag

Every chunk holds at most ``chunk size`` plaintext bytes. Its associated data is the
header, the recording id (u16 length + UTF-8), the segment index (u32), the chunk
index (u64) and the last flag (u8), so flipped bytes, truncation, reordering, and
chunks or segments moved between positions or recordings all fail authentication.
Exactly one chunk, the final one, has the flag set; it may be empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
SEGMENT_MAGIC = b"JSRSEG"
SEGMENT_VERSION = 1
WRAP_ALG = "AES-256-GCM"

_HEADER = struct.Struct(">6sBBI8s")  # magic, version, flags, chunk size, data key id
_CHUNK = struct.Struct(">B12sI")  # last flag, nonce, ciphertext length (with tag)
_POSITION = struct.Struct(">IQB")  # segment index, chunk index, last flag
_SEALED_VERSION = b"\x01"


class TamperedError(Exception):
    """Ciphertext failed verification: altered or missing bytes, chunks or segments
    out of place, or a key that does not match. Nothing of it may be used.

    ``reason`` says what was found, as a code: ``authentication_failed`` (altered
    bytes, a chunk out of place, another key), ``truncated`` (it ends early),
    ``malformed`` (not a segment of this format), ``missing`` (not there at all)."""

    def __init__(self, message: str, reason: str = "authentication_failed") -> None:
        super().__init__(message)
        self.reason = reason


class MasterKeyError(Exception):
    """The master key file is missing or unusable, or a data key was wrapped by a
    different master key than the one loaded."""


def _fingerprint(label: bytes, key: bytes) -> bytes:
    return hashlib.sha256(label + key).digest()[:8]


class MasterKey:
    """The master key; ``key_id`` names it without revealing it."""

    __slots__ = ("key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"a recording master key is {KEY_BYTES} bytes, not {len(key)}")
        self.key = bytes(key)
        self.key_id = _fingerprint(b"jisr.master-key-id\0", self.key).hex()

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MasterKey) and secrets.compare_digest(self.key, other.key)

    def __hash__(self) -> int:
        return hash(self.key_id)


def generate_key_file(path: str | os.PathLike[str]) -> MasterKey:
    """Write a new random master key to ``path`` (mode 0600); never overwrites one."""
    key = MasterKey(secrets.token_bytes(KEY_BYTES))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MasterKeyError(
            f"{path} already exists; refusing to overwrite a master key "
            "(every recording it wraps would become unreadable)"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(base64.b64encode(key.key).decode("ascii") + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.chmod(path, 0o600)  # in case the file system ignored the mode at creation
    return key


def load_master_key(path: str | os.PathLike[str]) -> MasterKey:
    hint = "create one with `jisr recordings init-key FILE`"
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        raise MasterKeyError(f"recording key file {path} does not exist; {hint}") from None
    except UnicodeDecodeError:
        raise MasterKeyError(
            f"recording key file {path} is not a key: expected {KEY_BYTES} bytes in base64"
        ) from None
    except OSError as exc:
        raise MasterKeyError(f"cannot read recording key file {path}: {exc.strerror}") from None
    try:
        key = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(
            f"recording key file {path} is not a key: expected {KEY_BYTES} bytes in base64"
        ) from None
    if not key:
        raise MasterKeyError(f"recording key file {path} is empty; {hint}")
    if len(key) != KEY_BYTES:
        raise MasterKeyError(
            f"recording key file {path} holds {len(key)} bytes; a recording key is "
            f"{KEY_BYTES} bytes ({KEY_BYTES * 8} bits)"
        )
    return MasterKey(key)


# data keys ---------------------------------------------------------------------


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def data_key_id(data_key: bytes) -> bytes:
    return _fingerprint(b"jisr.data-key-id\0", data_key)


def _wrap_ad(recording_id: str) -> bytes:
    return b"jisr.data-key.v1\0" + recording_id.encode()


def wrap_data_key(master: MasterKey, recording_id: str, data_key: bytes) -> bytes:
    """The data key encrypted under the master key, bound to its recording id."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(master.key).encrypt(nonce, data_key, _wrap_ad(recording_id))
    record = {
        "version": 1,
        "alg": WRAP_ALG,
        "master_key_id": master.key_id,
        "nonce": base64.b64encode(nonce).decode(),
        "wrapped": base64.b64encode(wrapped).decode(),
    }
    return json.dumps(record).encode()


def _parse_wrapped(recording_id: str, blob: bytes) -> dict:
    try:
        record = json.loads(blob)
        if record["version"] != 1 or record["alg"] != WRAP_ALG:
            raise ValueError("unsupported")
        record["nonce"] = base64.b64decode(record["nonce"], validate=True)
        record["wrapped"] = base64.b64decode(record["wrapped"], validate=True)
        str(record["master_key_id"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TamperedError(
            f"the wrapped data key of recording {recording_id} is garbled"
        ) from None
    return record


def wrapping_key_id(recording_id: str, blob: bytes) -> str:
    """Which master key wrapped this data key."""
    return _parse_wrapped(recording_id, blob)["master_key_id"]


def unwrap_data_key(master: MasterKey, recording_id: str, blob: bytes) -> bytes:
    record = _parse_wrapped(recording_id, blob)
    if record["master_key_id"] != master.key_id:
        raise MasterKeyError(
            f"the data key of recording {recording_id} is wrapped by master key "
            f"{record['master_key_id']}, but the loaded master key is {master.key_id}"
        )
    try:
        return AESGCM(master.key).decrypt(
            record["nonce"], record["wrapped"], _wrap_ad(recording_id)
        )
    except InvalidTag:
        raise TamperedError(
            f"the wrapped data key of recording {recording_id} failed verification"
        ) from None


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """A small object (metadata) encrypted whole: version | nonce | ciphertext+tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return _SEALED_VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def unseal(key: bytes, blob: bytes, associated_data: bytes, what: str) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[:1] != _SEALED_VERSION:
        raise TamperedError(f"{what} is garbled")
    try:
        nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag:
        raise TamperedError(f"{what} failed verification") from None


# segments ----------------------------------------------------------------------


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _associated_prefix(header: bytes, recording_id: str) -> bytes:
    rid = recording_id.encode()
    return header + struct.pack(">H", len(rid)) + rid


class SegmentWriter:
    """A write-only, non-seekable binary file that encrypts as it goes.

    Give it to PyAV as the output file: ``av.open(writer, mode="w", format="webm")``.
    Plaintext is held in memory until a chunk is full; only ciphertext reaches the
    sink. ``close()`` writes the final chunk and closes (publishes) the sink; a writer
    that is never closed leaves no segment behind. PyAV does not close the file it
    was given: close the writer after closing the container.
    """

    mode = "wb"  # av.open() reads this when no mode is given

    def __init__(
        self,
        sink: Sink,
        data_key: bytes,
        recording_id: str,
        segment_index: int,
        *,
        chunk_size: int = CHUNK_SIZE,
        on_close: Callable[[int], None] | None = None,
    ) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}")
        if not 0 <= segment_index < 2**32:
            raise ValueError("segment_index must fit in 32 bits")
        self.recording_id = recording_id
        self.segment_index = segment_index
        self._sink = sink
        self._aead = AESGCM(data_key)
        self._chunk_size = chunk_size
        self._on_close = on_close
        header = _HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, chunk_size, data_key_id(data_key))
        self._prefix = _associated_prefix(header, recording_id)
        self._buffer = bytearray()
        self._chunk_index = 0
        self._written = 0
        self._closed = False
        sink.write(header)

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        """Plaintext bytes written so far."""
        return self._written

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed SegmentWriter")
        size = memoryview(data).nbytes
        self._buffer += data
        self._written += size
        while len(self._buffer) >= self._chunk_size:
            chunk = bytes(self._buffer[: self._chunk_size])
            del self._buffer[: self._chunk_size]
            self._emit(chunk, last=False)
        return size

    def flush(self) -> None:
        # A partial chunk stays in memory: flushing it early would only make chunks
        # smaller, and an unclosed segment is discarded anyway.
        if not self._closed:
            self._sink.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._sink.close()
        if self._on_close is not None:
            self._on_close(self.segment_index)

    def abort(self) -> None:
        """Drop the segment: nothing is published."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        abort = getattr(self._sink, "abort", None)
        if abort is not None:
            abort()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _emit(self, plaintext: bytes, last: bool) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ad = self._prefix + _POSITION.pack(self.segment_index, self._chunk_index, last)
        ciphertext = self._aead.encrypt(nonce, plaintext, ad)
        self._sink.write(_CHUNK.pack(last, nonce, len(ciphertext)) + ciphertext)
        self._chunk_index += 1


def decrypt_segment(data: bytes, data_key: bytes, recording_id: str, segment_index: int) -> bytes:
    """The whole plaintext of one segment, or :class:`TamperedError`; never a part."""
    view = memoryview(data)

    def read_at(offset: int, length: int) -> bytes:
        return view[offset : offset + length]

    chunks = segment_chunks(read_at, len(data), data_key, recording_id, segment_index)
    return b"".join(chunks)


def segment_chunks(
    read_at: Callable[[int, int], bytes | memoryview],
    size: int,
    data_key: bytes,
    recording_id: str,
    segment_index: int,
) -> Iterator[bytes]:
    """The plaintext of one segment of ``size`` bytes, read with ``read_at(offset,
    length)``, a chunk at a time, each authenticated before it is yielded; a
    :class:`TamperedError` (with its ``reason``) at the first fault. Whether the
    segment was whole is known only once the last chunk is out."""
    where = f"segment {segment_index} of recording {recording_id}"
    header = _segment_header(read_at, size, data_key, where)
    aead, chunk_size = AESGCM(data_key), _HEADER.unpack(header)[3]
    prefix = _associated_prefix(header, recording_id)
    pos, index, last = _HEADER.size, 0, False
    while not last:
        if pos == size:
            raise TamperedError(f"{where} is truncated: its final chunk is missing", "truncated")
        if size - pos < _CHUNK.size:
            raise TamperedError(f"{where} is truncated inside chunk {index}", "truncated")
        frame = read_at(pos, _CHUNK.size)
        if len(frame) < _CHUNK.size:  # the object shrank while it was read
            raise TamperedError(f"{where} is truncated inside chunk {index}", "truncated")
        flag, nonce, length = _CHUNK.unpack(frame)
        if flag not in (0, 1) or not TAG_BYTES <= length <= chunk_size + TAG_BYTES:
            raise TamperedError(f"{where}: chunk {index} has an invalid frame", "malformed")
        pos += _CHUNK.size
        ciphertext = read_at(pos, length)
        if len(ciphertext) < length:
            raise TamperedError(f"{where} is truncated inside chunk {index}", "truncated")
        last = flag == 1
        ad = prefix + _POSITION.pack(segment_index, index, last)
        try:
            yield aead.decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            raise TamperedError(
                f"{where}: chunk {index} failed authentication (altered bytes, chunks "
                "out of order or from another segment, or the wrong key)"
            ) from None
        pos += length
        index += 1
    if pos != size:
        raise TamperedError(
            f"{where} has {size - pos} unexpected bytes after its end", "malformed"
        )


def _segment_header(
    read_at: Callable[[int, int], bytes | memoryview], size: int, data_key: bytes, where: str
) -> bytes:
    """A segment's header, checked: its format, and that ``data_key`` encrypted it."""
    header = bytes(read_at(0, _HEADER.size)) if size >= _HEADER.size else b""
    if len(header) < _HEADER.size:
        raise TamperedError(f"{where} is truncated: its header is incomplete", "truncated")
    magic, version, _flags, chunk_size, key_id = _HEADER.unpack(header)
    if magic != SEGMENT_MAGIC:
        raise TamperedError(f"{where} is not an encrypted Jisr segment", "malformed")
    if version != SEGMENT_VERSION:
        raise TamperedError(f"{where} has unsupported format version {version}", "malformed")
    if not secrets.compare_digest(key_id, data_key_id(data_key)):
        raise TamperedError(
            f"{where} was encrypted under another data key (a segment of another "
            "recording, or an altered header)"
        )
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise TamperedError(f"{where} declares an invalid chunk size", "malformed")
    return header
