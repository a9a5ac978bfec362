"""Server CPU to record a participant: Jisr's recorder (encoded frames muxed into
encrypted WebM segments, never decoded) against aiortc's stock MediaRecorder
(decode, then encode again), same publisher, same source, one run.

    python -m bench.recording [--json] [--warmup 3] [--window 10] [--rounds 2]

One audio+video participant (the referrer) publishes the pre-encoded clip:

(a) forward: Jisr forwards it to the specialist, who counts frames without decoding;
(b) forward + record: the same connections, with a recording running: the referrer
    asks (``recording.request``) and the specialist consents (``recording.consent``)
    over their WebSockets, since every present participant must consent;
(c) stock record: a small aiortc server (bench.recording_server) receives the same
    publisher and records it with ``MediaRecorder`` to a WebM file.

Each figure is the server process's CPU (% of one core) over the measuring window.
(a) and (b) alternate on one Jisr server and one pair of clients, in the order
a b, b a, a b, ... (``--rounds`` pairs; their means are reported). Afterwards the
Jisr recordings are opened from the vault with the master key, exported and
decoded, and the stock file too, so that every figure stands for a recording that
really exists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from aiohttp import ClientSession, WSMsgType

from media.aiortc_internals import restrict_host_addresses

from . import clients
from .common import (
    AUDIO_PACKETS_PER_S,
    FPS,
    HEIGHT,
    ROOT,
    WIDTH,
    CpuWindow,
    Processes,
    Server,
    Worker,
    clip_path,
    die_with_parent,
    free_port,
    http_json,
    jisr_session,
    log,
    machine,
    machine_line,
    on_sigterm_exit,
    start_jisr,
    table,
    time_bound,
    wait_healthy,
)

TARGET_OVERHEAD_PTS = 2.0  # recording adds at most this, in points of one core
TARGET_RATIO_TO_STOCK = 1 / 20  # Jisr forward + record against MediaRecorder
MIN_SHARE = 0.90  # of the nominal rates, for what the subscriber receives
# Of the source's frame rate, for the video a recording file holds. Nothing is missing
# at segment boundaries (a segment rolls at each track's next keyframe, which the
# pre-encoded source sends once a second rather than on request); the margin is for
# the first keyframe of the recording and for loss.
MIN_FILE_SHARE = 0.80
GAP_S = 0.2  # a longer pause between two video frames of a file is counted as a gap
NOMINAL = {"video": FPS, "audio": AUDIO_PACKETS_PER_S}
DECODE_FRAMES = 10  # decoded from each recording, to prove the picture
CONTROL_TIMEOUT_S = 15
LABELS = {"forward": "forward", "record": "forward + record"}


# -- load generators that can also drive a recording ----------------------------------------


@dataclass(eq=False)
class ControlledClient(clients.Client):
    """A bench client whose WebSocket can still send requests after the offer:
    replies are matched by ``ref``, and the last pushed ``recording.state`` is kept."""

    waiting: dict[str, asyncio.Future] = field(default_factory=dict)
    recording: dict | None = None

    async def _drain(self) -> None:
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except ValueError:
                continue
            waiter = self.waiting.pop(data.get("ref"), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            if data.get("type") == "recording.state":
                self.recording = data
            self.pushed.append(data.get("code") or data.get("state") or data.get("type"))
            del self.pushed[:-8]

    async def control(self, kind: str, fields: dict) -> dict:
        ref = f"{kind}-{time.monotonic_ns()}"
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[ref] = waiter
        await self.ws.send_json({"type": kind, "ref": ref, **fields})
        try:
            return await asyncio.wait_for(waiter, CONTROL_TIMEOUT_S)
        finally:
            self.waiting.pop(ref, None)

    async def await_recording(self, state: str) -> dict:
        until = time.monotonic() + CONTROL_TIMEOUT_S
        while time.monotonic() < until:
            if self.recording is not None and self.recording.get("state") == state:
                return self.recording
            await asyncio.sleep(0.05)  # polling the last pushed state
        seen = self.recording.get("state") if self.recording else None
        raise RuntimeError(f"{self.spec['name']}: recording stayed {seen!r}, not {state!r}")


def control_worker_main(conn, clip: str, deadline: float) -> None:
    """bench.clients.worker_main's commands (add, snap, stop), plus
    ("control", name, type, fields) -> the server's reply to that message, and
    ("await_recording", name, state) -> the pushed recording.state once it is that."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when to stop
    restrict_host_addresses(["127.0.0.1"])  # loopback only; no STUN server either
    asyncio.run(_serve(conn, clients.load_clip(clip), deadline))


