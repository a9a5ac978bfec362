"""Signaling under load: ``python -m bench.signaling [--clients 500] [--json]``.

Starts a real ``jisr serve`` process (one node, in-process store) and, side by side
in the same run, a raw aiohttp WebSocket echo server (the baseline). Sets up enough
consults and sessions over the HTTP API, then load-generator processes open the
WebSocket clients (all connected at once), each authenticates, and at one agreed
instant every client sends ``join`` (or evenly over ``--spread-s`` seconds); the
figure is the time from sending ``join`` to receiving ``joined``. Once every client
has joined, each leaves and closes. Signaling only, no media.

CPU time of the server, of the load generators and of everything else on the
machine is counted from the first join to the last reply: other work on a shared
machine skews the latencies, and the report says so.

Each session gets a referrer and a specialist (participants) and
``--observers-per-session`` supervisors (observers). The echo baseline goes through
the same steps (connect, auth, join, leave, close) with a server that answers each
message at once.

``--json`` prints ``{"clients", "p50_ms", "p99_ms", "errors", ...}`` (Jisr's figures,
then the baseline's and the machine's) as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path

from .common import ROOT, free_port, log
from .common import machine as common_machine

CLK_TCK = os.sysconf("SC_CLK_TCK")
STEP_TIMEOUT_S = 30.0
GO_DELAY_S = 0.5  # between "everyone is connected" and the joins: lets the machine settle
BENCH_LIMITS = (
    "consult.address=100000/minute;connection.address=100000/minute;"
    "offer.address=100000/minute;connection.user=100000/minute"
)


# -- the machine and its processes ------------------------------------------------------


def machine() -> dict:
    return {
        **common_machine(),
        "aiohttp": version("aiohttp"),
        "load_average": os.getloadavg()[0],
    }


def cpu_seconds(pid: int) -> float:
    """CPU time of one process so far, to the nanosecond: the time each of its
    threads has been on a CPU (the scheduler's count; /proc/PID/stat counts in
    10 ms ticks, a fifth of a whole burst's joins)."""
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ended
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total_ns += int(f.read().split()[0])
    return total_ns / 1e9


def machine_cpu_seconds() -> float:
    """CPU time used by every process of the machine so far (all but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


def wait_healthy(base: str, proc: subprocess.Popen, log_path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise SystemExit(f"{base} did not become healthy:\n{tail}")
        time.sleep(0.05)  # polling interval


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Target:
    name: str
    base: str
    proc: subprocess.Popen
    log_path: Path
    secret: str | None = None

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/ws"


def start_jisr(folder: Path, max_observers: int) -> Target:
    port = free_port()
    secret = secrets.token_urlsafe(48)
    env = {
        **os.environ,
        "JISR_JWT_SECRET": secret,
        "JISR_ICE_ADDRESSES": "127.0.0.1",
        "JISR_MEDIA_UDP_PORT": "0",  # no media here; not 7882, which another server may hold
        "JISR_MAX_OBSERVERS": str(max_observers),
        "JISR_NODE_ID": "n_bench",
        # Every client of the benchmark shares one address and each referrer makes a
        # consult: the per-address limits a hospital's NAT needs would stop the setup.
        "JISR_RATE_LIMITS": BENCH_LIMITS,
        "JISR_MAX_SESSIONS_PER_NODE": "100000",  # rounds of sessions pile up on one node
    }
    env.pop("JISR_REDIS_URL", None)  # one node on the in-process store
    log_path = folder / "jisr.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, log_path)
    return Target("jisr", base, proc, log_path, secret)


def start_echo(folder: Path) -> Target:
    port = free_port()
    log_path = folder / "echo.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.signaling", "--echo-server", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, log_path)
    return Target("echo", base, proc, log_path)


# -- the baseline: a raw aiohttp WebSocket echo server ----------------------------------

ECHO_REPLIES = {"auth": "welcome", "join": "joined", "leave": "left", "ping": "pong"}


def echo_server(port: int) -> None:
    """Answers every JSON message at once with its reply type and ``ref``."""
    import uvloop
    from aiohttp import WSMsgType, web

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind = ECHO_REPLIES.get(data.get("type"), "error")
            await ws.send_json({"type": kind, "ref": data.get("ref")})
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/ws", ws_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
        await runner.cleanup()

    uvloop.run(main())


# -- the cast: consults and sessions over the HTTP API ---------------------------------


def plan_sessions(target: Target, clients: int, observers_per_session: int) -> list[dict]:
    """One ``{"token", "session_id"}`` per client: each session's referrer and
    specialist, then its observers (supervisors), until there are ``clients``."""
    from signaling.auth import mint_token
    from signaling.settings import DEFAULT_SPECIALTIES, load_settings

    settings = load_settings(jwt_secret=target.secret)
    per_session = 2 + observers_per_session
    sessions = math.ceil(clients / per_session)

    def token(role: str, sub: str, **claims) -> str:
        return mint_token(settings, role=role, sub=sub, **claims)

    def post(path: str, bearer: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            target.base + path,
            data=json.dumps(body or {}).encode(),
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    plan: list[dict] = []
    for i in range(sessions):
        specialty = DEFAULT_SPECIALTIES[i % len(DEFAULT_SPECIALTIES)]
        referrer = token("referrer", f"ref-{i}", facility=f"hospital-{i % 20}")
        specialist = token("specialist", f"spec-{i}", specialties=[specialty])
        consult = post(
            "/api/consults",
            referrer,
            {
                "specialty": specialty,
                "urgency": ("critical", "urgent", "routine")[i % 3],
                "summary": f"bench consult {i}",
                "patient_ref": f"P-{i:05d}",
            },
        )
        accepted = post(f"/api/consults/{consult['id']}/accept", specialist)
        session_id = accepted["session"]["id"]
        plan.append({"token": referrer, "session_id": session_id})
        plan.append({"token": specialist, "session_id": session_id})
        for j in range(observers_per_session):
            supervisor = token("supervisor", f"sup-{i}-{j}", facility="heart-centre")
            plan.append({"token": supervisor, "session_id": session_id})
    return plan[:clients]


def plan_echo(clients: int) -> list[dict]:
    return [{"token": "echo", "session_id": f"s_echo{i}"} for i in range(clients)]


# -- the load generators (other processes) ---------------------------------------------


@dataclass
class ClientResult:
    connect_ms: float | None = None
    auth_ms: float | None = None
    join_ms: float | None = None
    leave_ms: float | None = None
    error: str | None = None
    # Messages pushed to this client while it waited for a reply, by type.
    pushed: dict = field(default_factory=dict)
    # Frames that held only pushes, set aside unparsed while the clock runs: with
    # hundreds of clients per generator process, parsing every push at once would
    # make the generator, not the server, the slow part.
    unread: list = field(default_factory=list)


def count_pushes(result: ClientResult) -> None:
    for text in result.unread:
        data = json.loads(text)
        for message in data if isinstance(data, list) else [data]:
            kind = str(message.get("type"))
            result.pushed[kind] = result.pushed.get(kind, 0) + 1
    result.unread = []


async def _await_reply(ws, wanted: str, ref: str, result: ClientResult) -> dict:
    """The reply to ``ref``; anything else the server pushes meanwhile is counted."""
    from aiohttp import WSMsgType

    # As the standard library and as orjson write it; quotes in strings are escaped.
    markers = (f'"ref": "{ref}"', f'"ref":"{ref}"')
    while True:
        msg = await ws.receive(timeout=STEP_TIMEOUT_S)
        if msg.type != WSMsgType.TEXT:
            raise ConnectionError(f"socket {msg.type.name} while waiting for {wanted}")
        if not any(marker in msg.data for marker in markers):
            result.unread.append(msg.data)
            continue
        data = json.loads(msg.data)
        reply = None
        for message in data if isinstance(data, list) else [data]:  # a frame may batch
            if message.get("ref") == ref:
                if message.get("type") != wanted:
                    raise RuntimeError(
                        f"{message.get('type')} {message.get('code')} instead of {wanted}"
                    )
                reply = message
                continue
            kind = str(message.get("type"))
            result.pushed[kind] = result.pushed.get(kind, 0) + 1
        if reply is not None:
            return reply


async def _client_session(http, url: str, entry: dict, result: ClientResult, gates) -> None:
    connected, go, may_leave = gates
    try:
        started = time.perf_counter()
        ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
        result.connect_ms = (time.perf_counter() - started) * 1000
    except Exception as exc:  # noqa: BLE001 - every failure is one counted error
        result.error = f"connect: {type(exc).__name__}: {exc}"
        connected()
        return
    try:
        started = time.perf_counter()
        auth = {"type": "auth", "ref": "a", "token": entry["token"], "batch": True}  # as pages do
        await ws.send_str(json.dumps(auth))
        await _await_reply(ws, "welcome", "a", result)
        result.auth_ms = (time.perf_counter() - started) * 1000
    except Exception as exc:  # noqa: BLE001
        result.error = f"auth: {type(exc).__name__}: {exc}"
    connected()
    try:
        start_at = await go
        if result.error is None:
            delay = start_at + entry.get("offset", 0.0) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.perf_counter()
            await ws.send_str(
                json.dumps({"type": "join", "ref": "j", "session_id": entry["session_id"]})
            )
            await _await_reply(ws, "joined", "j", result)
            result.join_ms = (time.perf_counter() - started) * 1000
            await may_leave
            started = time.perf_counter()
            await ws.send_str(json.dumps({"type": "leave", "ref": "l"}))
            await _await_reply(ws, "left", "l", result)
            result.leave_ms = (time.perf_counter() - started) * 1000
    except Exception as exc:  # noqa: BLE001
        result.error = f"join/leave: {type(exc).__name__}: {exc}"
    finally:
        await ws.close()


async def _generator(url: str, entries: list[dict], pipe: Connection) -> list[dict]:
    import aiohttp

    loop = asyncio.get_running_loop()
    results = [ClientResult() for _ in entries]
    go: asyncio.Future[float] = loop.create_future()
    may_leave: asyncio.Future[None] = loop.create_future()
    pending = len(entries)
    all_connected = asyncio.Event()

    def connected() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            all_connected.set()

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [
            asyncio.ensure_future(
                _client_session(http, url, entry, result, (connected, go, may_leave))
            )
            for entry, result in zip(entries, results, strict=True)
        ]
        await all_connected.wait()
        pipe.send(("connected", None))
        start_at = await loop.run_in_executor(None, pipe.recv)
        go.set_result(start_at)
        # Everyone stays joined until every client (of every generator) has its
        # reply, so that the joins measured all see the full population.
        while any(r.join_ms is None and r.error is None for r in results):
            await asyncio.sleep(0.01)  # polling the shared results list
        pipe.send(("joined", None))
        await loop.run_in_executor(None, pipe.recv)
        may_leave.set_result(None)
        await asyncio.gather(*tasks)
    for result in results:
        count_pushes(result)
    return [r.__dict__ for r in results]


def generator_main(url: str, entries: list[dict], pipe: Connection) -> None:
    import uvloop

    try:
        results = uvloop.run(_generator(url, entries, pipe))
        pipe.send(("results", results))
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
        pipe.send(("failed", f"{type(exc).__name__}: {exc}"))


def run_clients(target: Target, plan: list[dict], generators: int, spread_s: float) -> dict:
    """All clients of ``plan`` against ``target`` from ``generators`` processes; the
    joins start together, or evenly over ``spread_s`` seconds."""
    context = multiprocessing.get_context("spawn")
    plan = [{**entry, "offset": spread_s * i / len(plan)} for i, entry in enumerate(plan)]
    shares = [plan[i::generators] for i in range(generators)]
    pipes, processes = [], []
    for share in shares:
        parent, child = context.Pipe()
        process = context.Process(
            target=generator_main, args=(target.ws_url, share, child), daemon=True
        )
        process.start()
        pipes.append(parent)
        processes.append(process)

    def receive(pipe: Connection, expected: str, timeout: float):
        if not pipe.poll(timeout):
            raise SystemExit(f"a load generator sent no {expected} within {timeout} s")
        kind, payload = pipe.recv()
        if kind != expected:
            raise SystemExit(f"a load generator failed: {payload}")
        return payload

    try:
        started = time.perf_counter()
        for pipe in pipes:
            receive(pipe, "connected", 120)
        connect_s = time.perf_counter() - started
        server, clients = target.proc.pid, [p.pid for p in processes]
        start_at = time.time() + GO_DELAY_S
        for pipe in pipes:
            pipe.send(start_at)
        time.sleep(max(0.0, start_at - time.time()))  # CPU is counted from the go instant
        cpu_before = (
            cpu_seconds(server),
            sum(map(cpu_seconds, clients)),
            machine_cpu_seconds(),
        )
        for pipe in pipes:
            receive(pipe, "joined", 120)
        server_cpu = cpu_seconds(server) - cpu_before[0]
        generators_cpu = sum(map(cpu_seconds, clients)) - cpu_before[1]
        machine_cpu = machine_cpu_seconds() - cpu_before[2]
        cpu = {
            "join_window_s": round(time.time() - start_at, 3),
            "server_join_cpu_s": round(server_cpu, 3),
            "generators_join_cpu_s": round(generators_cpu, 3),
            # Everything else on the machine between "go" and the last reply (the
            # orchestrator idles meanwhile): other work skews the latencies.
            "others_join_cpu_s": round(max(0.0, machine_cpu - server_cpu - generators_cpu), 3),
        }
        for pipe in pipes:
            pipe.send("leave")
        results: list[dict] = []
        for pipe in pipes:
            results.extend(receive(pipe, "results", 120))
        cpu["server_total_cpu_s"] = round(cpu_seconds(server) - cpu_before[0], 3)
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    return summarise(target.name, results, connect_s, cpu)


# -- figures ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def pushed_by_type(results: list[dict]) -> dict:
    totals: dict[str, int] = {}
    for r in results:
        for kind, count in r["pushed"].items():
            totals[kind] = totals.get(kind, 0) + count
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def summarise(name: str, results: list[dict], connect_s: float, cpu: dict) -> dict:
    joins = [r["join_ms"] for r in results if r["join_ms"] is not None]
    errors = [r["error"] for r in results if r["error"] is not None]

    def stat(key: str, q: float) -> float | None:
        value = percentile([r[key] for r in results if r[key] is not None], q)
        return None if value is None else round(value, 2)

    return {
        "name": name,
        "clients": len(results),
        "p50_ms": stat("join_ms", 50),
        "p99_ms": stat("join_ms", 99),
        "max_ms": stat("join_ms", 100),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "connect_auth_s": round(connect_s, 2),
        "auth_p99_ms": stat("auth_ms", 99),
        "leave_p50_ms": stat("leave_ms", 50),
        "leave_p99_ms": stat("leave_ms", 99),
        "pushed_messages": sum(sum(r["pushed"].values()) for r in results),
        "pushed_by_type": pushed_by_type(results),
        **cpu,
        "server_cpu_ms_per_join": round(cpu["server_join_cpu_s"] * 1000 / max(1, len(joins)), 3),
    }


def report(jisr: dict, echo: dict, info: dict, settings: dict, as_json: bool) -> None:
    def ratio(key: str) -> float | None:
        if not jisr[key] or not echo[key]:
            return None
        return round(jisr[key] / echo[key], 1)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"aiohttp {info['aiohttp']}, Linux {info['kernel']}, "
          f"load average {info['load_average']:.2f} at start")  # fmt: skip
    print(
        f"{settings['clients']} clients from {settings['generators']} processes, "
        f"{settings['observers_per_session']} observers per session, joins "
        + (f"spread over {settings['spread_s']} s" if settings["spread_s"] else "all at once")
    )
    print(
        f"{'server':<6} {'join p50':>10} {'join p99':>10} {'max':>10} {'errors':>6} "
        f"{'leave p99':>10} {'pushed':>7} {'server CPU/join':>15} {'join window':>11}"
    )
    for row in (jisr, echo):
        print(
            f"{row['name']:<6} {ms(row['p50_ms']):>10} {ms(row['p99_ms']):>10} "
            f"{ms(row['max_ms']):>10} {row['errors']:>6} {ms(row['leave_p99_ms']):>10} "
            f"{row['pushed_messages']:>7} {row['server_cpu_ms_per_join']:>12.3f} ms "
            f"{row['join_window_s']:>9.2f} s"
        )
    for row in (jisr, echo):
        print(
            f"{row['name']} during the joins: server {row['server_join_cpu_s']} s CPU, "
            f"load generators {row['generators_join_cpu_s']} s, "
            f"other processes {row['others_join_cpu_s']} s"
        )
    busy = max(jisr["others_join_cpu_s"] / jisr["join_window_s"], 0)
    if busy > 0.1:
        print(
            f"warning: other processes used {busy:.0%} of a core during the joins "
            f"(load average {info['load_average']:.2f} at start); latencies are skewed"
        )
    print(f"pushed to jisr clients while they waited: {jisr['pushed_by_type']}")
    print(f"jisr / echo: p50 x{ratio('p50_ms')}, p99 x{ratio('p99_ms')}")
    target_met = jisr["errors"] == 0 and jisr["p99_ms"] is not None and jisr["p99_ms"] <= 50
    print(f"target (p99 <= 50 ms, zero errors): {'met' if target_met else 'MISSED'}")
    for row in (jisr, echo):
        for sample in row["error_samples"]:
            print(f"  {row['name']} error: {sample}")
    if as_json:
        keep = ("p50_ms", "p99_ms", "max_ms", "errors", "server_cpu_ms_per_join")
        load = ("server_join_cpu_s", "generators_join_cpu_s", "others_join_cpu_s")
        print(
            json.dumps(
                {
                    "clients": jisr["clients"],
                    "p50_ms": jisr["p50_ms"],
                    "p99_ms": jisr["p99_ms"],
                    "errors": jisr["errors"],
                    "max_ms": jisr["max_ms"],
                    "server_cpu_ms_per_join": jisr["server_cpu_ms_per_join"],
                    "pushed_messages": jisr["pushed_messages"],
                    "join_window_s": jisr["join_window_s"],
                    **{k: jisr[k] for k in load},
                    "baseline": {k: echo[k] for k in keep},
                    "p50_ratio": ratio("p50_ms"),
                    "p99_ratio": ratio("p99_ms"),
                    "settings": settings,
                    "machine": info,
                }
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signaling", description=__doc__)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--observers-per-session", type=int, default=2)
    parser.add_argument(
        "--spread-s",
        type=float,
        default=0.0,
        help="spread the joins evenly over this many seconds (default 0: all at once)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary last")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        echo_server(args.echo_server)
        return 0
    if args.clients < 1 or args.generators < 1:
        parser.error("--clients and --generators must be positive")
    if args.observers_per_session < 0 or args.spread_s < 0:
        parser.error("--observers-per-session and --spread-s cannot be negative")

    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="jisr-bench-signaling-"))
    targets: list[Target] = []
    try:
        log("starting the echo baseline and jisr serve")
        echo = start_echo(folder)
        targets.append(echo)
        jisr = start_jisr(folder, max_observers=max(8, args.observers_per_session))
        targets.append(jisr)
        log(f"creating consults and sessions for {args.clients} clients")
        plan = plan_sessions(jisr, args.clients, args.observers_per_session)
        log(f"echo: {args.clients} clients from {args.generators} processes")
        echo_figures = run_clients(echo, plan_echo(args.clients), args.generators, args.spread_s)
        log(f"jisr: {args.clients} clients from {args.generators} processes")
        jisr_figures = run_clients(jisr, plan, args.generators, args.spread_s)
    finally:
        for target in targets:
            stop(target.proc)
        if args.keep_logs:
            log(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    settings = {
        "clients": args.clients,
        "generators": args.generators,
        "observers_per_session": args.observers_per_session,
        "spread_s": args.spread_s,
    }
    report(jisr_figures, echo_figures, info, settings, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
