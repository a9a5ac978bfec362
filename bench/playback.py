"""Recording playback: peak memory and time to first byte per playback, for a short
and a long recording, side by side in one run:

(a) before: the rendition remuxed whole into memory, then sent (what ``Vault.stream``
    did until the playback cache);
(b) first playback: remuxed once into the encrypted playback cache, then read from it;
(c) later playbacks: read from the cache, verifying only the chunks sent;
(d) a seek: 1 MiB from the middle of the file, from the cache (a ``Range`` request).

    python -m bench.playback [--json] [--short 60] [--long 600] [--segment 10]

Two participants each publish the pre-encoded clip (640x480 VP8 at 1 Mbit/s, Opus),
recorded in segments of ``--segment`` seconds like the recorder writes them, into an
encrypted vault on disk. Each playback runs in a process of its own that opens the
vault and reads every byte of the file (a player's whole download) without keeping
it, as the HTTP handler does minus the socket; twice: once for the time to first
byte, the total time and the growth of the process's peak resident memory (VmHWM),
once under tracemalloc for the peak of Python allocations.

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

from .common import ROOT, clip_path, log, machine, machine_line, table

MS = Fraction(1, 1000)
SLOTS = ("referrer", "specialist")
MODES = ("before", "first", "again", "seek")
SEEK = 1024 * 1024


# -- making the recordings ---------------------------------------------------------------


def clip_packets(path: Path) -> tuple[int, list[tuple[str, int, bytes, bool]]]:
    """The clip's packets as (kind, ms, data, keyframe), and its length in ms."""
    import av

    packets = []
    with av.open(str(path)) as clip:
        for packet in clip.demux():
            if packet.size and packet.pts is not None:
                at = int(packet.pts * packet.time_base * 1000)
                packets.append((packet.stream.type, at, bytes(packet), packet.is_keyframe))
    length = max(at for _kind, at, _data, _key in packets) + 40
    return length, packets


