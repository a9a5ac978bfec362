"""What the recorder's segments and the exports declare: an OpusHead on every Opus
track, each video track's size and (H.264) avcC as its frames hold them, a new
segment when a publisher changes size, Matroska when a track is H.264. The real
recorder is fed RTP from aiortc's own encoders through a stand-in for the media
node; PyAV decodes what it writes."""

from __future__ import annotations

import fractions
import io

import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.codecs import Codec
from recordings.codecs import add_track, container_format, opus_head
from recordings.recorder import SessionRecorder
from recordings.remux import remux
from tests.support.matroska import check_declared, header, parse_opus_head
from tests.unit.test_reassembly import rtp
from tests.unit.test_recording_crypto import opus_frames

FPS = 30
SMALL, LARGE = (320, 240), (640, 360)
CODECS = {
    96: Codec("VP8", 90000, 96, None, None),
    102: Codec("H264", 90000, 102, None, "42e0/1"),
    111: Codec("OPUS", 48000, 111, None, None),
}


class Subscription:
    def __init__(self, publishing: bool, publisher: Publisher | None) -> None:
        self.publishing = publishing
        self.publisher = publisher  # a camera, which may be asked for a keyframe

    def codec(self, payload_type: int) -> Codec | None:
        return CODECS.get(payload_type) if self.publishing else None

    def sender_clock(self) -> None:
        return None

    def request_keyframe(self, *, urgent: bool = False) -> None:
        if self.publisher is not None:
            self.publisher.keyframe_asked = True

    def close(self) -> None:
        pass


class Media:
    """The media node as the recorder sees it: who publishes which (slot, role)."""

    def __init__(self, cameras: dict[tuple[str, str], Publisher], microphones: set) -> None:
        self.cameras, self.microphones = cameras, microphones

    def add_sink(self, session_id, slot, role, on_packet) -> Subscription:
        key = (slot, role)
        return Subscription(key in self.cameras or key in self.microphones, self.cameras.get(key))


class Publisher:
    """A camera encoded by aiortc, RTP packets out; it switches size at ``switch_s``."""

    def __init__(self, mime: str, payload_type: int, switch_s: float) -> None:
        self.encoder = get_encoder(
            RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=payload_type)
        )
        self.payload_type, self.switch_s = payload_type, switch_s
        self.seq = 0
        self.keyframe_asked = False

    def packets(self, index: int) -> list[bytes]:
        width, height = SMALL if index / FPS < self.switch_s else LARGE
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :, 1] = (np.arange(width) + 4 * index) % 256
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, ts = self.encoder.encode(frame, force_keyframe=self.keyframe_asked)
        self.keyframe_asked = False
        out = []
        for i, payload in enumerate(payloads):
            marker = i == len(payloads) - 1
            out.append(rtp(self.seq, ts, payload, marker=marker, pt=self.payload_type))
            self.seq += 1
        return out


def record(seconds: float = 2.0) -> list[bytes]:
    """The plaintext segments of a recording where the referrer's VP8 camera grows at
    1 s and the specialist's H.264 camera at 1.5 s, with the referrer's microphone."""
    publishers = {
        ("referrer", "video"): Publisher("video/VP8", 96, 1.0),
        ("specialist", "video"): Publisher("video/H264", 102, 1.5),
    }
    media = Media(publishers, {("referrer", "audio")})
    segments: dict[int, bytes] = {}

    class Sink(io.BytesIO):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

        def close(self) -> None:
            segments[self.index] = self.getvalue()
            super().close()

    recorder = SessionRecorder(media, "s1", lambda index, titles: Sink(index), wall=lambda: 0.0)
    recorder.start()
    tracks = {t.label: t for t in recorder.tracks}
    sounds = opus_frames()
    for tick in range(int(seconds * 150)):  # 150 ticks a second: audio and video meet
        now = tick / 150
        if tick % 3 == 0:  # 20 ms of Opus
            i = tick // 3
            packet = rtp(i, i * 960, sounds[i % len(sounds)], marker=True, pt=111)
            tracks["referrer-audio"].handle(packet, now)
        if tick % 5 == 0:
            for (slot, role), publisher in publishers.items():
                for packet in publisher.packets(tick // 5):
                    tracks[f"{slot}-{role}"].handle(packet, now)
    recorder.stop()
    return [segments[i] for i in sorted(segments)]


def test_opus_head_is_rfc_7845s():
    assert opus_head() == b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    assert parse_opus_head(opus_head(channels=1, pre_skip=0))["channels"] == 1


def test_segments_declare_what_they_hold_and_a_new_size_starts_one():
    segments = record()
    sizes = []
    for data in segments:
        doctype, tracks = header(data)
        assert doctype == "matroska"  # H.264 is not allowed in WebM
        assert tracks["specialist-video"].codec_id == "V_MPEG4/ISO/AVC"
        assert tracks["referrer-audio"].seek_preroll == 80_000_000
        held = check_declared(data)  # every frame as its segment's header says
        sizes.append((held["referrer-video"][0], held["specialist-video"][0]))
    # The referrer's new size starts segment 2, the specialist's segment 3.
    assert sizes == [(SMALL, SMALL), (LARGE, SMALL), (LARGE, LARGE)]

    exported = io.BytesIO()
    assert remux("r1", lambda: iter(segments), exported, None) == "video/x-matroska"
    data = exported.getvalue()
    cameras = frozenset({"referrer-video", "specialist-video"})
    held = check_declared(data, changing=cameras)  # the OpusHead survives the remux
    _, tracks = header(data)
    for name in cameras:
        assert (tracks[name].width, tracks[name].height) == SMALL  # the first frames' size
        frames = held[name]
        changes = [i for i in range(1, len(frames)) if frames[i] != frames[i - 1]]
        assert len(changes) == 1 and set(frames[changes[0] :]) == {LARGE}, name
    assert tracks["specialist-video"].private == header(segments[0])[1]["specialist-video"].private


def test_a_track_declares_its_codec_private_data():
    buffer = io.BytesIO()
    codecs = ["vp8", "opus"]
    assert container_format(codecs) == "webm" and container_format(["h264", "opus"]) == "matroska"
    with av.open(buffer, mode="w", format=container_format(codecs)) as container:
        video = add_track(container, "vp8", ((642, 362), None))
        audio = add_track(container, "opus")
        for stream, title in ((video, "v"), (audio, "a")):
            stream.time_base = fractions.Fraction(1, 1000)
            stream.metadata["title"] = title
        packet = av.Packet(opus_frames()[0])
        packet.stream, packet.time_base, packet.pts = audio, audio.time_base, 0
        container.mux(packet)
    doctype, tracks = header(buffer.getvalue())
    assert doctype == "webm"
    assert (tracks["v"].width, tracks["v"].height) == (642, 362)
    assert tracks["a"].private == opus_head() and tracks["a"].channels == 2
