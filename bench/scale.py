"""The forwarding benchmark's scale case: 1, 10 and 40 concurrent video streams, each
one light publisher to one subscriber (``bench.paced``; publishers in one load
generator process, subscribers in another), through the bare relay (the floor),
Jisr and Janus in turn. The figure is each middle's CPU per stream over the
window: how the cost grows with load; then, the publishers paused, its CPU with the
same peers and no media (``idle_pct``): what holding them costs apart from packets.
The middles take turns, three rounds by default (``--rounds``), and each figure is
the median of its rounds: these machines' speed drifts by two or three times in an
hour, and a single round compared middles measured minutes apart.
"""

from __future__ import annotations

import statistics
import sys
import time

from . import janus
from .common import (
    FPS,
    CpuWindow,
    Processes,
    Server,
    Worker,
    free_port,
    jisr_session,
    log,
    start_jisr,
    start_stock,
)

STEPS = (1, 10, 40)
MIN_SHARE = 0.90  # of the frames sent, for every subscriber
ADD_TIMEOUT_S = 120  # connecting dozens of peers at once on a busy machine
IDLE_SETTLE_S = 2.0  # after the publishers pause, before the idle window
# A step's figures of one middle, each the median of its rounds.
FIGURES = ("cpu_pct", "per_stream_pct", "idle_pct", "idle_per_stream_pct", "generators_pct",
           "machine_pct")  # fmt: skip