def mux_segment(sink, packets, length_ms: int, start_ms: int, end_ms: int) -> None:
    """The clip, looped, between ``start_ms`` and ``end_ms`` of the recording, for
    both participants, as the recorder muxes it (live WebM, ms timestamps)."""
    import av

    container = av.open(sink, mode="w", format="webm", options={"live": "1"})
    streams = {}
    for slot in SLOTS:
        for kind in ("video", "audio"):
            if kind == "video":
                stream = container.add_mux_stream("vp8", width=640, height=480)
            else:
                stream = container.add_mux_stream("opus", rate=48000)
            stream.time_base = MS
            stream.metadata["title"] = f"{slot}-{kind}"
            streams[slot, kind] = stream
    events = []
    for loop in range(start_ms // length_ms, end_ms // length_ms + 1):
        for kind, at, data, key in packets:
            pts = loop * length_ms + at
            if start_ms <= pts < end_ms:
                events += [(pts, streams[slot, kind], data, key) for slot in SLOTS]
    for pts, stream, data, key in sorted(events, key=lambda e: (e[0], e[1].index)):
        packet = av.Packet(data)
        packet.stream, packet.time_base = stream, MS
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        container.mux(packet)
    container.close()


def make_recording(vault, recording_id: str, seconds: int, segment_s: int, clip) -> None:
    length_ms, packets = clip
    handle = vault.create(recording_id, {"participants": []})
    titles = [f"{slot}-{kind}" for slot in SLOTS for kind in ("video", "audio")]
    for index, start in enumerate(range(0, seconds, segment_s), start=1):
        end = min(seconds, start + segment_s)
        mux_segment(handle.open_segment(index, titles), packets, length_ms,
                    start * 1000, end * 1000)  # fmt: skip
    handle.finish(duration_s=seconds)


# -- one playback, in a process of its own --------------------------------------------------


def _status(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _before(vault, recording_id: str):
    """The playback as Vault.stream made it before the cache: remuxed into memory."""
    data_key, meta = vault._open(recording_id)
    buffer = io.BytesIO()
    vault._remux(recording_id, data_key, meta, buffer, None)
    data = buffer.getvalue()
    del buffer
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


def _after(vault, recording_id: str, seek: bool):
    with vault.stream(recording_id, audit=lambda *a, **k: None, played=False) as playback:
        start = playback.size // 2 if seek else 0
        end = min(playback.size, start + SEEK) if seek else playback.size
        yield from playback.pieces(start, end)


def child(args: argparse.Namespace) -> int:
    from recordings.crypto import load_master_key
    from recordings.storage import FileStorage
    from recordings.vault import Vault

    vault = Vault(FileStorage(args.dir), load_master_key(args.key))
    traced = args.traced
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak resident memory starts again from here
    rss = _status("VmRSS")
    if traced:
        tracemalloc.start()
    began = time.perf_counter()
    if args.mode == "before":
        pieces = _before(vault, args.recording)
    else:
        pieces = _after(vault, args.recording, seek=args.mode == "seek")
    first, size = None, 0
    for piece in pieces:
        first = first if first is not None else time.perf_counter() - began
        size += len(piece)
    total = time.perf_counter() - began
    result = {"bytes": size, "ttfb_s": first, "total_s": total}
    if traced:
        result["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    else:
        result["rss_growth_mib"] = _status("VmHWM") - rss
    print(json.dumps(result))
    return 0


def playback(folder: Path, recording_id: str, mode: str, traced: bool) -> dict:
    where = ["--dir", str(folder / "store"), "--key", str(folder / "key")]
    command = [sys.executable, "-m", "bench.playback", "--child", mode, "--recording", recording_id]
    command += where
    if traced:
        command.append("--traced")
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run -----------------------------------------------------------------------------


def measure(folder: Path, recording_id: str) -> dict:
    from recordings.storage import FileStorage

    storage = FileStorage(folder / "store")
    for name in storage.list(f"{recording_id}/play-"):
        storage.delete(name)  # (b) is the first playback
    results = {}
    for mode in MODES:
        timed = playback(folder, recording_id, mode, traced=False)
        if mode == "first":  # (b) again under tracemalloc: a fresh cache to build
            for name in storage.list(f"{recording_id}/play-"):
                storage.delete(name)
        timed.update(playback(folder, recording_id, mode, traced=True))
        results[mode] = timed
        log(f"{recording_id} {mode}: {json.dumps(timed)}")
    return results


def rows(figures: dict) -> list[list]:
    out = []
    for name, (seconds, results) in figures.items():
        size = results["again"]["bytes"] / 2**20
        for mode in MODES:
            r = results[mode]
            out.append([
                f"{name} ({seconds} s, {size:.1f} MiB)", mode,
                f"{r['ttfb_s'] * 1000:.1f}", f"{r['total_s']:.2f}",
                f"{r['traced_peak_mib']:.2f}", f"{r['rss_growth_mib']:.1f}",
            ])  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=60, help="seconds of the short recording")
    parser.add_argument("--long", type=int, default=600, help="seconds of the long recording")
    parser.add_argument("--segment", type=int, default=10, help="seconds per segment")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--recording", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        return child(args)

    from recordings.crypto import generate_key_file
    from recordings.storage import FileStorage
    from recordings.vault import Vault

    info = machine()
    log(machine_line(info))
    clip = clip_packets(clip_path())
    figures = {}
    with tempfile.TemporaryDirectory(prefix="jisr-playback-") as folder:
        vault = Vault(FileStorage(Path(folder) / "store"), generate_key_file(Path(folder) / "key"))
        for name, seconds in (("short", args.short), ("long", args.long)):
            log(f"recording {name}: {seconds} s in {args.segment} s segments")
            make_recording(vault, f"r_{name}", seconds, args.segment, clip)
            figures[name] = (seconds, measure(Path(folder), f"r_{name}"))
    print(machine_line(info))
    headers = ["recording", "playback", "TTFB ms", "total s", "peak Python MiB", "peak RSS +MiB"]
    print(table(headers, rows(figures)))
    if args.json:
        print(json.dumps({"machine": info, "figures": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
