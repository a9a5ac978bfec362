"""Server CPU to forward media: Jisr's RTP forwarding against aiortc's stock
MediaRelay (decode once, encode per subscriber), same clients, same source.

    python -m bench.forwarding [--json] [--warmup 3] [--window 10] [--scale-only]
                               [--scale-steps 1,10,40] [--rounds 3]

Cases: one VP8 video stream to one subscriber; one audio+video publisher to two
subscribers (the second of which decodes, proving the picture); one VP8 stream to
two subscribers; and the same publisher in three simulcast layers (the clip, and
clips of half and a quarter its size) to two subscribers, one of whose tiles asks
for the smallest layer. Each case runs against the stock server, then Jisr (the
simulcast case against Jisr only: the stock relay has no simulcast, so its figure is
compared with Jisr's single-layer case, target within 1.3 times); the figure is the
server process's CPU (% of one core) over the measuring window, and a case fails if
any subscriber got less than 90 % of the frames sent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import isolation, janus
from .common import (
    AUDIO_PACKETS_PER_S,
    FPS,
    HEIGHT,
    WIDTH,
    CpuWindow,
    Processes,
    Worker,
    clip_path,
    jisr_session,
    log,
    machine,
    machine_line,
    on_sigterm_exit,
    simulcast_clip_paths,
    table,
    time_bound,
)
from .scale import STEPS, run_scale, start_middle

TARGET_RATIO = 0.08
SIMULCAST_TARGET = 1.3  # Jisr's CPU with three layers in, against one layer in
MIN_SHARE = 0.90  # of the frames sent, for every subscriber
NOMINAL = {"video": FPS, "audio": AUDIO_PACKETS_PER_S}

CASES = [
    {
        "name": "video_1_subscriber",
        "publish": "video",
        "subscribers": [False],
        "expect": {"video": 1},
    },
    {
        "name": "av_2_subscribers",
        "publish": "audio+video",
        "subscribers": [False, True],
        "expect": {"audio": 1, "video": 1},
    },
    {
        "name": "video_2_subscribers",
        "publish": "video",
        "subscribers": [False, False],
        "expect": {"video": 1},
    },
    {
        "name": "simulcast_2_subscribers",
        "publish": "simulcast",
        "subscribers": [False, False],
        "views": [0, HEIGHT // 4],  # the second tile: the smallest layer
        "expect": {"video": 1},
        "servers": ("jisr",),
        "baseline": "video_2_subscribers",
    },
]  # subscribers: decode or not, one entry each


def client_specs(case: dict, server, session: dict | None) -> tuple[dict, list[dict]]:
    common = {"server": server.name, "base": server.base, "slot": "a", "stream": 0}
    publisher = {
        **common,
        "name": "publisher",
        "publish": case["publish"],
        "decode": False,
        "expect": {},
    }
    subscribers = [
        {
            **common,
            "name": f"subscriber{i}",
            "publish": "",
            "decode": decode,
            "expect": case["expect"],
        }
        for i, decode in enumerate(case["subscribers"])
    ]
    if case["publish"] == "simulcast":
        publisher["layers"] = simulcast_clip_paths()
    for spec, view in zip(subscribers, case.get("views", []), strict=False):
        spec["view"] = view
    if session is not None:
        publisher.update(part="participant", token=session["tokens"]["referrer"])
        for spec in subscribers:
            spec.update(part="observer", token=session["tokens"]["observer"])
        for spec in [publisher, *subscribers]:
            spec["session_id"] = session["session_id"]
    return publisher, subscribers


def rates(before: dict, after: dict) -> dict[str, dict[str, dict]]:
    """Frames per second of every stream each client received over the window."""
    elapsed = after["t"] - before["t"]
    result = {}
    for name, streams in after["clients"].items():
        earlier = before["clients"].get(name, {})
        result[name] = {
            key: {
                "kind": s["kind"],
                "rate": (s["frames"] - earlier.get(key, {}).get("frames", 0)) / elapsed,
                "kbps": (s["octets"] - earlier.get(key, {}).get("octets", 0)) * 8 / elapsed / 1000,
                "size": s["size"],
            }
            for key, s in streams.items()
        }
    return result


def expected_streams(case: dict, received: dict, kind: str) -> dict[str, list[dict]]:
    """Per client, its best streams of this kind, as many as the case expects (an
    observer's m-lines for the absent specialist carry nothing, and are left out)."""
    wanted = case["expect"].get(kind, 0)
    return {
        name: sorted((s for s in streams.values() if s["kind"] == kind), key=lambda s: -s["rate"])[
            :wanted
        ]
        for name, streams in received.items()
    }


def check_delivery(case: dict, server_name: str, received: dict) -> list[str]:
    problems = []
    for kind, wanted in case["expect"].items():
        for name, got in expected_streams(case, received, kind).items():
            floor = MIN_SHARE * NOMINAL[kind]
            if len(got) < wanted or any(s["rate"] < floor for s in got):
                shown = ", ".join(f"{s['rate']:.1f}/s" for s in got) or "nothing"
                problems.append(
                    f"{server_name} {case['name']}: {name} got {kind} at {shown}, "
                    f"wanted {wanted} stream(s) at >= {floor:.0f}/s"
                )
            for s in got:
                if s["size"] is not None and tuple(s["size"]) != (WIDTH, HEIGHT):
                    problems.append(f"{server_name}: {name} decoded {s['size']} frames")
    return problems


def run_one(case: dict, server_kind: str, clip, args, deadline: float) -> dict:
    procs = Processes()
    workers: list[Worker] = []
    try:
        server = start_middle(procs, server_kind, streams=1)
        session = jisr_session(server, 0) if server_kind == "jisr" else None
        publisher_spec, subscriber_specs = client_specs(case, server, session)
        address = janus.ADDRESS if server_kind == "janus" else "127.0.0.1"
        publisher = Worker("publisher", clip, deadline, address)
        subscribers = Worker("subscribers", clip, deadline, address)
        workers = [subscribers, publisher]
        publisher.call("add", [publisher_spec])  # first: the stock server needs its tracks
        subscribers.call("add", subscriber_specs)
        time.sleep(args.warmup)
        cpu = CpuWindow(
            {"server": server.proc.pid, "publisher": publisher.pid, "subscribers": subscribers.pid}
        )
        cpu.start()
        before = subscribers.call("snap")
        time.sleep(args.window)
        after = subscribers.call("snap")
        usage = cpu.stop()
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server_kind} server died:\n{procs.log_tail(server_kind)}")
        received = rates(before, after)
        return {
            "cpu": usage,
            "received": received,
            "problems": check_delivery(case, server_kind, received),
        }
    finally:
        for worker in workers:
            worker.stop()
        procs.stop_all()


