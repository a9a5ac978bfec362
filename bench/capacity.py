"""How many concurrent consults one Jisr server holds at full frame rate.

    python -m bench.capacity [--json] [--max-consults 40] [--step 2] [--time-limit 900]

Each consult: referrer and specialist publish the pre-encoded audio+video source and
receive each other; a supervisor observes both. Subscribers count frames without
decoding, except the specialist, who decodes (one real picture per consult). The
number of consults rises step by step; after each step, a warm-up and a measuring
window, every received video stream must still run at >= 29 fps. The load
generators are worker processes (one asyncio loop each); the server (``jisr serve``
with its default ``--workers``, and Redis when that is more than one) is measured as
its whole process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import isolation
from .common import (
    AUDIO_PACKETS_PER_S,
    FPS,
    HEIGHT,
    WIDTH,
    CpuWindow,
    Processes,
    Worker,
    clip_path,
    jisr_has_workers,
    jisr_session,
    log,
    machine,
    machine_line,
    on_sigterm_exit,
    start_jisr,
    start_redis,
    table,
    time_bound,
)

EXPECT = {
    "referrer": {"audio": 1, "video": 1},
    "specialist": {"audio": 1, "video": 1},
    "observer": {"audio": 2, "video": 2},
}


def consult_specs(server, n: int) -> list[dict]:
    session = jisr_session(server, n)
    common = {"server": "jisr", "base": server.base, "session_id": session["session_id"]}
    return [
        {
            **common,
            "name": f"c{n}-{who}",
            "token": session["tokens"][who],
            "expect": EXPECT[who],
            "part": "observer" if who == "observer" else "participant",
            "publish": "" if who == "observer" else "audio+video",
            "decode": who == "specialist",
        }
        for who in ("referrer", "specialist", "observer")
    ]


def stream_rates(before: dict, after: dict) -> list[tuple[str, str, float]]:
    """(client, kind, frames per second) for every stream each client must receive;
    a stream that never arrived counts as 0."""
    elapsed = after["t"] - before["t"]
    found = []
    for name, streams in after["clients"].items():
        earlier = before["clients"].get(name, {})
        expect = EXPECT[name.split("-", 1)[1]]
        for kind, wanted in expect.items():
            rates = sorted(
                (
                    (s["frames"] - earlier.get(key, {}).get("frames", 0)) / elapsed
                    for key, s in streams.items()
                    if s["kind"] == kind
                ),
                reverse=True,
            )[:wanted]
            rates += [0.0] * (wanted - len(rates))
            found += [(name, kind, r) for r in rates]
    return found


def measure(server, generators: list[Worker], args) -> dict:
    time.sleep(args.warmup)
    cpu = CpuWindow({"server": server.proc.pid, **{g.name: g.pid for g in generators}})
    cpu.start()
    for g in generators:
        g.send("snap")
    before = [g.reply(30) for g in generators]
    time.sleep(args.window)
    for g in generators:
        g.send("snap")
    after = [g.reply(30) for g in generators]
    usage = cpu.stop()
    rates = [r for b, a in zip(before, after, strict=True) for r in stream_rates(b, a)]
    video = [r for r in rates if r[1] == "video"]
    audio = [r for r in rates if r[1] == "audio"]
    slowest = min(video, key=lambda r: r[2])
    ours = usage["server"] + sum(usage[g.name] for g in generators)
    below = [
        f"{name} {kind} {rate:.1f}/s"
        for name, kind, rate in rates
        if rate < (args.min_fps if kind == "video" else 0.9 * AUDIO_PACKETS_PER_S)
    ]
    return {
        "server_cpu_pct": usage["server"],
        "generators_cpu_pct": sum(usage[g.name] for g in generators),
        "machine_busy_pct": usage["machine"],
        # CPU of everything else on the machine (other users' jobs), % of one core
        "other_cpu_pct": max(0.0, usage["machine"] * (os.cpu_count() or 1) - ours),
        "busiest_generator_pct": max(usage[g.name] for g in generators),
        "min_video_fps": slowest[2],
        "slowest": slowest[0],
        "min_audio_pps": min(r[2] for r in audio),
        "streams": len(rates),
        "below": below[:12],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="concurrent consults one Jisr server holds")
    parser.add_argument("--json", action="store_true", help="print one JSON object, last line")
    parser.add_argument("--max-consults", type=int, default=40, help="stop there at most")
    parser.add_argument("--start", type=int, default=1, help="consults in the first step")
    parser.add_argument("--step", type=int, default=2, help="consults added per step")
    parser.add_argument("--min-fps", type=float, default=29.0, help="every video stream")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per step")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--remeasure", type=int, default=1, choices=(0, 1), help="second window on a miss"
    )
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds, whole run")
    parser.add_argument(
        "--shared-machine",
        action="store_true",
        help="no namespace for the generators and no pinning (as before)",
    )
    args = parser.parse_args()
    # The generators in a namespace of their own, the server on one core and the
    # generators on the other: the server's figure is then its own.
    isolated = "not asked" if args.shared_machine else isolation.enter_namespace("bench.capacity")
    pins = None if args.shared_machine else isolation.pinning()
    if isolated:
        log(f"generators share the server's namespace: {isolated}")
    on_sigterm_exit()
    time_bound(args.time_limit + 120)  # hard stop; the steps themselves stop at the limit
    started = time.monotonic()
    info = machine()
    clip = clip_path()

    procs = Processes()
    generators: list[Worker] = []
    steps: list[dict] = []
    held, stopped = 0, "max_consults"
    try:
        server_cpus, generator_cpus = pins or (None, None)
        netns = None if isolated else isolation.GeneratorNamespace()
        host = "127.0.0.1" if netns is None else isolation.SERVER_ADDRESS
        address = "127.0.0.1" if netns is None else isolation.GENERATOR_ADDRESS
        several = jisr_has_workers()
        redis_url = start_redis(procs, server_cpus) if several else None
        server = start_jisr(procs, redis_url, host, server_cpus)
        log(f"jisr: {'default --workers, Redis ' + redis_url if several else 'one process'}")
        deadline = time.time() + args.time_limit + 180
        generators = [
            Worker(
                f"generator{i}",
                clip,
                deadline,
                address,
                netns.path if netns else None,
                generator_cpus,
            )  # fmt: skip
            for i in range(args.generators)
        ]
        consults, target = 0, args.start
        while target <= args.max_consults:
            step_started = time.monotonic()
            batches: dict[int, list[dict]] = {}
            for n in range(consults, target):
                batches.setdefault(n % len(generators), []).extend(consult_specs(server, n))
            for i, specs in batches.items():
                generators[i].send("add", specs)
            try:
                for i in batches:
                    generators[i].reply(90)
            except RuntimeError as exc:
                steps.append({"consults": target, "error": str(exc)})
                stopped = "setup_failed"
                break
            consults = target
            result = {"consults": consults, **measure(server, generators, args)}
            if result["min_video_fps"] < args.min_fps and args.remeasure:
                # Other jobs on the machine cause short dips: a second window decides.
                log(f"{consults:3d} consults: min {result['min_video_fps']:.1f} fps; again")
                result = {"consults": consults, **measure(server, generators, args)}
            steps.append(result)
            log(
                f"{consults:3d} consults: server {result['server_cpu_pct']:.1f} %, "
                f"min {result['min_video_fps']:.1f} fps, machine {result['machine_busy_pct']:.0f} %"
            )
            if server.proc.poll() is not None:
                raise RuntimeError("the Jisr server died:\n" + procs.log_tail("jisr"))
            if result["below"]:
                log("  below the floor: " + "; ".join(result["below"]))
            if result["min_video_fps"] < args.min_fps:
                stopped = "below_min_fps"
                break
            held = consults
            step_took = time.monotonic() - step_started
            if time.monotonic() - started + 1.5 * step_took > args.time_limit:
                stopped = "time_limit"
                break
            target += args.step
    finally:
        for g in generators:
            g.stop()
        procs.stop_all()

    last = next((s for s in steps if s["consults"] == held), None)
    per_consult = last["server_cpu_pct"] / held if last else None
    saturated = any(s.get("machine_busy_pct", 0) >= 90 for s in steps)
    summary = {
        "consults_held": held,
        "server_cpu_pct_per_consult": round(per_consult, 2) if per_consult else None,
        "cores": info["cores"],
        "stopped": stopped,
        "machine_saturated": saturated,
        "isolation": {
            "generators_namespace": isolated or "own",
            "server_cpus": sorted(pins[0]) if pins else None,
            "generator_cpus": sorted(pins[1]) if pins else None,
        },
        "machine": info,
        "steps": [
            {k: round(v, 2) if isinstance(v, float) else v for k, v in s.items()} for s in steps
        ],
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(machine_line(info))
    print(
        f"per consult: 2 publishers of {WIDTH}x{HEIGHT} VP8 {FPS} fps + Opus (pre-encoded), "
        f"1 observer; {args.generators} generator processes; window {args.window:.0f} s\n"
    )
    rows = []
    for s in steps:
        if "error" in s:
            rows.append([s["consults"], "setup failed: " + s["error"][:70]])
            continue
        rows.append(
            [
                s["consults"],
                f"{s['server_cpu_pct']:.1f}",
                f"{s['generators_cpu_pct']:.0f} (max {s['busiest_generator_pct']:.0f})",
                f"{s['other_cpu_pct']:.0f}",
                f"{s['machine_busy_pct']:.0f}",
                f"{s['min_video_fps']:.1f}",
                f"{s['min_audio_pps']:.1f}",
                s["slowest"],
            ]
        )
    headers = [
        "consults",
        "server CPU %",
        "generators CPU %",
        "other jobs CPU %",
        "machine busy %",
        "min video fps",
        f"min audio/s (of {AUDIO_PACKETS_PER_S})",
        "slowest",
    ]
    print(table(headers, rows))
    print(
        f"\nheld {held} consults ({stopped}); server CPU per consult: "
        f"{summary['server_cpu_pct_per_consult']} % of one core; {info['cores']} cores"
    )
    if saturated:
        print("note: the machine was saturated (>= 90 % busy): the load generators share it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