async def _serve(conn, clips: dict, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + max(0.0, deadline - time.time()), os._exit, 3)  # hard bound
    running: dict[str, ControlledClient] = {}
    async with ClientSession() as http:
        try:
            while True:
                command, *args = await asyncio.to_thread(conn.recv)
                if command == "stop":
                    break
                try:
                    if command == "add":
                        conn.send(("ok", await _add(http, running, clips, args[0])))
                    elif command == "snap":
                        snapshot = {n: c.streams() for n, c in running.items()}
                        conn.send(("ok", {"t": time.monotonic(), "clients": snapshot}))
                    elif command == "control":
                        name, kind, fields = args
                        conn.send(("ok", await running[name].control(kind, fields)))
                    elif command == "await_recording":
                        name, state = args
                        conn.send(("ok", await running[name].await_recording(state)))
                    else:
                        conn.send(("error", f"unknown command {command!r}"))
                except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*(c.close() for c in running.values())), 10)
    with contextlib.suppress(OSError):
        conn.send(("ok", None))


async def _add(http: ClientSession, running: dict, clips: dict, specs: list[dict]) -> int:
    new = [ControlledClient(spec, clips) for spec in specs]
    for client in new:
        running[client.spec["name"]] = client
    await asyncio.wait_for(asyncio.gather(*(c.start(http) for c in new)), clients.READY_TIMEOUT_S)
    until = time.monotonic() + clients.READY_TIMEOUT_S
    while time.monotonic() < until:
        waiting = {c.spec["name"]: m for c in new if (m := c.missing())}
        if not waiting:
            return len(new)
        await asyncio.sleep(0.1)  # polling the counters
    raise RuntimeError(f"media did not start: {waiting}")


class ControlWorker(Worker):
    """A load generator process running control_worker_main."""

    def __init__(self, name: str, clip: Path, deadline: float) -> None:
        context = multiprocessing.get_context("spawn")  # no fork after threads
        self.name = name
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=control_worker_main, args=(child, str(clip), deadline), name=name, daemon=True
        )
        self.process.start()
        child.close()

    def control(self, client: str, kind: str, **fields) -> dict:
        reply = self.call("control", client, kind, fields)
        if reply.get("type") != "recording.ok":
            raise RuntimeError(f"{client}: {kind} refused: {reply}")
        return reply


