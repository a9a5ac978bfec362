"""The media path's C part (media/_wire.c) against the Python it stands in for: the
same packets, in the same order, give the same bytes and leave the same state."""

from __future__ import annotations

import random
import struct

import pytest

from media.rtp import StreamRewriter

STATE = ("ssrc", "_pending", "_started", "_in_ssrc", "_max_in", "_ext", "_seq_off",
         "_ts_off", "_last_seq", "_last_ts", "_steps", "_gap_ticks", "_seq_gap")  # fmt: skip


class PythonOnly(StreamRewriter):
    """The rewriter with every packet through the Python logic."""

    __slots__ = ()

    def rewrite(self, packet):
        return self._rewrite_other(packet)


def extension_block(rng: random.Random) -> bytes:
    """One-byte or two-byte form elements, or another profile; sometimes cut short."""
    form = rng.choice(["one", "one", "two", "other"])
    body = bytearray()
    for _ in range(rng.randint(0, 4)):
        if form == "one":
            size = rng.randint(1, 4)
            body += bytes([(rng.randint(1, 15) << 4) | (size - 1)]) + rng.randbytes(size)
        else:
            size = rng.randint(0, 4)
            body += bytes([rng.randint(1, 40), size]) + rng.randbytes(size)
        body += bytes(rng.choice([0, 0, 1]))  # padding between elements
    body += bytes(-len(body) % 4)
    profile = {"one": 0xBEDE, "two": 0x1000 | rng.randint(0, 15), "other": 0x1234}[form]
    words = len(body) // 4 + rng.choice([0, 0, 0, 0, 1])  # now and then longer than sent
    return struct.pack("!HH", profile, words) + bytes(body)


def random_packet(rng: random.Random, seq: int, ts: int, ssrc: int) -> bytes:
    csrcs = rng.choice([0, 0, 0, 2])
    extension = extension_block(rng) if rng.random() < 0.8 else b""
    b0 = 0x80 | (0x10 if extension else 0) | csrcs | (0x20 if rng.random() < 0.05 else 0)
    if rng.random() < 0.02:
        b0 = rng.randrange(256)  # not RTP version 2
    b1 = rng.choice([96, 96, 96, 97, 100]) | (0x80 if rng.random() < 0.3 else 0)
    head = struct.pack("!BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    packet = head + rng.randbytes(4 * csrcs) + extension + rng.randbytes(rng.randint(0, 40))
    return packet[: rng.randint(0, 11)] if rng.random() < 0.02 else packet  # cut short


@pytest.mark.parametrize("seed", range(40))
def test_the_c_rewrite_matches_the_python_logic(seed):
    rng = random.Random(seed)
    ext_map = rng.choice([None, {1: 4, 3: 3, 20: 30}, {2: 7}, {5: 14, 6: 1}])
    made = {"ssrc": 0xCAFE, "pt_map": {96: 102, 100: 100}, "ext_map": ext_map,
            "seq_start": rng.randrange(65536), "ts_start": rng.randrange(1 << 32)}  # fmt: skip
    c_side, python_side = StreamRewriter(**made), PythonOnly(**made)
    seq, ts, ssrc = rng.randrange(65536), rng.randrange(1 << 32), 1111
    for _ in range(400):
        roll = rng.random()
        if roll < 0.02:
            gap = rng.choice([None, 0, 3000, 90000])
            seq_gap = rng.choice([0, 0, 600])
            c_side.switch_source(gap, seq_gap), python_side.switch_source(gap, seq_gap)
            continue
        if roll < 0.03:
            ext_map = rng.choice([None, {1: 2}, {1: 4, 3: 3, 20: 30}])
            c_side.ext_map = python_side.ext_map = ext_map
            continue
        if roll < 0.05:
            ssrc = rng.choice([1111, 2222])
        step = rng.choice([1, 1, 1, 1, 1, 2, 3, 0, -1, -2, -5, 41, 3000, 40000])
        seq += step
        ts += 3000 * max(step, 0)
        packet = random_packet(rng, seq, ts, ssrc)
        if rng.random() < 0.05:
            c_side.skip(packet), python_side.skip(packet)
            continue
        kind = rng.choice([bytes, bytes, bytes, bytearray])
        assert c_side.rewrite(kind(packet)) == python_side.rewrite(kind(packet))
        for name in STATE:
            assert getattr(c_side, name) == getattr(python_side, name), name


def test_the_c_rewrite_leaves_bad_input_to_python():
    rewriter = StreamRewriter(0xCAFE, {96: 102}, seq_start=10, ts_start=0)
    good = struct.pack("!BBHII", 0x80, 96, 500, 9000, 1111) + b"payload"
    assert rewriter.rewrite(good)[2:4] == (10).to_bytes(2, "big")
    for bad in (b"", b"\x80", good[:11], memoryview(good)):
        rewriter.rewrite(bad)  # dropped or taken as Python takes it; never a crash
    with pytest.raises(TypeError):
        rewriter.rewrite(12345)  # type: ignore[arg-type]
    rewriter.pt_map = None  # a state the rewriter is never put in: Python's error, not C's
    with pytest.raises(AttributeError):
        rewriter.rewrite(good)
