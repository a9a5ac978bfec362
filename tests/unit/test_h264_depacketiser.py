"""H.264 access units out of RTP for the recorder (RFC 6184): FU-A fragments, STAP-A
aggregates and single NAL unit packets, loss, parameter sets, bad input, and the
packets of aiortc's own encoder decoding through PyAV across a change of size."""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from recordings.avc import avcc_nals, stream_config, to_avcc
from recordings.h264 import H264Frames
from tests.unit.test_avc import x264_parameter_sets
from tests.unit.test_reassembly import TICKS, Asks, feed, rtp

SPS, PPS = x264_parameter_sets(320, 240)
IDR = b"\x65\x88" + bytes(range(256)) * 8  # first_mb_in_slice 0 (its first bit is 1)
P = b"\x41\x9a" + b"p" * 40
SECOND_SLICE = b"\x41\x1a" + b"q" * 40  # first_mb_in_slice > 0: cannot start a frame


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


def fu_a(nal: bytes, parts: int) -> list[bytes]:
    indicator = (nal[0] & 0xE0) | 28
    body = nal[1:]
    size = -(-len(body) // parts)
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return [
        bytes([indicator, (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
               | (nal[0] & 0x1F)]) + chunk
        for i, chunk in enumerate(chunks)
    ]  # fmt: skip


def packets(seq: int, ts: int, payloads: list[bytes]) -> list[bytes]:
    return [rtp(seq + i, ts, p, marker=i == len(payloads) - 1) for i, p in enumerate(payloads)]


def keyframe(seq: int, ts: int) -> list[bytes]:
    """SPS and PPS in a STAP-A, then an IDR slice in four FU-A fragments."""
    return packets(seq, ts, [stap_a(SPS, PPS), *fu_a(IDR, 4)])


def test_fu_a_start_middle_end_make_one_nal_unit():
    frames = H264Frames(Asks())
    [frame] = feed(frames, keyframe(100, 9000))
    assert frame.keyframe and frame.timestamp == 9000
    assert avcc_nals(frame.data) == [SPS, PPS, IDR]  # the NAL header rebuilt from FU bytes
    assert frame.data == to_avcc([SPS, PPS, IDR])  # 4-byte lengths, no start codes
    assert stream_config(frame.data)[0] == (320, 240)


def test_stap_a_and_single_nal_units():
    frames = H264Frames(Asks())
    out = feed(frames, packets(100, 9000, [stap_a(SPS, PPS, IDR[:300])]))
    out += feed(frames, packets(101, 9000 + TICKS, [P, SECOND_SLICE]))  # two slices
    out += feed(frames, packets(103, 9000 + 2 * TICKS, [stap_a(b"\x06\x05\x01\x80", P)]))
    assert [avcc_nals(f.data) for f in out] == [
        [SPS, PPS, IDR[:300]], [P, SECOND_SLICE], [b"\x06\x05\x01\x80", P],
    ]  # fmt: skip
    assert [f.keyframe for f in out] == [True, False, False]


def test_loss_mid_frame_drops_that_access_unit_until_the_next_keyframe():
    asks = Asks()
    frames = H264Frames(asks, max_wait_s=0.1)  # 9000 ticks: three frames
    stream = keyframe(100, 9000)
    delta = packets(105, 9000 + TICKS, fu_a(P * 20, 3))
    del delta[1]  # the middle fragment: this access unit can never be whole
    stream += delta
    for i in range(2, 7):  # delta frames that depend on the lost one
        stream += packets(106 + i, 9000 + i * TICKS, [P])
    out = feed(frames, stream)
    assert [f.timestamp for f in out] == [9000]
    assert frames.frames_lost == 1 and asks.count >= 1
    out = feed(frames, keyframe(113, 9000 + 7 * TICKS) + packets(118, 9000 + 8 * TICKS, [P]))
    assert [(f.keyframe, f.timestamp) for f in out] == [(True, 30000), (False, 33000)]


def test_a_retransmission_fills_a_hole_in_a_fragmented_nal_unit():
    frames = H264Frames(Asks())
    stream = keyframe(100, 9000)
    late = stream.pop(2)  # a middle fragment
    assert feed(frames, stream) == []
    [frame] = frames.add(late, 1.0)
    assert avcc_nals(frame.data) == [SPS, PPS, IDR]


def test_a_keyframe_without_parameter_sets_gets_the_last_ones():
    asks = Asks()
    frames = H264Frames(asks)
    assert feed(frames, packets(100, 9000, fu_a(IDR, 2))) == []  # none known yet
    assert asks.count == 1
    out = feed(frames, keyframe(102, 9000 + TICKS))
    out += feed(frames, packets(107, 9000 + 2 * TICKS, [b"\x09\xf0", *fu_a(IDR, 2)]))
    assert avcc_nals(out[-1].data) == [b"\x09\xf0", SPS, PPS, IDR]  # the delimiter stays first


def test_a_frame_whose_first_slice_is_lost_is_not_started_from_a_later_one():
    frames = H264Frames(Asks(), max_wait_s=0.1)
    idr_second_slice = b"\x65\x1a" + b"s" * 50
    stream = packets(100, 9000, [idr_second_slice])  # the first slice (seq 99) lost
    stream += packets(101, 9000 + TICKS, [P])
    stream += keyframe(102, 9000 + 5 * TICKS)
    assert [f.timestamp for f in feed(frames, stream)] == [24000]


def test_bad_input_is_dropped_without_exceptions():
    asks = Asks()
    frames = H264Frames(asks, max_wait_s=0.1)
    bad = [
        stap_a(SPS)[:-3],  # truncated aggregate
        b"\x78\x00\x00",  # a zero length in an aggregate
        b"\x78\x00\x05\x67",  # a length past the end
        fu_a(IDR, 3)[1],  # a middle fragment alone
        bytes([0x7C, 0xC5]) + b"x",  # start and end bits both set
        b"\x79" + stap_a(P)[1:],  # STAP-B, MTAP16, MTAP24, FU-B: interleaved mode
        b"\x7a\x00\x00",
        b"\x7b\x00",
        b"\x7d\x85\x00\x00",
        b"\xe5\x88\x00",  # forbidden_zero_bit set
        stap_a(b"\x7c\x85\x00"),  # a fragment inside an aggregate
    ]
    ts = 9000
    for seq, payload in enumerate(bad):
        stream = keyframe(1000 + 10 * seq, ts)
        stream[1] = rtp(1000 + 10 * seq + 1, ts, payload)  # one bad packet in a keyframe
        asked = asks.count
        assert feed(frames, stream) == [], payload
        assert asks.count == asked + 1  # given up at once, a keyframe asked for
        ts += TICKS
    rng = np.random.default_rng(11)
    for i in range(400):  # garbage of every shape, interleaved with real frames
        payload = rng.integers(0, 256, rng.integers(0, 30), np.uint8).tobytes()
        for frame in frames.add(rtp(3000 + i, ts + i * 100, payload, marker=i % 3 == 0), 1.0):
            assert avcc_nals(frame.data) is not None
            assert not frame.keyframe or stream_config(frame.data) is not None
    out = feed(frames, keyframe(5000, ts + 400 * 100 + 20000))  # past the wait for holes
    assert [avcc_nals(f.data) for f in out] == [[SPS, PPS, IDR]]


def test_ignored_nal_unit_types_leave_the_access_unit_whole():
    frames = H264Frames(Asks())
    stream = packets(100, 9000, [stap_a(SPS, PPS), b"\x00\x11", b"\x1e\x22", *fu_a(IDR, 2)])
    [frame] = feed(frames, stream)
    assert avcc_nals(frame.data) == [SPS, PPS, IDR]


def _encoded(sizes: list[tuple[int, int]]) -> list[bytes]:
    """RTP packets of aiortc's H.264 encoder, one frame per size given."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000,
                                                payloadType=96))  # fmt: skip
    out, seq = [], 0
    for i, (width, height) in enumerate(sizes):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :, 1] = (np.arange(width) + 4 * i) % 256
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i * TICKS, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame)
        out += packets(seq, timestamp, payloads)
        seq += len(payloads)
    return out


def test_aiortc_packets_decode_across_a_change_of_size():
    sizes = [(320, 240)] * 4 + [(640, 360)] * 4
    out = feed(H264Frames(Asks()), _encoded(sizes))
    assert len(out) == len(sizes)
    assert [stream_config(f.data)[0] for f in out if f.keyframe] == [(320, 240), (640, 360)]
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = stream_config(out[0].data)[1]  # the avcC: AVCC samples follow
    decoded = [(f.width, f.height) for frame in out for f in decoder.decode(av.Packet(frame.data))]
    decoded += [(f.width, f.height) for f in decoder.decode(None)]
    assert decoded == sizes