# -- servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def environment(**values: str):
    """These variables in os.environ (which servers inherit) for a while."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def new_recording_key(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "recordings", "init-key", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"recordings init-key failed: {done.stderr.strip()}")


def start_stock_recorder(procs: Processes, out: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.recording_server", "--port", str(port), "--dir", str(out)]
    proc = procs.start("stock-recorder", argv)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{procs.log_tail('stock-recorder')}") from None
    return Server("stock", base, proc)


def check_alive(server: Server, procs: Processes, name: str) -> None:
    if server.proc.poll() is not None:
        raise RuntimeError(f"{name} server died:\n{procs.log_tail(name)}")


# -- measuring -------------------------------------------------------------------------


def best_rates(before: dict, after: dict, client: str) -> dict[str, float]:
    """Per kind, the best stream's rate (frames or packets per second) one client
    received over the window."""
    elapsed = after["t"] - before["t"]
    earlier = before["clients"].get(client, {})
    found: dict[str, float] = {}
    for key, s in after["clients"].get(client, {}).items():
        rate = (s["frames"] - earlier.get(key, {}).get("frames", 0)) / elapsed
        found[s["kind"]] = max(found.get(s["kind"], 0.0), rate)
    return found


def short_of(rates: dict[str, float], what: str) -> list[str]:
    problems = []
    for kind, nominal in NOMINAL.items():
        rate = rates.get(kind, 0.0)
        if rate < MIN_SHARE * nominal:
            problems.append(f"{what}: {kind} at {rate:.1f}/s, wanted >= {MIN_SHARE * nominal:.0f}")
    return problems


def jisr_window(server, publisher, subscriber, window: float) -> dict:
    cpu = CpuWindow(
        {"server": server.proc.pid, "publisher": publisher.pid, "subscriber": subscriber.pid}
    )
    cpu.start()
    before = subscriber.call("snap")
    time.sleep(window)
    after = subscriber.call("snap")
    return {"cpu": cpu.stop(), "rates": best_rates(before, after, "specialist")}


def run_jisr(clip: Path, work: Path, args, deadline: float) -> dict:
    """(a) and (b), alternating on one server and one pair of clients."""
    key, vault_dir = work / "recording.key", work / "vault"
    new_recording_key(key)
    procs = Processes()
    workers: list[Worker] = []
    rounds, recording_ids, problems = [], [], []
    try:
        with environment(JISR_RECORDING_KEY=str(key), JISR_RECORDINGS_DIR=str(vault_dir)):
            server = start_jisr(procs)
        session = jisr_session(server, 0)
        common = {
            "server": "jisr",
            "base": server.base,
            "session_id": session["session_id"],
            "part": "participant",
            "decode": False,
        }
        referrer = {
            **common,
            "name": "referrer",
            "token": session["tokens"]["referrer"],
            "publish": "audio+video",
            "expect": {},
        }
        specialist = {
            **common,
            "name": "specialist",
            "token": session["tokens"]["specialist"],
            "publish": "",
            "expect": {"audio": 1, "video": 1},
        }
        publisher = ControlWorker("publisher", clip, deadline)
        workers.append(publisher)
        subscriber = ControlWorker("subscriber", clip, deadline)
        workers.append(subscriber)
        publisher.call("add", [referrer])
        subscriber.call("add", [specialist])

        for n in range(args.rounds):
            measured = {}
            # a b, b a, a b, ...: a drift of the server's CPU over the run cancels out
            for case in ("forward", "record") if n % 2 == 0 else ("record", "forward"):
                log(f"round {n + 1}/{args.rounds}: {LABELS[case]} ...")
                if case == "record":
                    publisher.control("referrer", "recording.request")
                    subscriber.control("specialist", "recording.consent", consent=True)
                    state = publisher.call("await_recording", "referrer", "recording")
                    recording_ids.append(state["recording_id"])
                time.sleep(args.warmup)  # after a stop too: the recorder is gone by then
                measured[case] = jisr_window(server, publisher, subscriber, args.window)
                check_alive(server, procs, "jisr")
                if case == "record":
                    publisher.control("referrer", "recording.stop")
                    publisher.call("await_recording", "referrer", "stopped")
                problems += short_of(
                    measured[case]["rates"], f"Jisr {LABELS[case]}, round {n + 1}: specialist"
                )
            rounds.append(measured)
    finally:
        for worker in reversed(workers):
            worker.stop()
        procs.stop_all()  # the vault stays: it lives in ``work``
    recordings = [verify_jisr(key, vault_dir, rid, work) for rid in recording_ids]
    for found in recordings:
        problems += found["problems"]
    return {"rounds": rounds, "recordings": recordings, "problems": problems}


def run_stock(clip: Path, work: Path, args, deadline: float) -> dict:
    """(c): the same publisher, recorded by aiortc's MediaRecorder."""
    procs = Processes()
    workers: list[Worker] = []
    try:
        server = start_stock_recorder(procs, work / "stock")
        publisher = Worker("publisher", clip, deadline)
        workers.append(publisher)
        spec = {
            "name": "publisher",
            "server": "stock",
            "base": server.base,
            "slot": "a",
            "publish": "audio+video",
            "decode": False,
            "expect": {},
        }
        log("stock MediaRecorder ...")
        publisher.call("add", [spec])
        time.sleep(args.warmup)
        cpu = CpuWindow({"server": server.proc.pid, "publisher": publisher.pid})
        cpu.start()
        before = http_json("GET", server.base + "/stats", timeout=30)
        time.sleep(args.window)
        after = http_json("GET", server.base + "/stats", timeout=30)
        usage = cpu.stop()
        check_alive(server, procs, "stock-recorder")
        elapsed = after["t"] - before["t"]
        rates = {
            kind: (after["frames"].get(kind, 0) - before["frames"].get(kind, 0)) / elapsed
            for kind in NOMINAL
        }
        stopped = http_json("POST", server.base + "/stop", timeout=30)
    finally:
        for worker in workers:
            worker.stop()
        procs.stop_all()
    files = [inspect_media(Path(path), full_rate=False) for path in stopped["files"]]
    problems = [] if files else ["stock MediaRecorder wrote no file"]
    for found in files:
        problems += [f"stock recording: {p}" for p in found["problems"]]
    return {"cpu": usage, "rates": rates, "files": files, "problems": problems}


