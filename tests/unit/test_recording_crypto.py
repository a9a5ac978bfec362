"""Encryption at rest: master key files, wrapped data keys, and the encrypting
segment writer that PyAV's Matroska/WebM muxers write into."""

from __future__ import annotations

import base64
import fractions
import functools
import io
import os
import stat

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from recordings.crypto import (
    MasterKey,
    MasterKeyError,
    SegmentWriter,
    TamperedError,
    decrypt_segment,
    generate_key_file,
    load_master_key,
    new_data_key,
    seal,
    unseal,
    unwrap_data_key,
    wrap_data_key,
    wrapping_key_id,
)

EBML_MAGIC = bytes.fromhex("1A45DFA3")
# The EBML version fields right after the magic in every Matroska/WebM file FFmpeg
# writes: what the no-plaintext scans look for, being long enough that ciphertext
# cannot hold it by chance (a bare 4-byte magic turns up in a few MB now and then).
EBML_FIELDS = bytes.fromhex("4286810142F7810142F2810442F38108")
MARKER = b"JISR-PLAINTEXT-MARKER-5e1f0c9a7d"
MS = fractions.Fraction(1, 1000)
FPS = 30


# media: real VP8 and Opus packets, muxed the way the recorder does it ---------------


@functools.cache
def vp8_frames(count: int = 90, keyframe_every: int = FPS) -> tuple[tuple[bytes, bool], ...]:
    """Encoded VP8 frames at 320x240, a keyframe every ``keyframe_every``."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.framerate = FPS
    encoder.bit_rate = 1_000_000
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(7)
    packets = []
    for i in range(count):
        image = rng.integers(0, 64, (240, 320, 3), dtype=np.uint8)
        image[:, (i * 7) % 280 : (i * 7) % 280 + 40] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if i % keyframe_every == 0:
            frame.pict_type = PictureType.I
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    assert len(packets) == count
    return tuple((bytes(p), p.is_keyframe) for p in packets)


@functools.cache
def opus_frames(count: int = 150, hz: float = 440.0) -> tuple[bytes, ...]:
    """Encoded 20 ms Opus frames of a tone, 48 kHz mono."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "s16"
    encoder.time_base = fractions.Fraction(1, 48000)
    t = np.arange(960 * count) / 48000
    pcm = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    packets = []
    for i in range(count):
        frame = av.AudioFrame.from_ndarray(
            pcm[None, i * 960 : (i + 1) * 960], format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, i * 960
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    return tuple(bytes(p) for p in packets[:count])


def mux_segment(
    sink: object,
    start_s: int,
    *,
    seconds: int = 1,
    fmt: str = "webm",
    options: dict[str, str] | None = None,
    second_audio: bool = False,
    marker: bool = True,
    close: bool = True,
) -> av.container.OutputContainer:
    """One segment like the recorder writes it: muxer streams without codecs, ms
    timestamps continuous across segments, the video starting on a keyframe. The
    marker rides in the container title and at the end of one VP8 packet (the
    decoder ignores trailing bytes)."""
    container = av.open(sink, mode="w", format=fmt, options=options or {"live": "1"})
    if marker:
        container.metadata["title"] = MARKER.decode()
    video = container.add_mux_stream("vp8", width=320, height=240)
    audio = container.add_mux_stream("opus", rate=48000)
    tracks = [(video, "referrer-video"), (audio, "referrer-audio")]
    if second_audio:
        tracks.append((container.add_mux_stream("opus", rate=48000), "specialist-audio"))
    for stream, title in tracks:
        stream.time_base = MS
        stream.metadata["title"] = title
    events = []
    frames = vp8_frames()
    for i in range(start_s * FPS, (start_s + seconds) * FPS):
        data, key = frames[i]
        if marker and i == start_s * FPS + 3:
            data += MARKER
        events.append((round(i * 1000 / FPS), 0, data, key))
    sounds = opus_frames()
    for i in range(start_s * 50, (start_s + seconds) * 50):
        events.append((i * 20, 1, sounds[i], True))
        if second_audio:
            events.append((i * 20 + 5, 2, opus_frames(hz=660.0)[i], True))
    for pts, track, data, key in sorted(events, key=lambda e: (e[0], e[1])):
        packet = av.Packet(data)
        packet.stream = tracks[track][0]
        packet.time_base = MS
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        container.mux(packet)
    if close:
        container.close()
    return container


class MemorySink:
    """Stands in for a storage object: records exactly what reached it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.published = False
        self.aborted = False

    def write(self, data: bytes) -> int:
        assert not self.published
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.published = True

    def abort(self) -> None:
        self.aborted = True


RID = "r_0123456789abcdef"


def encrypt(plaintext: bytes, key: bytes, index: int = 1, chunk_size: int = 64, **kw) -> bytes:
    sink = MemorySink()
    with SegmentWriter(sink, key, kw.get("rid", RID), index, chunk_size=chunk_size) as writer:
        writer.write(plaintext)
    return bytes(sink.data)


HEADER = 20
FRAME = 17
TAG = 16


def chunk_spans(segment: bytes) -> list[tuple[int, int]]:
    """(start, end) of every chunk frame in a segment."""
    spans, pos = [], HEADER
    while pos < len(segment):
        length = int.from_bytes(segment[pos + 13 : pos + 17], "big")
        spans.append((pos, pos + FRAME + length))
        pos += FRAME + length
    return spans


# master key files --------------------------------------------------------------


def test_key_file_is_private_and_loads_back(tmp_path):
    path = tmp_path / "recording.key"
    key = generate_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_master_key(path)
    assert loaded == key
    assert loaded.key_id == key.key_id and len(key.key_id) == 16
    text = path.read_text()
    assert base64.b64decode(text) == key.key and len(key.key) == 32
    assert text.strip() not in repr(key) and key.key_id in repr(key)


def test_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "recording.key"
    key = generate_key_file(path)
    with pytest.raises(MasterKeyError, match="refusing to overwrite"):
        generate_key_file(path)
    assert load_master_key(path) == key


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; create one with `jisr recordings init-key FILE`"),
        (b"", "is empty"),
        (base64.b64encode(b"k" * 16) + b"\n", "holds 16 bytes; a recording key is 32 bytes"),
        (b"this is not base64 at all!\n", "expected 32 bytes in base64"),
        (b"\xff\xfe\x00garbage", "expected 32 bytes in base64"),
    ],
)
def test_bad_key_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "recording.key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MasterKeyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_master_key(path)


def test_key_ids_differ_between_keys():
    assert MasterKey(b"a" * 32).key_id != MasterKey(b"b" * 32).key_id


# wrapped data keys -------------------------------------------------------------


def test_data_key_wraps_and_unwraps_only_with_its_master_and_recording():
    master, other = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    data_key = new_data_key()
    blob = wrap_data_key(master, RID, data_key)
    assert data_key not in blob and base64.b64encode(data_key) not in blob
    assert wrapping_key_id(RID, blob) == master.key_id
    assert unwrap_data_key(master, RID, blob) == data_key
    with pytest.raises(
        MasterKeyError,
        match=f"wrapped by master key {master.key_id}.*loaded master key is {other.key_id}",
    ):
        unwrap_data_key(other, RID, blob)
    with pytest.raises(TamperedError, match="failed verification"):
        unwrap_data_key(master, "r_another", blob)
    forged = blob.replace(master.key_id.encode(), other.key_id.encode())
    with pytest.raises(TamperedError, match="failed verification"):
        unwrap_data_key(other, RID, forged)  # right id, wrong key: the tag catches it
    with pytest.raises(TamperedError, match="garbled"):
        unwrap_data_key(master, RID, blob[:-5])


def test_sealed_objects_detect_any_change():
    key = new_data_key()
    blob = seal(key, b'{"state": "complete"}', b"ad")
    assert unseal(key, blob, b"ad", "meta") == b'{"state": "complete"}'
    for i in range(len(blob)):
        altered = bytearray(blob)
        altered[i] ^= 0x01
        with pytest.raises(TamperedError):
            unseal(key, bytes(altered), b"ad", "meta")
    with pytest.raises(TamperedError, match="meta failed verification"):
        unseal(key, blob, b"other", "meta")


# the segment writer as a file ---------------------------------------------------


def test_writer_is_a_write_only_stream():
    sink = MemorySink()
    writer = SegmentWriter(sink, new_data_key(), RID, 1, chunk_size=10)
    assert writer.writable() and not writer.seekable() and not writer.readable()
    assert writer.mode == "wb" and not writer.closed
    assert writer.write(b"abc") == 3 and writer.write(memoryview(b"defghijklmnop")) == 13
    assert writer.tell() == 16
    writer.flush()
    writer.close()
    writer.close()  # closing twice is harmless
    assert writer.closed and sink.published
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_aborted_writer_publishes_nothing():
    sink = MemorySink()
    with pytest.raises(RuntimeError), SegmentWriter(sink, new_data_key(), RID, 1) as writer:
        writer.write(b"half a segment")
        raise RuntimeError("muxer died")
    assert sink.aborted and not sink.published
    assert b"half a segment" not in sink.data


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 1000])
def test_chunking_round_trips(size):
    key = new_data_key()
    plaintext = os.urandom(size)
    segment = encrypt(plaintext, key)
    assert decrypt_segment(segment, key, RID, 1) == plaintext
    spans = chunk_spans(segment)
    assert len(spans) == size // 64 + 1  # full chunks, then a final one (maybe empty)
    assert [segment[s] for s, _ in spans] == [0] * (len(spans) - 1) + [1]


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("webm", {"live": "1"}), ("webm", {}), ("matroska", {"live": "1"}), ("matroska", {})],
)
def test_pyav_muxes_real_vp8_and_opus_into_the_writer(fmt, options):
    key = new_data_key()
    sink = MemorySink()
    writer = SegmentWriter(sink, key, RID, 1, chunk_size=4096)
    mux_segment(writer, 0, seconds=2, fmt=fmt, options=options)
    size = writer.tell()
    writer.close()
    stored = bytes(sink.data)
    assert EBML_FIELDS not in stored and MARKER not in stored
    assert sink.published and len(chunk_spans(stored)) == size // 4096 + 1

    plaintext = decrypt_segment(stored, key, RID, 1)
    assert len(plaintext) == size
    assert plaintext.startswith(EBML_MAGIC) and MARKER in plaintext
    with av.open(io.BytesIO(plaintext)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("vp8", "opus")
        frames = list(container.decode(video))
    assert len(frames) == 2 * FPS
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    with av.open(io.BytesIO(plaintext)) as container:
        sounds = [p for p in container.demux(audio=0) if p.size]
    assert len(sounds) == 100


# tampering ---------------------------------------------------------------------


@pytest.fixture
def segment():
    key = new_data_key()
    plaintext = os.urandom(200)
    return key, plaintext, encrypt(plaintext, key)  # four chunks: 64, 64, 64, 8


def test_every_flipped_byte_is_detected(segment):
    key, _plaintext, data = segment
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            altered = bytearray(data)
            altered[i] ^= bit
            with pytest.raises(TamperedError, match=f"recording {RID}"):
                decrypt_segment(bytes(altered), key, RID, 1)


def test_every_truncation_is_detected(segment):
    key, _plaintext, data = segment
    for end in range(len(data)):
        with pytest.raises(TamperedError):
            decrypt_segment(data[:end], key, RID, 1)
    last_start = chunk_spans(data)[-1][0]
    with pytest.raises(TamperedError, match="final chunk is missing"):
        decrypt_segment(data[:last_start], key, RID, 1)


def test_reordered_dropped_or_repeated_chunks_are_detected(segment):
    key, _plaintext, data = segment
    spans = chunk_spans(data)
    chunks = [data[s:e] for s, e in spans]
    header = data[:HEADER]
    variants = [
        [chunks[1], chunks[0], *chunks[2:]],  # swapped
        [chunks[0], *chunks[2:]],  # one dropped
        [chunks[0], chunks[0], *chunks[1:]],  # one repeated
        [*chunks, chunks[-1]],  # final chunk twice
    ]
    for variant in variants:
        with pytest.raises(TamperedError):
            decrypt_segment(header + b"".join(variant), key, RID, 1)
    with pytest.raises(TamperedError, match="unexpected bytes after its end"):
        decrypt_segment(data + b"\x00", key, RID, 1)


def test_segments_and_chunks_are_bound_to_their_place(segment):
    key, plaintext, data = segment
    with pytest.raises(TamperedError, match="segment 2 of recording"):
        decrypt_segment(data, key, RID, 2)  # segments swapped
    with pytest.raises(TamperedError, match="chunk 0 failed authentication"):
        decrypt_segment(data, key, "r_other", 1)  # moved to another recording
    with pytest.raises(TamperedError, match="another data key"):
        decrypt_segment(data, new_data_key(), RID, 1)
    other = encrypt(plaintext, key, index=2)
    spliced = data[: chunk_spans(data)[1][0]] + other[chunk_spans(other)[1][0] :]
    with pytest.raises(TamperedError, match="chunk 1 failed authentication"):
        decrypt_segment(spliced, key, RID, 1)  # chunks from another segment
    with pytest.raises(TamperedError, match="not an encrypted Jisr segment"):
        decrypt_segment(b"\x1a\x45\xdf\xa3" + data[4:], key, RID, 1)