def summarise(case: dict, received: dict, kind: str) -> float | None:
    values = [s["rate"] for got in expected_streams(case, received, kind).values() for s in got]
    return min(values) if values else None


def table_row(case: dict, server_kind: str, result: dict) -> list[str]:
    cpu, received = result["cpu"], result["received"]
    video, audio = summarise(case, received, "video"), summarise(case, received, "audio")
    sizes = {tuple(s["size"]) for got in received.values() for s in got.values() if s["size"]}
    return [
        case["name"],
        server_kind,
        f"{cpu['server']:.1f}",
        f"{cpu['publisher']:.1f}",
        f"{cpu['subscribers']:.1f}",
        f"{cpu['machine']:.0f}",
        "-" if video is None else f"{video:.1f}",
        "-" if audio is None else f"{audio:.1f}",
        ",".join(f"{w}x{h}" for w, h in sorted(sizes)) or "-",
    ]


def verdict(case: dict) -> str:
    if not case["valid"]:
        return "void: frames lost"
    if case.get("vs_baseline") is not None:
        return "met" if case["vs_baseline"] <= SIMULCAST_TARGET else "MISSED"
    return "met" if case["ratio"] is not None and case["ratio"] <= TARGET_RATIO else "MISSED"


def selected_cases(names: list[str] | None) -> list[dict]:
    """The cases asked for (all by default), each after the case it is compared with."""
    wanted = {c["name"] for c in CASES if not names or c["name"] in names}
    wanted |= {c["baseline"] for c in CASES if c["name"] in wanted and c.get("baseline")}
    return [c for c in CASES if c["name"] in wanted]


