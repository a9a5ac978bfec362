"""One user floods, everyone else joins: ``python -m bench.flood [--rate 2000] [--json]``.

Starts a real ``jisr serve`` (one node, in-process store, default rate limits) and
measures the join latency of ``--clients`` other users (joins spread over
``--spread-s``, as in ``bench.signaling``) side by side in one run: with nobody
flooding (the baseline), and while one signed-in user sends ``--rate`` messages a
second on its WebSocket from another process. Rounds alternate so drift cancels.
The target: the flooder is limited (its messages answered ``rate_limited``) and
the others' join p99 stays within 20 % of the baseline's.

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import WSMsgType

from .common import log
from .signaling import (
    Target,
    machine,
    percentile,
    plan_sessions,
    run_clients,
    start_jisr,
    stop,
)


async def _flood(url: str, token: str, rate: int, pipe: Connection) -> dict:
    """Send ``rate`` pings a second until told to stop; a socket the server closes is
    opened again at once, as a determined flooder would."""
    import aiohttp

    counts = {"sent": 0, "pong": 0, "rate_limited": 0, "other": 0, "cut_off": 0}
    started, burst = time.perf_counter(), max(1, rate // 200)  # a burst every 5 ms
    async with aiohttp.ClientSession() as http:
        pipe.send("flooding")
        while not pipe.poll():
            async with http.ws_connect(url) as ws:
                await ws.send_json({"type": "auth", "token": token, "ref": "auth"})
                reader = asyncio.ensure_future(_count_replies(ws, counts))
                while not pipe.poll() and not ws.closed:
                    due = counts["sent"] / rate
                    await asyncio.sleep(max(0.0, started + due - time.perf_counter()))
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        for _ in range(burst):
                            await ws.send_str('{"type":"ping"}')
                    counts["sent"] += burst
                await asyncio.wait([reader], timeout=0.5)  # the last replies
                counts["cut_off"] += ws.close_code == 1008
    counts["seconds"] = round(time.perf_counter() - started, 2)
    return counts


async def _count_replies(ws, counts: dict) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            break
        data = json.loads(msg.data)
        for m in data if isinstance(data, list) else [data]:
            kind = m.get("code") if m["type"] == "error" else m["type"]
            counts[kind if kind in counts else "other"] += 1


def flooder_main(url: str, token: str, rate: int, pipe: Connection) -> None:
    pipe.send(asyncio.run(_flood(url, token, rate, pipe)))


def flooded_run(target: Target, args: argparse.Namespace) -> tuple[dict, dict]:
    from signaling.auth import mint_token
    from signaling.settings import load_settings

    settings = load_settings(jwt_secret=target.secret)
    token = mint_token(settings, role="specialist", sub="flooder", specialties=["cardiology"])
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=flooder_main, args=(target.ws_url, token, args.rate, child))
    process.start()
    if not parent.poll(30) or parent.recv() != "flooding":
        raise SystemExit("the flooder did not start")
    plan = plan_sessions(target, args.clients, args.observers_per_session)
    try:
        joins = run_clients(target, plan, args.generators, args.spread_s)
    finally:
        parent.send("stop")
        counts = parent.recv() if parent.poll(30) else {}
        process.join(10)
    return joins, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--observers-per-session", type=int, default=2)
    parser.add_argument("--generators", type=int, default=1)
    parser.add_argument("--spread-s", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=2000, help="the flooder's messages a second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    rounds = []
    with tempfile.TemporaryDirectory(prefix="jisr-flood-") as folder:
        target = start_jisr(Path(folder), max_observers=args.observers_per_session)
        try:
            for n in range(args.rounds):
                order = ("baseline", "flood") if n % 2 == 0 else ("flood", "baseline")
                result: dict = {}
                for mode in order:
                    if mode == "baseline":
                        plan = plan_sessions(target, args.clients, args.observers_per_session)
                        result["baseline"] = run_clients(
                            target, plan, args.generators, args.spread_s
                        )
                    else:
                        result["flood"], result["flooder"] = flooded_run(target, args)
                rounds.append(result)
                log(f"round {n + 1}: " + summary_line(result))
        finally:
            stop(target.proc)
    report(rounds, args)
    return 0


def summary_line(result: dict) -> str:
    base, flood, flooder = result["baseline"], result["flood"], result["flooder"]
    limited = flooder.get("rate_limited", 0) / max(1, flooder.get("sent", 0))
    return (
        f"join p50/p99 {base['p50_ms']}/{base['p99_ms']} ms without, "
        f"{flood['p50_ms']}/{flood['p99_ms']} ms with the flood "
        f"(p99 ratio {flood['p99_ms'] / base['p99_ms']:.2f}); errors {base['errors']}/"
        f"{flood['errors']} {flood['error_samples']}; flooder sent {flooder.get('sent')} in "
        f"{flooder.get('seconds')} s: {flooder.get('pong')} answered, {limited:.1%} answered "
        f"rate_limited, the rest dropped; cut off {flooder.get('cut_off')} times"
    )


def report(rounds: list[dict], args: argparse.Namespace) -> None:
    ratios = [r["flood"]["p99_ms"] / r["baseline"]["p99_ms"] for r in rounds]
    print("machine:", json.dumps(machine()))
    for n, r in enumerate(rounds, 1):
        print(f"round {n}: {summary_line(r)}")
    worst = max(ratios)
    print(f"p99 with the flood / without: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {percentile(ratios, 50):.2f}; target <= 1.20: "
          f"{'met' if percentile(ratios, 50) <= 1.2 else 'missed'})")  # fmt: skip
    if args.json:
        print(json.dumps({"rounds": rounds, "p99_ratios": ratios, "worst_ratio": worst}))


if __name__ == "__main__":
    raise SystemExit(main())
