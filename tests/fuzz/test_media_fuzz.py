"""Real, damaged and random datagrams through the entry points that see every packet:
the transport tap's datagram callback into a publisher's leg (forwarding to a
subscriber and to the recorder's reassembly), RTCP into either leg, and the
reassembly itself. Nothing may raise out of them: a malformed packet is dropped."""

from __future__ import annotations

import time
from functools import partial
from types import SimpleNamespace
from unittest import mock

from aiortc import RTCRtpCodecParameters
from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from media import leg as leg_module
from media.aiortc_internals import Negotiated, Tap
from media.codecs import codecs_of
from media.inbound import InStream
from media.leg import Leg
from media.outbound import OutStream
from media.rtp import RTP_HEADER_SIZE, build_nack, rtp_seq, rtp_ssrc, ts_newer
from media.sink import sink_stream
from recordings.avc import avcc_nals, stream_config
from recordings.h264 import H264Frames
from recordings.reassembly import OpusFrames, VideoFrames, Vp8Frames
from tests.fuzz.packets import (
    H264_PT,
    H264_RTX_PT,
    H264_SSRC,
    OPUS_PT,
    OPUS_SSRC,
    PUBLISHER_EXTENSIONS,
    RTX_OF,
    VP8_PT,
    VP8_RTX_PT,
    VP8_SSRC,
    datagrams,
    h264_payload,
    media_packet,
    mutated,
    rtcp_packet,
    rtp,
    vp8_payload,
)
from tests.fuzz.seed import SEED, count


def codec(mime: str, pt: int, clock: int = 90000, **parameters) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=mime, clockRate=clock, payloadType=pt,
                                 parameters=parameters)  # fmt: skip


H264 = {"packetization-mode": 1, "profile-level-id": "42e01f"}
VP8_CODECS = [codec("video/VP8", VP8_PT), codec("video/rtx", VP8_RTX_PT, apt=VP8_PT)]
H264_CODECS = [codec("video/H264", H264_PT, **H264), codec("video/rtx", H264_RTX_PT, apt=H264_PT)]
STREAMS = [  # kind, role, publisher SSRC, codecs as negotiated
    ("video", "video", VP8_SSRC, VP8_CODECS),
    ("video", "screen", H264_SSRC, H264_CODECS),
    ("audio", "audio", OPUS_SSRC, [codec("audio/opus", OPUS_PT, 48000)]),
]
# The subscriber negotiated other ids (and not every extension), so ids are rewritten.
SUBSCRIBER_EXTENSIONS = {
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 3,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 1,
    "urn:ietf:params:rtp-hdrext:sdes:mid": 2,
}


class FakeTap:
    ready = True

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        (self.rtcp if rtcp else self.rtp).append(packet)
        return True


class PassThroughSrtp:
    """Stands in for the SRTP session: every datagram arrives as if decrypted, which
    is all a peer holding the keys can make arrive."""

    @staticmethod
    def unprotect(data: bytes) -> bytes:
        return data

    unprotect_rtcp = unprotect


class PassThroughCall:
    """Stands in for the tap's direct libsrtp call on that session (``srtp_call``)."""

    def __init__(self, session: PassThroughSrtp) -> None:
        self.session = session

    def __call__(self, data: bytes) -> bytes:
        return data


