"""Frames out of RTP for the recorder: order, holes, retransmissions, keyframes."""

import struct

from recordings.reassembly import OpusFrames, Vp8Frames

TICKS = 3000  # one 30 fps frame at 90 kHz


def rtp(seq: int, ts: int, payload: bytes, *, marker: bool = False, pt: int = 96) -> bytes:
    return (
        struct.pack(">BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts, 1234) + payload
    )


def vp8_packets(seq: int, ts: int, data: bytes, *, key: bool, parts: int = 3) -> list[bytes]:
    """One VP8 frame split over ``parts`` packets, with a 15-bit picture id descriptor."""
    first = bytes([0x00 if key else 0x01]) + data  # VP8 payload header: P bit
    size = -(-len(first) // parts)
    chunks = [first[i : i + size] for i in range(0, len(first), size)]
    packets = []
    for i, chunk in enumerate(chunks):
        descriptor = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80, 0x01])  # X, S?, I, M
        packets.append(rtp(seq + i, ts, descriptor + chunk, marker=i == len(chunks) - 1))
    return packets


class Asks:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def feed(frames: Vp8Frames, packets: list[bytes]) -> list:
    out = []
    for packet in packets:
        out += frames.add(packet, 1.0)
    return out


def stream(n: int, *, first_key: bool = True) -> list[list[bytes]]:
    """n frames of three packets each, seq from 100, the first one a keyframe."""
    return [
        vp8_packets(100 + 3 * i, 9000 + TICKS * i, bytes([i]) * 30, key=first_key and i == 0)
        for i in range(n)
    ]


def test_frames_come_out_whole_and_in_order():
    frames = Vp8Frames(Asks())
    out = feed(frames, [p for f in stream(4) for p in f])
    assert [f.timestamp for f in out] == [9000 + TICKS * i for i in range(4)]
    assert out[0].keyframe and not any(f.keyframe for f in out[1:])
    assert out[1].data == b"\x01" + bytes([1]) * 30  # descriptors stripped, parts joined


def test_packets_reordered_within_and_across_frames():
    packets = [p for f in stream(3) for p in f]
    packets[1], packets[2] = packets[2], packets[1]  # inside the keyframe
    packets[5], packets[6] = packets[6], packets[5]  # frame 2 starts before frame 1 ends
    out = feed(Vp8Frames(Asks()), packets)
    assert [f.timestamp for f in out] == [9000, 12000, 15000]


def test_a_hole_is_waited_for_and_filled_by_a_retransmission():
    frames = Vp8Frames(Asks())
    packets = [p for f in stream(4) for p in f]
    lost = packets.pop(4)  # the middle of frame 1
    out = feed(frames, packets)
    assert [f.timestamp for f in out] == [9000]  # frames 2 and 3 wait behind the hole
    out = frames.add(lost, 1.0)
    assert [f.timestamp for f in out] == [12000, 15000, 18000]
    assert frames.frames_lost == 0


def test_a_hole_never_filled_is_given_up_until_the_next_keyframe():
    asks = Asks()
    frames = Vp8Frames(asks, max_wait_s=0.1)  # 9000 ticks: three frames
    packets = [p for f in stream(8) for p in f]
    del packets[4]
    out = feed(frames, packets)
    assert [f.timestamp for f in out] == [9000]  # delta frames after the loss are useless
    assert frames.frames_lost == 1 and asks.count >= 1
    key = vp8_packets(124, 9000 + TICKS * 8, b"k" * 30, key=True)
    delta = vp8_packets(127, 9000 + TICKS * 9, b"d" * 30, key=False)
    out = feed(frames, key + delta)
    assert [(f.timestamp, f.keyframe) for f in out] == [(33000, True), (36000, False)]


def test_nothing_before_the_first_keyframe():
    frames = Vp8Frames(Asks())
    out = feed(frames, [p for f in stream(3, first_key=False) for p in f])
    assert out == []
    key = vp8_packets(109, 18000, b"k" * 10, key=True)
    assert [f.keyframe for f in feed(frames, key)] == [True]


def test_late_duplicates_and_malformed_packets_change_nothing():
    frames = Vp8Frames(Asks())
    packets = [p for f in stream(2) for p in f]
    assert len(feed(frames, packets)) == 2
    assert feed(frames, packets[:3]) == []  # a frame already written
    assert frames.add(b"\x80\x60", 1.0) == []  # shorter than a header
    assert frames.add(rtp(106, 15000, b"\x90"), 1.0) == []  # descriptor, no data
    assert frames.add(b"\x40" + rtp(106, 15000, b"x" * 10)[1:], 1.0) == []  # version 1
    padded = bytearray(rtp(106, 15000, b"\x00\x00\x00\x04"))
    padded[0] |= 0x20  # padding only: the last byte says four
    assert frames.add(bytes(padded), 1.0) == []
    assert len(feed(frames, [p for p in vp8_packets(106, 15000, b"z", key=False)])) == 1


def test_opus_packets_are_frames_and_late_ones_are_dropped():
    frames = OpusFrames()
    first = frames.add(rtp(1, 960, b"opus-1", pt=111), 2.5)
    assert [(f.data, f.timestamp, f.arrival) for f in first] == [(b"opus-1", 960, 2.5)]
    assert frames.add(rtp(3, 2880, b"opus-3", pt=111), 2.6)[0].data == b"opus-3"
    assert frames.add(rtp(2, 1920, b"opus-2", pt=111), 2.7) == []  # behind the last written
    assert frames.add(rtp(4, 3840, b"", pt=111), 2.8) == []


def test_timestamps_wrap():
    frames = Vp8Frames(Asks())
    base = (1 << 32) - TICKS
    packets = vp8_packets(65534, base, b"a" * 20, key=True) + vp8_packets(
        1, (base + TICKS) & 0xFFFFFFFF, b"b" * 20, key=False
    )
    assert [f.timestamp for f in feed(frames, packets)] == [base, 0]