# -- proving the recordings ------------------------------------------------------------


def inspect_media(path: Path, *, full_rate: bool) -> dict:
    """What a media file holds, and a few of its video frames decoded; ``full_rate``:
    its video must also run at (nearly) the source's frame rate."""
    import av

    found: dict = {"path": str(path), "bytes": path.stat().st_size, "problems": []}
    spans: dict[str, list[float]] = {}
    video_times: list[float] = []
    counts: dict[str, int] = {}
    try:
        with av.open(str(path)) as container:
            found["format"] = container.format.name
            found["codecs"] = sorted(s.codec_context.name for s in container.streams)
            for packet in container.demux():
                if not packet.size or packet.pts is None:
                    continue
                kind = packet.stream.type
                counts[kind] = counts.get(kind, 0) + 1
                at = float(packet.pts * packet.time_base)
                if kind == "video":
                    video_times.append(at)
                span = spans.setdefault(kind, [at, at])
                span[0], span[1] = min(span[0], at), max(span[1], at)
        with av.open(str(path)) as container:
            decoded, size = 0, None
            if container.streams.video:
                for frame in container.decode(container.streams.video[0]):
                    decoded, size = decoded + 1, (frame.width, frame.height)
                    if decoded >= DECODE_FRAMES:
                        break
    except av.FFmpegError as exc:
        found["problems"].append(f"{path.name} does not open or decode: {exc}")
        return found
    video = counts.get("video", 0)
    first, last = spans.get("video", [0.0, 0.0])
    found.update(
        video_frames=video,
        audio_packets=counts.get("audio", 0),
        duration_s=round(
            max(e for _, e in spans.values()) - min(b for b, _ in spans.values()) if spans else 0.0,
            2,
        ),
        video_s=round(last - first, 2),
        video_gaps=[round(b - a, 2) for a, b in pairwise(video_times) if b - a > GAP_S],
        video_fps=round((video - 1) / (last - first), 1) if last > first else None,
        decoded=decoded,
        size=list(size) if size else None,
    )
    if decoded < DECODE_FRAMES:
        found["problems"].append(f"{path.name}: only {decoded} video frames decoded")
    elif size != (WIDTH, HEIGHT):
        found["problems"].append(f"{path.name}: decoded {size}, not {WIDTH}x{HEIGHT}")
    if full_rate and (found["video_fps"] is None or found["video_fps"] < MIN_FILE_SHARE * FPS):
        found["problems"].append(f"{path.name}: video at {found['video_fps']} fps")
    if not found["audio_packets"]:
        found["problems"].append(f"{path.name}: no audio")
    return found


