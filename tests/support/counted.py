"""Media that says what it is, for checking a recording frame by frame: a camera
that draws its frame counter into the picture as large black and white blocks
(they survive VP8 at any bitrate the tests reach), a microphone whose every 20 ms
frame plays a tone whose pitch follows its counter, and their readers."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack

VIDEO_CLOCK = 90000
COLUMNS, ROWS = 4, 5  # 20 blocks: 16 bits of counter, 4 of check
COUNTER_BITS = 16


def check_bits(counter: int) -> int:
    """Four bits that depend on every bit of the counter: a misread picture is
    refused rather than taken for another frame."""
    return (counter ^ counter >> 4 ^ counter >> 8 ^ counter >> 12) & 0xF


def _bits(counter: int) -> list[int]:
    word = counter & 0xFFFF | check_bits(counter) << COUNTER_BITS
    return [word >> i & 1 for i in range(COLUMNS * ROWS)]


def counter_picture(counter: int, width: int, height: int) -> np.ndarray:
    """A grey picture (height x width) of ``counter``: block i white when bit i is set."""
    picture = np.zeros((height, width), dtype=np.uint8)
    bw, bh = width // COLUMNS, height // ROWS
    for i, bit in enumerate(_bits(counter)):
        if bit:
            row, column = divmod(i, COLUMNS)
            picture[row * bh : (row + 1) * bh, column * bw : (column + 1) * bw] = 255
    return picture


def read_counter(picture: np.ndarray) -> int | None:
    """The counter drawn by ``counter_picture`` into a decoded grey picture, or None
    when its check bits do not match."""
    height, width = picture.shape
    bw, bh = width // COLUMNS, height // ROWS
    word = 0
    for i in range(COLUMNS * ROWS):
        row, column = divmod(i, COLUMNS)
        block = picture[row * bh + bh // 4 : (row + 1) * bh - bh // 4,
                        column * bw + bw // 4 : (column + 1) * bw - bw // 4]  # fmt: skip
        if block.mean() >= 128:
            word |= 1 << i
    counter = word & 0xFFFF
    return counter if word >> COUNTER_BITS == check_bits(counter) else None


class CounterVideoTrack(MediaStreamTrack):
    """A camera at a fixed size and frame rate whose frame ``n`` shows ``n``.
    ``sent`` is how many frames went to the encoder; ``reached(n)`` waits for it."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.sent = 0
        self._start: float | None = None
        self._waiters: list[tuple[int, asyncio.Future]] = []

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.sent / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # media pacing, not test synchronisation
        grey = counter_picture(self.sent, self.width, self.height)
        frame = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), format="rgb24")
        frame.pts = self.sent * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        for waiter in [w for w in self._waiters if w[0] <= self.sent]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)
        return frame

    async def reached(self, count: int) -> None:
        """Return once ``count`` frames have gone to the encoder."""
        if self.sent >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await waiter


AUDIO_RATE = 48000
AUDIO_FRAME = int(AUDIO_PTIME * AUDIO_RATE)  # 960 samples, one Opus packet
PITCHES = 16  # frame n plays pitch n % PITCHES
LOWEST_HZ, STEP_HZ = 600, 200


def pitch_hz(counter: int) -> int:
    return LOWEST_HZ + STEP_HZ * (counter % PITCHES)


def read_pitch(samples: np.ndarray) -> int | None:
    """Which of the PITCHES one decoded 20 ms frame (mono samples) plays, or None.
    Only its middle is read: Opus blends each frame with its neighbours at the edges."""
    window = samples[400:900].astype(float) * np.hanning(500)
    spectrum = np.abs(np.fft.rfft(window, 9600))
    hz = float(np.argmax(spectrum)) * AUDIO_RATE / 9600
    step = round((hz - LOWEST_HZ) / STEP_HZ)
    if 0 <= step < PITCHES and abs(hz - (LOWEST_HZ + STEP_HZ * step)) < 50:
        return step
    return None


class CounterAudioTrack(MediaStreamTrack):
    """A microphone whose 20 ms frame ``n`` plays a tone of ``pitch_hz(n)``, 48 kHz
    mono: a frame lost or repeated anywhere shows as a step other than one pitch."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self._start: float | None = None
        self._phase = 0.0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        delay = self._start + self.sent * AUDIO_PTIME - time.time()
        if delay > 0:
            await asyncio.sleep(delay)  # media pacing, not test synchronisation
        step = 2 * np.pi * pitch_hz(self.sent) / AUDIO_RATE
        pcm = (np.sin(self._phase + step * np.arange(AUDIO_FRAME)) * 8000).astype(np.int16)
        self._phase = (self._phase + step * AUDIO_FRAME) % (2 * np.pi)
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.pts = self.sent * AUDIO_FRAME
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.sent += 1
        return frame
