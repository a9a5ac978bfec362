"""A simulcast publisher for the benchmarks, as a browser sends it: RIDs in the offer
and no SSRC for the layers, each layer's packets tagged with the RID header
extension, VP8 with PictureID and TL0PICIDX of its own. The layers are pre-encoded
clips (bench.common.simulcast_clip_paths and the clip itself), sent through media's
Tap without an encoder; aiortc does signaling, ICE and DTLS only.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time

from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription

from media.aiortc_internals import Tap
from media.simulcast import REPAIRED_RID_URI, RID_URI

RIDS = ("q", "h", "f")
RID_EXT, REPAIRED_EXT, MID_EXT = 10, 11, 1  # aiortc offers the MID as extension 1
MTU_PAYLOAD = 1100
WITH_RID_PACKETS = 50  # a browser stops tagging once the receiver reports on the SSRC


def simulcast_offer(sdp: str) -> str:
    """aiortc's offer, its video m-section made a browser's simulcast one."""
    out, section = [], None
    extra = [
        f"a=extmap:{RID_EXT} {RID_URI}",
        f"a=extmap:{REPAIRED_EXT} {REPAIRED_RID_URI}",
        *[f"a=rid:{rid} send" for rid in RIDS],
        "a=simulcast:send " + ";".join(RIDS),
    ]
    for line in sdp.splitlines():
        if line.startswith("m="):
            if section == "video":
                out += extra
            section = line[2:].split(" ", 1)[0]
        if section == "video" and line.startswith(("a=ssrc:", "a=ssrc-group:")):
            continue
        out.append(line)
    if section == "video":
        out += extra
    return "\r\n".join(out) + "\r\n"


class SimulcastSender:
    """Sends ``clips`` (smallest first, each a bench.clients.Clip) as simulcast layers
    on ``pc``'s video m-line once the answer is applied."""

    def __init__(self, pc: RTCPeerConnection, answer: str, clips: list) -> None:
        video = next(m for m in SessionDescription.parse(answer).media if m.kind == "video")
        self.pt = next(c.payloadType for c in video.rtp.codecs if c.name == "VP8")
        self.mid = video.rtp.muxId.encode()
        self.clips = clips
        self.tap = Tap(pc, lambda _packet: None, lambda _data: None)
        self.ssrcs = [random.getrandbits(32) for _ in clips]
        self.seqs = [random.getrandbits(16) for _ in clips]
        self.pids = [random.getrandbits(15) for _ in clips]
        self.tl0s = [random.getrandbits(8) for _ in clips]
        self.sent = [0] * len(clips)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        start = time.monotonic()
        indexes = [0] * len(self.clips)
        while True:
            due = []
            for layer, clip in enumerate(self.clips):
                passes, i = divmod(indexes[layer], len(clip.packets))
                offset, data = clip.packets[i]
                due.append((passes * clip.period + offset, layer, data))
            at, layer, data = min(due)
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # media pacing
            if self.tap.ready:
                self._send(layer, data, at)
            indexes[layer] += 1

    def _send(self, layer: int, data: bytes, at: float) -> None:
        self.pids[layer] = pid = (self.pids[layer] + 1) & 0x7FFF
        self.tl0s[layer] = tl0 = (self.tl0s[layer] + 1) & 0xFF  # every frame a base frame
        ts = int(at * 90000) & 0xFFFFFFFF
        tagged = self.sent[layer] < WITH_RID_PACKETS
        chunks = [data[i : i + MTU_PAYLOAD] for i in range(0, len(data), MTU_PAYLOAD)]
        for n, chunk in enumerate(chunks):
            self.seqs[layer] = seq = (self.seqs[layer] + 1) & 0xFFFF
            marker = 0x80 if n == len(chunks) - 1 else 0
            head = struct.pack(
                "!BBHII", 0x90 if tagged else 0x80, marker | self.pt, seq, ts, self.ssrcs[layer]
            )
            if tagged:
                rid = RIDS[layer].encode()
                body = bytes([MID_EXT << 4 | (len(self.mid) - 1)]) + self.mid
                body += bytes([RID_EXT << 4 | (len(rid) - 1)]) + rid
                body += b"\0" * (-len(body) % 4)
                head += struct.pack("!HH", 0xBEDE, len(body) // 4) + body
            descriptor = bytes([0x90 if n == 0 else 0x80, 0xE0, 0x80 | pid >> 8, pid & 0xFF,
                                tl0, 0x20])  # fmt: skip
            self.tap.send(head + descriptor + chunk)
            self.sent[layer] += 1

    def close(self) -> None:
        self.task.cancel()
        self.tap.close()