def verify_jisr(key: Path, vault_dir: Path, recording_id: str, work: Path) -> dict:
    """Open the vault with the master key, export the recording, decode it."""
    from recordings.crypto import load_master_key
    from recordings.storage import FileStorage
    from recordings.vault import Vault

    try:
        vault = Vault(FileStorage(vault_dir), load_master_key(key))
        meta = vault.get(recording_id)
        path = vault.export(
            recording_id, work / f"{recording_id}.webm", audit=lambda *_a, **_k: None, by="bench"
        )
    except Exception as exc:  # noqa: BLE001 - a recording that cannot be read fails the run
        problem = f"Jisr recording {recording_id}: {type(exc).__name__}: {exc}"
        return {"recording_id": recording_id, "path": "", "problems": [problem]}
    found = inspect_media(path, full_rate=True)
    found.update(
        recording_id=recording_id,
        state=meta.get("state"),
        segments=meta.get("segments"),
        recorded_s=meta.get("duration_s"),
    )
    if meta.get("state") != "complete":
        found["problems"].append(f"Jisr recording {recording_id} is {meta.get('state')}")
    found["problems"] = [f"Jisr recording: {p}" for p in found["problems"]]
    return found


# -- report ----------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarise(jisr: dict, stock: dict, args) -> dict:
    forward = mean([r["forward"]["cpu"]["server"] for r in jisr["rounds"]])
    record = mean([r["record"]["cpu"]["server"] for r in jisr["rounds"]])
    stock_cpu = stock["cpu"]["server"]
    overhead = record - forward
    ratio = record / stock_cpu if stock_cpu > 0 else None
    took = stock["rates"]["video"]  # a MediaRecorder that falls behind does less work
    return {
        "forward_cpu_pct": round(forward, 2),
        "record_cpu_pct": round(record, 2),
        "stock_record_cpu_pct": round(stock_cpu, 2),
        "record_overhead_pts": round(overhead, 2),
        "ratio_to_stock": None if ratio is None else round(ratio, 4),
        "overhead_ratio_to_stock": round(overhead / stock_cpu, 4) if stock_cpu > 0 else None,
        "targets": {
            "record_overhead_pts": TARGET_OVERHEAD_PTS,
            "ratio_to_stock": round(TARGET_RATIO_TO_STOCK, 4),
        },
        "met": {
            "record_overhead_pts": overhead <= TARGET_OVERHEAD_PTS,
            "ratio_to_stock": ratio is not None and ratio <= TARGET_RATIO_TO_STOCK,
        },
        "rounds": [
            {
                "forward_cpu_pct": round(r["forward"]["cpu"]["server"], 2),
                "record_cpu_pct": round(r["record"]["cpu"]["server"], 2),
                "received_fps": {
                    case: round(r[case]["rates"].get("video", 0.0), 1)
                    for case in ("forward", "record")
                },
            }
            for r in jisr["rounds"]
        ],
        "stock_recorded_fps": round(took, 1),
        "stock_kept_up": took >= MIN_SHARE * FPS,
        "recordings": {
            "jisr": [strip(r) for r in jisr["recordings"]],
            "stock": [strip(r) for r in stock["files"]],
        },
        "window_s": args.window,
        "warmup_s": args.warmup,
    }


def strip(found: dict) -> dict:
    return {k: v for k, v in found.items() if k not in ("path", "problems")}


def cpu_row(name: str, cpu: dict, rates: dict, received: str) -> list[str]:
    video, audio = rates.get("video"), rates.get("audio")
    return [
        name,
        f"{cpu['server']:.2f}",
        f"{cpu['publisher']:.1f}",
        f"{cpu['subscriber']:.1f}" if "subscriber" in cpu else "-",
        f"{cpu['machine']:.0f}",
        "-" if video is None else f"{video:.1f}",
        "-" if audio is None else f"{audio:.1f}",
        received,
    ]