class Clock:
    """Stands in for the leg's monotonic clock, moved on by each arrival's step. It
    starts at the real time, which a new leg takes as when it last heard its peer."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


class Session:
    """A publisher leg with a VP8 camera, an H.264 screen and Opus audio, each
    forwarded to a subscriber's m-line and to a recorder's sink, whose packets go
    through the recorder's reassembly."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.publisher = Leg("pub", "referrer")
        self.publisher.tap = FakeTap()
        self.subscriber = Leg("sub", None)
        self.subscriber.tap = FakeTap()
        self.recorded: dict[str, list] = {}
        now = clock.now
        for i, (kind, role, ssrc, codecs) in enumerate(STREAMS):
            agreed = Negotiated(str(i), kind, codecs, PUBLISHER_EXTENSIONS, 5 + i, 50 + i)
            stream = InStream(self.publisher, "referrer", kind, ssrc, codecs_of(agreed), 5 + i,
                              PUBLISHER_EXTENSIONS, role)  # fmt: skip
            self.publisher.inbound[ssrc] = stream
            if ssrc in RTX_OF:
                self.publisher.retransmissions[RTX_OF[ssrc]] = stream
            theirs = Negotiated(str(i), kind, codecs, SUBSCRIBER_EXTENSIONS, 7000 + 2 * i,
                                7001 + 2 * i)  # fmt: skip
            out = OutStream(self.subscriber, "referrer", theirs, role)
            self.subscriber.outbound[out.ssrc] = out
            out.bind(stream, now)
            if kind == "audio":
                frames = OpusFrames()
            else:
                frames = (H264Frames if ssrc == H264_SSRC else Vp8Frames)(lambda: None)
            sink = sink_stream("referrer", role, partial(self._record, frames, role))
            sink.bind(stream, now)
        # The tap as the transport sees it: DTLS done, SRTP keyed.
        self.tap = Tap.__new__(Tap)
        srtp = PassThroughSrtp()
        self.tap._dtls = SimpleNamespace(_rx_srtp=srtp)
        self.tap._unprotect = PassThroughCall(srtp)
        self.tap._on_rtp, self.tap._on_rtcp = self.publisher.on_rtp, self.publisher.on_rtcp
        self.tap._original = lambda data, component: None  # DTLS: aiortc's, not fuzzed here

    def _record(self, frames: OpusFrames | VideoFrames, role: str, packet: bytes) -> None:
        self.recorded.setdefault(role, []).extend(frames.add(packet, self.clock.now))

    def start_streams(self) -> None:
        """A first packet on each stream, a keyframe on video: subscribers are past
        their keyframe gate."""
        for ssrc, pt, payload in ((VP8_SSRC, VP8_PT, b"\x90\x80\x81\x00\x10\x02\x00\x9d\x01\x2a"
                                   b"\x40\x01\xf0\x00"), (H264_SSRC, H264_PT, b"\x67\x42"),
                                  (OPUS_SSRC, OPUS_PT, b"\xfc\xff")):  # fmt: skip
            self.tap._data_received(rtp(100, 9000, ssrc, pt, payload, marker=True), 1)

    def check(self) -> None:
        """What went out is on the subscriber's SSRCs, and reports can still be built."""
        ours = {s for out in self.subscriber.outbound.values() for s in (out.ssrc, out.rtx_ssrc)}
        for packet in self.subscriber.tap.rtp:
            assert len(packet) >= RTP_HEADER_SIZE and rtp_ssrc(packet) in ours
        for leg in (self.publisher, self.subscriber):
            leg.send_reports(self.clock.now, 1.7e9)


STEPS = st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.02, 0.35, 0.6, 2.0, 9.0])


@seed(SEED)
@hypothesis_settings(max_examples=1500)
@given(
    started=st.booleans(),
    arrivals=st.lists(
        st.tuples(STEPS, datagrams(media_packet(st.integers(95, 160)) | rtcp_packet())),
        min_size=1,
        max_size=25,
    ),
)
def test_datagrams_into_a_publishers_leg(started, arrivals):
    count("datagrams into a publisher")
    clock = Clock()
    with mock.patch.object(leg_module, "time", clock):
        session = Session(clock)
        if started:
            session.start_streams()
        for step, datagram in arrivals:
            clock.now += step
            session.tap._data_received(datagram, 1)
        session.check()


OUR_SSRCS = st.sampled_from([7000, 7002, 7004, VP8_SSRC, 1])


@seed(SEED)
@hypothesis_settings(max_examples=1000)
@given(
    media=st.lists(media_packet(st.integers(100, 140)), max_size=12),
    feedback=st.lists(
        st.tuples(STEPS, st.booleans(), datagrams(rtcp_packet(OUR_SSRCS))), min_size=1, max_size=8
    ),
)
def test_rtcp_into_either_leg(media, feedback):
    count("rtcp into a leg")
    clock = Clock()
    with mock.patch.object(leg_module, "time", clock):
        session = Session(clock)
        session.start_streams()
        for packet in media:  # something sent, to be NACKed and reported on
            session.tap._data_received(packet, 1)
        sent: dict[int, list[int]] = {}
        for packet in session.subscriber.tap.rtp:
            sent.setdefault(rtp_ssrc(packet), []).append(rtp_seq(packet))
        for ssrc, seqs in sent.items():  # all of it asked for again: RTX from the history
            session.subscriber.on_rtcp(build_nack(9, ssrc, seqs))
        for step, to_subscriber, data in feedback:
            clock.now += step
            if data:  # the tap only hands non-empty RTCP on
                (session.subscriber if to_subscriber else session.publisher).on_rtcp(data)
        session.check()


def vp8_frames(first_seq: int, first_ts: int, count_: int) -> list[bytes]:
    """Real VP8 frames of two or three packets, the first a keyframe."""
    packets = []
    seq = first_seq
    for frame in range(count_):
        parts = 2 + frame % 2
        for part in range(parts):
            descriptor = bytes([0x90 if part == 0 else 0x80, 0x80, frame & 0x7F])
            data = b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00" if frame == 0 else b"\x31\x02\x00"
            packets.append(rtp(seq, first_ts + 3000 * frame, VP8_SSRC, VP8_PT,
                               descriptor + (data if part == 0 else b"x" * 5),
                               marker=part == parts - 1))  # fmt: skip
            seq += 1
    return packets


# A real SPS (320x240, constrained baseline) and PPS, from libx264.
H264_SPS = bytes.fromhex("6742c00dda0507e840000003004000000f03c50aa8")
H264_PPS = bytes.fromhex("68ce0fc8")