def case_summary(case: dict, result: dict, done: list[dict]) -> dict:
    jisr = result["jisr"]["cpu"]["server"]
    stock = result["stock"]["cpu"]["server"] if "stock" in result else None
    janus_cpu = result["janus"]["cpu"]["server"] if "janus" in result else None
    summary = {
        "name": case["name"],
        "stock_cpu_pct": None if stock is None else round(stock, 2),
        "jisr_cpu_pct": round(jisr, 2),
        "ratio": round(jisr / stock, 4) if stock else None,
        "janus_cpu_pct": None if janus_cpu is None else round(janus_cpu, 2),
        "ratio_janus": round(jisr / janus_cpu, 3) if janus_cpu else None,
        # A server that dropped frames also spent less CPU: no fair ratio then.
        "valid": not any(r["problems"] for r in result.values()),
        "publisher_cpu_pct": round(result["jisr"]["cpu"]["publisher"], 2),
        "min_video_fps": {
            k: round(summarise(case, r["received"], "video") or 0, 1) for k, r in result.items()
        },
        "video_kbps": {
            name: [round(s["kbps"]) for s in got]
            for name, got in expected_streams(case, result["jisr"]["received"], "video").items()
            if got
        },
    }
    baseline = next((c for c in done if c["name"] == case.get("baseline")), None)
    if baseline is not None and baseline["jisr_cpu_pct"]:
        summary["baseline"] = baseline["name"]
        summary["vs_baseline"] = round(jisr / baseline["jisr_cpu_pct"], 3)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description="Jisr forwarding CPU against aiortc's stock relay")
    parser.add_argument("--json", action="store_true", help="print one JSON object, last line")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on the whole run")
    parser.add_argument(
        "--scale-steps",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=list(STEPS),
        help="concurrent streams of the scale case, comma-separated (empty: none)",
    )
    parser.add_argument("--scale-only", action="store_true", help="only the scale case")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of the middles at each scale step (median)"
    )
    parser.add_argument(
        "--case",
        action="append",
        choices=[c["name"] for c in CASES],
        help="run only this case (repeat for several)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    # Janus needs a namespace of its own (no candidates on loopback): this re-runs the
    # benchmark inside one when it can, and says why not when it cannot.
    janus_missing = janus.ensure_installed() or isolation.enter_namespace("bench.forwarding")
    if janus_missing:
        log(f"janus: not measured: {janus_missing}")
    servers = ("stock", "jisr") if janus_missing else ("stock", "jisr", "janus")
    on_sigterm_exit()
    time_bound(args.timeout)
    deadline = time.time() + args.timeout + 30
    info = machine()
    clip = clip_path()

    rows, cases, problems = [], [], []
    chosen = selected_cases(args.case)
    if args.scale_only:
        chosen = []
    for case in chosen:
        result = {}
        for server_kind in [k for k in servers if k in case.get("servers", servers)]:
            log(f"{case['name']}: {server_kind} ...")
            result[server_kind] = run_one(case, server_kind, clip, args, deadline)
            problems += result[server_kind]["problems"]
            rows.append(table_row(case, server_kind, result[server_kind]))
        cases.append(case_summary(case, result, cases))

    middles = ("floor", *servers[1:])  # the floor in the stock server's place
    scale = run_scale(middles, clip, args, deadline) if args.scale_steps else []
    problems += [p for step in scale for kind in middles for p in step[kind]["problems"]]

    for problem in problems:
        log("FAILED: " + problem)
    if args.json:
        print(
            json.dumps(
                {
                    "cases": cases,
                    "scale": scale,
                    "machine": info,
                    "window_s": args.window,
                    "target_ratio": TARGET_RATIO,
                    "janus": janus_missing or "measured",
                    "simulcast_target": SIMULCAST_TARGET,
                    "problems": problems,
                }
            )
        )
    else:
        print(machine_line(info))
        print(
            f"source: {WIDTH}x{HEIGHT} VP8 {FPS} fps + Opus, pre-encoded; warm-up "
            f"{args.warmup:.0f} s, window {args.window:.0f} s; CPU in % of one core\n"
        )
        headers = [
            "case",
            "server",
            "server CPU %",
            "publisher CPU %",
            "subscribers CPU %",
            "machine busy %",
            "min video fps",
            "min audio pkt/s",
            "decoded",
        ]
        print(table(headers, rows))
        print()
        print(
            table(
                [
                    "case",
                    "stock CPU %",
                    "Jisr CPU %",
                    "Janus CPU %",
                    "Jisr/stock",
                    f"target <= {TARGET_RATIO} (simulcast: <= {SIMULCAST_TARGET} x single layer)",
                    "Jisr/Janus",
                    "Jisr / Jisr single layer",
                    "video kbit/s per subscriber",
                ],  # fmt: skip
                [
                    [
                        c["name"],
                        "-" if c["stock_cpu_pct"] is None else c["stock_cpu_pct"],
                        c["jisr_cpu_pct"],
                        "-" if c["janus_cpu_pct"] is None else c["janus_cpu_pct"],
                        "-" if c["ratio"] is None else c["ratio"],
                        verdict(c),
                        "-" if c["ratio_janus"] is None else c["ratio_janus"],
                        c.get("vs_baseline", "-"),
                        " / ".join(f"{k}: {v}" for k, v in c["video_kbps"].items()),
                    ]
                    for c in cases
                ],
            )
        )  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