def start_floor(procs: Processes) -> Server:
    port = free_port()
    proc = procs.start("floor", [sys.executable, "-m", "bench.floor", "--port", str(port)])
    deadline = time.monotonic() + 10
    while "ready" not in procs.log_tail("floor"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the floor relay did not start:\n{procs.log_tail('floor')}")
        time.sleep(0.05)  # polling its first line
    return Server("floor", f"udp://127.0.0.1:{port}", proc)


def start_middle(procs: Processes, kind: str, streams: int) -> Server:
    """Any middle of the forwarding benchmark: the floor, the stock relay, Jisr or Janus
    (with a room for each of ``streams``)."""
    if kind == "floor":
        return start_floor(procs)
    if kind == "stock":
        return start_stock(procs)
    if kind == "jisr":
        return start_jisr(procs)
    server = janus.start_janus(procs, free_port())
    janus.create_rooms(server.base, streams)
    return server


def specs(kind: str, server: Server, streams: int) -> tuple[list[dict], list[dict]]:
    """One light publisher and one subscriber per stream."""
    publishers, subscribers = [], []
    for n in range(streams):
        common = {"server": kind, "base": server.base, "stream": n, "decode": False}
        publishers.append({**common, "name": f"pub{n}", "publish": "video", "paced": True,
                           "expect": {}})  # fmt: skip
        subscribers.append({**common, "name": f"sub{n}", "publish": "", "expect": {"video": 1}})
        if kind == "jisr":
            session = jisr_session(server, n)
            publishers[-1] |= {"part": "participant", "token": session["tokens"]["referrer"],
                               "session_id": session["session_id"]}  # fmt: skip
            subscribers[-1] |= {"part": "observer", "token": session["tokens"]["observer"],
                                "session_id": session["session_id"]}  # fmt: skip
    return publishers, subscribers


def video_rates(before: dict, after: dict) -> list[float]:
    """Frames per second each subscriber received over the window."""
    elapsed = after["t"] - before["t"]
    rates = []
    for name, streams in after["clients"].items():
        earlier = before["clients"].get(name, {})
        rates.append(
            max(
                (
                    (s["frames"] - earlier.get(k, {}).get("frames", 0)) / elapsed
                    for k, s in streams.items()
                    if s["kind"] == "video"
                ),
                default=0.0,
            )  # fmt: skip
        )
    return rates


def run_step(kind: str, streams: int, clip, args, deadline: float) -> dict:
    procs = Processes()
    workers: list[Worker] = []
    try:
        server = start_middle(procs, kind, streams)
        publisher_specs, subscriber_specs = specs(kind, server, streams)
        address = janus.ADDRESS if kind == "janus" else "127.0.0.1"
        publishers = Worker("publishers", clip, deadline, address)
        subscribers = Worker("subscribers", clip, deadline, address)
        workers = [subscribers, publishers]
        publishers.call("add", publisher_specs, timeout=ADD_TIMEOUT_S)
        subscribers.call("add", subscriber_specs, timeout=ADD_TIMEOUT_S)
        time.sleep(args.warmup)
        pids = {"server": server.proc.pid, "publishers": publishers.pid,
                "subscribers": subscribers.pid}  # fmt: skip
        cpu = CpuWindow(pids)
        cpu.start()
        before = subscribers.call("snap")
        time.sleep(args.window)
        after = subscribers.call("snap")
        usage = cpu.stop()
        # The same peers with no media: what the middle costs only for holding them
        # (ICE consent, RTCP, timers), apart from what each packet costs.
        publishers.call("pause")
        time.sleep(IDLE_SETTLE_S)
        idle = CpuWindow({"server": server.proc.pid})
        idle.start()
        time.sleep(args.window / 2)
        idle_usage = idle.stop()
        if server.proc.poll() is not None:
            raise RuntimeError(f"{kind} died:\n{procs.log_tail(kind)}")
    finally:
        for worker in workers:
            worker.stop()
        procs.stop_all()
    rates = video_rates(before, after)
    short = [r for r in rates if r < MIN_SHARE * FPS]
    problems = [] if len(rates) == streams and not short else [
        f"{kind} at {streams} streams: {len(short)} of {len(rates)} subscribers below "
        f"{MIN_SHARE * FPS:.0f} fps (lowest {min(rates, default=0):.1f})"
    ]  # fmt: skip
    return {
        "cpu_pct": round(usage["server"], 2),
        "per_stream_pct": round(usage["server"] / streams, 3),
        "idle_pct": round(idle_usage["server"], 2),
        "idle_per_stream_pct": round(idle_usage["server"] / streams, 3),
        "generators_pct": round(usage["publishers"] + usage["subscribers"], 1),
        "machine_pct": round(usage["machine"], 1),
        "min_fps": round(min(rates, default=0.0), 1),
        "problems": problems,
    }


def run_scale(middles: tuple[str, ...], clip, args, deadline: float) -> list[dict]:
    """Per step: each middle's figures, and Jisr's per-stream CPU over Janus's and over
    the floor's. The middles run in turn ``args.rounds`` times: each figure is the
    median of its rounds, and each ratio the median of the rounds' own ratios (the
    middles of one round run a minute or two apart; the machine's speed drifts more
    than that between rounds)."""
    steps = []
    for streams in args.scale_steps:
        rounds: list[dict[str, dict]] = []
        for number in range(1, args.rounds + 1):
            results = {}
            for kind in middles:
                log(f"scale: {streams} streams through {kind}, round {number} ...")
                results[kind] = run_step(kind, streams, clip, args, deadline)
            rounds.append(results)
        step: dict = {"streams": streams}
        for kind in middles:
            step[kind] = median_figures([results[kind] for results in rounds])
        for kind in ("janus", "floor"):
            ratios = [
                results["jisr"]["per_stream_pct"] / results[kind]["per_stream_pct"]
                for results in rounds
                if results.get(kind, {}).get("per_stream_pct")
            ]  # fmt: skip
            step[f"ratio_{kind}"] = round(statistics.median(ratios), 3) if ratios else None
            step[f"ratio_{kind}_rounds"] = [round(ratio, 3) for ratio in ratios]
        steps.append(step)
    return steps


def median_figures(rounds: list[dict]) -> dict:
    """One middle's figures at one step over its rounds: the median of each, the lowest
    frame rate any subscriber got, each round's CPU per stream, and every problem."""
    figures: dict = {key: round(statistics.median(r[key] for r in rounds), 3) for key in FIGURES}
    figures["min_fps"] = min(r["min_fps"] for r in rounds)
    figures["per_stream_rounds"] = [r["per_stream_pct"] for r in rounds]
    figures["problems"] = [problem for r in rounds for problem in r["problems"]]
    return figures