def report(info: dict, jisr: dict, stock: dict, summary: dict, args) -> None:
    print(machine_line(info))
    print(
        f"source: {WIDTH}x{HEIGHT} VP8 {FPS} fps + Opus, pre-encoded, one audio+video "
        f"participant; warm-up {args.warmup:g} s, window {args.window:g} s, "
        f"{args.rounds} round(s) of (a)+(b); CPU in % of one core\n"
    )
    rows = []
    for n, r in enumerate(jisr["rounds"], 1):
        suffix = f" #{n}" if args.rounds > 1 else ""
        rows.append(cpu_row(f"(a) Jisr forward{suffix}", **r["forward"], received="specialist"))
        rows.append(
            cpu_row(f"(b) Jisr forward + record{suffix}", **r["record"], received="specialist")
        )
    rows.append(
        cpu_row("(c) aiortc MediaRecorder", stock["cpu"], stock["rates"], received="recorder took")
    )
    headers = ["case", "server CPU %", "publisher CPU %", "subscriber CPU %", "machine busy %"]
    print(table([*headers, "video fps", "audio pkt/s", "counted by"], rows))
    print()
    verdict = {True: "met", False: "MISSED"}
    print(
        table(
            ["figure", "value", "target", ""],
            [
                ["(a) forward, server CPU %", summary["forward_cpu_pct"], "", ""],
                ["(b) forward + record, server CPU %", summary["record_cpu_pct"], "", ""],
                ["(c) MediaRecorder, server CPU %", summary["stock_record_cpu_pct"], "", ""],
                [
                    "recording overhead (b - a), points",
                    summary["record_overhead_pts"],
                    f"<= {TARGET_OVERHEAD_PTS:g}",
                    verdict[summary["met"]["record_overhead_pts"]],
                ],
                [
                    "(b) / (c)",
                    summary["ratio_to_stock"],
                    f"<= 1/{round(1 / TARGET_RATIO_TO_STOCK)}",
                    verdict[summary["met"]["ratio_to_stock"]],
                ],
                ["(b - a) / (c), for information", summary["overhead_ratio_to_stock"], "", ""],
            ],
        )
    )
    if not summary["stock_kept_up"]:
        print(
            f"note: MediaRecorder fell behind (took {summary['stock_recorded_fps']} video "
            f"frames/s of {FPS}): it did less than the whole work, so (c) is a lower bound "
            "and (b) / (c) flatters it"
        )
    print()
    print("recordings, opened after the run:")
    for found in jisr["recordings"]:
        print(
            f"  Jisr {found['recording_id']}: vault state {found.get('state')}, "
            f"{found.get('segments')} segment(s), exported {describe(found)}"
        )
    for found in stock["files"]:
        print(f"  MediaRecorder {Path(found['path']).name}: {describe(found)}")


def describe(found: dict) -> str:
    if "video_frames" not in found:
        return "UNREADABLE"
    size = "x".join(map(str, found["size"])) if found["size"] else "-"
    return (
        f"{found.get('format')} ({', '.join(found.get('codecs', []))}), "
        f"{found['bytes'] / 1e6:.2f} MB, {found['duration_s']:.1f} s, "
        f"{found['video_frames']} video frames over {found['video_s']:.1f} s "
        f"({found['video_fps']} fps; pauses > {GAP_S:g} s: {found['video_gaps'] or 'none'}), "
        f"{found['audio_packets']} audio packets, {found['decoded']} frames decoded at {size}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Jisr recording CPU against forwarding alone and aiortc's MediaRecorder"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, last line")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of (a) and (b) windows")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the recordings, print where")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    on_sigterm_exit()
    time_bound(args.timeout)
    deadline = time.time() + args.timeout + 30
    info = machine()
    clip = clip_path()
    work = Path(tempfile.mkdtemp(prefix="jisr-bench-recording-"))
    try:
        jisr = run_jisr(clip, work, args, deadline)
        stock = run_stock(clip, work, args, deadline)
    finally:
        if args.keep:
            log(f"recordings kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(jisr, stock, args)
    problems = jisr["problems"] + stock["problems"]
    for problem in problems:
        log("FAILED: " + problem)
    if args.json:
        print(json.dumps({**summary, "machine": info, "problems": problems}))
    else:
        report(info, jisr, stock, summary, args)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