def h264_frames(first_seq: int, first_ts: int, count_: int) -> list[bytes]:
    """H.264 access units: SPS and PPS in a STAP-A, then an IDR slice in FU-A
    fragments; then P slices, in one packet or two slices."""
    packets = []
    seq = first_seq
    for frame in range(count_):
        if frame == 0:
            idr = b"\x88" + b"i" * 30
            stap = b"\x78" + b"".join(len(n).to_bytes(2, "big") + n for n in (H264_SPS, H264_PPS))
            payloads = [stap, b"\x7c\x85" + idr[:15], b"\x7c\x05" + idr[15:25],
                        b"\x7c\x45" + idr[25:]]  # fmt: skip
        else:
            payloads = [b"\x41\x9a" + b"p" * 8] + ([b"\x41\x1a" + b"q" * 8] if frame % 2 else [])
        for part, payload in enumerate(payloads):
            packets.append(rtp(seq, first_ts + 3000 * frame, H264_SSRC, H264_PT, payload,
                               marker=part == len(payloads) - 1))  # fmt: skip
            seq += 1
    return packets


@st.composite
def recorded_stream(draw, codec: str = "vp8") -> list[bytes]:
    """A recorded stream as the recorder may get it: frames reordered, lost,
    duplicated and damaged, with stray packets among them."""
    frames, ssrc, pt, payload = (
        (vp8_frames, VP8_SSRC, VP8_PT, vp8_payload)
        if codec == "vp8"
        else (h264_frames, H264_SSRC, H264_PT, h264_payload)
    )
    packets = frames(draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 2**32 - 1)), 6)
    edits = draw(st.lists(st.tuples(st.sampled_from(["drop", "swap", "dup", "damage", "stray"]),
                                    st.integers(0, 64)), max_size=8))  # fmt: skip
    for how, at in edits:
        i = at % len(packets)
        if how == "drop" and len(packets) > 1:
            del packets[i]
        elif how == "swap":
            j = (i + 1) % len(packets)
            packets[i], packets[j] = packets[j], packets[i]
        elif how == "dup":
            packets.insert(i, packets[i])
        elif how == "damage":
            packets[i] = draw(mutated(st.just(packets[i])))
        else:
            packets.insert(i, draw(datagrams(st.builds(
                lambda seq, ts, body: rtp(seq, ts, ssrc, pt, body),
                st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), payload(),
            ))))  # fmt: skip
    return packets


OPUS_PACKETS = st.builds(
    lambda seq, ts, body: rtp(seq, ts, OPUS_SSRC, OPUS_PT, body),
    st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.binary(max_size=20),
)  # fmt: skip


@seed(SEED)
@hypothesis_settings(max_examples=1200)
@given(packets=recorded_stream(), opus=st.lists(datagrams(OPUS_PACKETS), max_size=6))
def test_recorder_reassembly(packets, opus):
    count("packets into the recorder's reassembly")
    asks = []
    frames = Vp8Frames(lambda: asks.append(1), max_pending=4)
    out = []
    for i, packet in enumerate(packets):
        out += frames.add(packet, i / 100)
    # In order, and starting on a keyframe: nothing before one can be decoded.
    assert all(ts_newer(b.timestamp, a.timestamp) for a, b in zip(out, out[1:], strict=False))
    assert not out or out[0].keyframe
    opus_frames = OpusFrames()
    for packet in opus:
        for frame in opus_frames.add(packet, 0.0):
            assert isinstance(frame.data, bytes)


@seed(SEED)
@hypothesis_settings(max_examples=800)
@given(packets=recorded_stream("h264"))
def test_recorder_h264_reassembly(packets):
    count("packets into the recorder's H.264 reassembly")
    frames = H264Frames(lambda: None, max_pending=4)
    out = []
    for i, packet in enumerate(packets):
        out += frames.add(packet, i / 100)
    assert all(ts_newer(b.timestamp, a.timestamp) for a, b in zip(out, out[1:], strict=False))
    assert not out or out[0].keyframe
    for frame in out:  # whole AVCC samples; a keyframe with its parameter sets
        assert avcc_nals(frame.data)
        # A damaged SPS may still parse, to another size (the publisher's word, as
        # for any SPS); what parses is a picture size, never nonsense.
        config = stream_config(frame.data) if frame.keyframe else None
        assert config is None or min(config[0]) > 0
        if config is not None and config[0] != (320, 240):
            count("damaged parameter sets parsed to another size")


def test_a_real_session_forwards_and_records():
    """The fuzzed setup is a working one: real packets are forwarded and recorded."""
    clock = Clock()
    with mock.patch.object(leg_module, "time", clock):
        session = Session(clock)
        session.start_streams()
        for packet in vp8_frames(101, 12000, 3):
            session.tap._data_received(packet, 1)
        assert {rtp_ssrc(p) for p in session.subscriber.tap.rtp} == {7000, 7002, 7004}
        keyframe_then_frames = session.recorded["video"]
        assert keyframe_then_frames[0].keyframe and len(keyframe_then_frames) == 4
