"""A publisher that sends its camera in simulcast layers as a browser does: RIDs in
the offer and no SSRC for them, the RID (and, on retransmissions, repaired-RID)
header extension on every packet, each layer encoded live by its own VP8 encoder
(PyAV's libvpx) with PictureID and TL0PICIDX of its own, and a keyframe of one
layer when the server asks for that layer (PLI on its SSRC).

aiortc cannot send simulcast, so this client uses aiortc for signaling, ICE and
DTLS only and sends its RTP through media's Tap, as the server does.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import struct
import time
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from media.aiortc_internals import Tap, keep_codecs_off, restrict_host_addresses
from media.rtp import (
    PSFB_PLI,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_SR,
    parse_report_blocks,
    parse_rtcp,
)
from media.simulcast import REPAIRED_RID_URI, RID_URI
from tests.support.peers import JisrClient

RID_EXT, RRID_EXT, MID_EXT = 10, 11, 1  # aiortc offers the MID as extension 1
FPS = 30
MTU_PAYLOAD = 1100
# Each layer's picture: its own colour, with a white bar an eighth of its width moving
# across it, so a frame decoded from a wrong reference shows in its mean colour.
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def expected_mean(layer: int) -> np.ndarray:
    return np.array(COLOURS[layer], dtype=float) * 7 / 8 + 255 / 8


def picture(layer: int, width: int, height: int, index: int) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:, :] = COLOURS[layer]
    bar = width // 8
    start = (index * 4) % width
    columns = (np.arange(bar) + start) % width
    image[:, columns] = 255
    return image


@dataclass
class Layer:
    rid: str
    width: int
    height: int
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts_base: int = field(default_factory=lambda: random.getrandbits(32))
    pid: int = field(default_factory=lambda: random.getrandbits(15))
    tl0: int = field(default_factory=lambda: random.getrandbits(8))
    want_key: bool = True
    keyframes: int = 0
    plis: int = 0
    encoder: av.CodecContext | None = None

    def encode(self, index: int, layer: int) -> bytes:
        if self.encoder is None:
            self.encoder = av.CodecContext.create("libvpx", "w")
            self.encoder.width, self.encoder.height = self.width, self.height
            self.encoder.pix_fmt = "yuv420p"
            self.encoder.time_base = fractions.Fraction(1, FPS)
            # ~1.4 bits a pixel a second, at least 60 kbit/s: the smallest layer's
            # colours come through compression within the test's tolerance
            self.encoder.bit_rate = max(60_000, 40 * self.width * self.height // 16)
            self.encoder.options = {
                "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "g": "3000",
            }  # fmt: skip
        image = picture(layer, self.width, self.height, index)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        if self.want_key:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(p) for p in self.encoder.encode(frame))
        return data


def offer_with_simulcast(sdp: str, rids: list[str]) -> str:
    """aiortc's offer, its video m-section made a browser's simulcast one."""
    out, section = [], None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if section == "video":
                out += _simulcast_lines(rids)
            section = line[2:].split(" ", 1)[0]
        if section == "video" and line.startswith(("a=ssrc:", "a=ssrc-group:")):
            continue
        out.append(line)
    if section == "video":
        out += _simulcast_lines(rids)
    return "\r\n".join(out) + "\r\n"


def _simulcast_lines(rids: list[str]) -> list[str]:
    return [
        f"a=extmap:{RID_EXT} {RID_URI}",
        f"a=extmap:{RRID_EXT} {REPAIRED_RID_URI}",
        *[f"a=rid:{rid} send" for rid in rids],
        "a=simulcast:send " + ";".join(rids),
    ]


def extensions(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


class SimulcastPublisher:
    """A participant publishing ``sizes`` (smallest first) as simulcast layers."""

    def __init__(self, client: JisrClient, sizes: list[tuple[int, int]]) -> None:
        self.client = client
        self.layers = [Layer(rid, w, h) for rid, (w, h) in zip("qhf", sizes, strict=False)]
        self.by_ssrc = {layer.ssrc: layer for layer in self.layers}
        self.pc: RTCPeerConnection | None = None
        self.tap: Tap | None = None
        self.answer = ""
        self.reported: set[int] = set()  # SSRCs the server's receiver reports are about
        self.remb: int | None = None
        self._task: asyncio.Task | None = None
        self.vp8_pt = self.rtx_pt = self.mid = 0

    async def start(self) -> dict:
        restrict_host_addresses(["127.0.0.1"])
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        for kind in ("audio", "video"):
            keep_codecs_off(self.pc.addTransceiver(kind, direction="sendrecv"))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = offer_with_simulcast(self.pc.localDescription.sdp, [x.rid for x in self.layers])
        reply = await self.client.request({"type": "offer", "sdp": offer})
        if reply["type"] != "answer":
            return reply
        self.answer = reply["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))
        video = next(m for m in SessionDescription.parse(self.answer).media if m.kind == "video")
        self.vp8_pt = next(c.payloadType for c in video.rtp.codecs if c.name == "VP8")
        self.rtx_pt = next(
            c.payloadType for c in video.rtp.codecs
            if c.name == "rtx" and c.parameters.get("apt") == self.vp8_pt
        )  # fmt: skip
        self.mid = video.rtp.muxId.encode()
        self.tap = Tap(self.pc, lambda _packet: None, self._on_rtcp)
        self._task = asyncio.ensure_future(self._send())
        return reply

    def _on_rtcp(self, data: bytes) -> None:
        for item in parse_rtcp(data):
            packet = data[item.offset : item.offset + item.length]
            if item.packet_type in (RTCP_RR, RTCP_SR):
                self.reported |= {block.ssrc for block in parse_report_blocks(packet)}
            elif item.packet_type == RTCP_PSFB and item.fmt == PSFB_PLI:
                layer = self.by_ssrc.get(item.media_ssrc)
                if layer is not None:
                    layer.want_key = True
                    layer.plis += 1

    async def _send(self) -> None:
        start, index = time.monotonic(), 0
        while True:
            delay = start + index / FPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # media pacing
            if self.tap.ready:
                for number, layer in enumerate(self.layers):
                    self._send_frame(layer, number, index)
            index += 1

    def _send_frame(self, layer: Layer, number: int, index: int) -> None:
        key = layer.want_key
        data = layer.encode(index, number)
        if not data:
            return
        layer.want_key = False
        layer.keyframes += key
        layer.pid = (layer.pid + 1) & 0x7FFF
        layer.tl0 = (layer.tl0 + 1) & 0xFF  # every frame here is a base-layer frame
        ts = (layer.ts_base + index * 90000 // FPS) & 0xFFFFFFFF
        ext = extensions([(MID_EXT, self.mid), (RID_EXT, layer.rid.encode())])
        chunks = [data[i : i + MTU_PAYLOAD] for i in range(0, len(data), MTU_PAYLOAD)]
        for n, chunk in enumerate(chunks):
            descriptor = bytes(
                [0x90 if n == 0 else 0x80, 0xE0, 0x80 | layer.pid >> 8, layer.pid & 0xFF,
                 layer.tl0, 0x20]
            )  # fmt: skip
            marker = 0x80 if n == len(chunks) - 1 else 0
            layer.seq = (layer.seq + 1) & 0xFFFF
            head = struct.pack("!BBHII", 0x90, marker | self.vp8_pt, layer.seq, ts, layer.ssrc)
            self.tap.send(head + ext + descriptor + chunk)
        if index % FPS == 0:  # now and then a bandwidth probe on the layer's RTX stream
            self._send_padding(layer, ts)

    def _send_padding(self, layer: Layer, ts: int) -> None:
        ext = extensions([(MID_EXT, self.mid), (RRID_EXT, layer.rid.encode())])
        head = struct.pack("!BBHII", 0xB0, self.rtx_pt, index_seq(layer), ts, layer.ssrc ^ 1)
        self.tap.send(head + ext + b"\0" * 99 + b"\x64")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.tap is not None:
            self.tap.close()
        if self.pc is not None:
            await self.pc.close()


def index_seq(layer: Layer) -> int:
    return layer.seq  # RTX has a sequence of its own; any value serves a probe
