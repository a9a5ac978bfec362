"""The ``jisr`` command: ``jisr serve`` and ``jisr token``."""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys

from aiohttp import web

from recordings.cli import add_recordings_commands

from .auth import ROLES, mint_token
from .logs import AccessLog, configure_logging, get_logger
from .settings import Settings, SettingsError, load_settings

# After refusing a request early (too large, too slow), the rest of its body is read
# and dropped this long, so the client can read the answer before the close.
LINGER_S = 2.0

DEMO_USERS = (
    ("referrer", {"sub": "dr-amal", "name": "Dr Amal Haddad", "facility": "hospital-a"}),
    (
        "specialist",
        {
            "sub": "dr-karim",
            "name": "Dr Karim Nasser",
            "facility": "heart-centre",
            "specialties": ["cardiology", "cardiac-surgery"],
        },
    ),
    ("supervisor", {"sub": "sup-leila", "name": "Dr Leila Mansour", "facility": "heart-centre"}),
)


def _demo_environment() -> None:
    """A single-node demo needs no configuration: a random signing secret for this
    run, a recording key in var/, and media reachable on loopback as well as the
    machine's own addresses."""
    os.environ.setdefault("JISR_JWT_SECRET", secrets.token_urlsafe(48))
    if "JISR_RECORDING_KEY" not in os.environ:  # recording works out of the box
        from recordings.crypto import generate_key_file

        key = os.path.abspath("var/recording.key")
        if not os.path.exists(key):
            os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
            generate_key_file(key)
        os.environ["JISR_RECORDING_KEY"] = key
    if "JISR_ICE_ADDRESSES" not in os.environ:
        import aioice.ice

        addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        os.environ["JISR_ICE_ADDRESSES"] = ",".join(["127.0.0.1", *addresses])


def serve(args: argparse.Namespace) -> int:
    if args.demo:
        _demo_environment()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    workers = args.workers
    if workers is None:  # one node per core; without Redis nodes cannot share state
        workers = (os.cpu_count() or 1) if settings.redis_url else 1
    if workers > 1 and not settings.redis_url:
        print("--workers above 1 needs JISR_REDIS_URL: nodes share state through Redis",
              file=sys.stderr)  # fmt: skip
        return 2
    if settings.media_udp_port and settings.media_udp_port + workers - 1 > 65535:
        print("JISR_MEDIA_UDP_PORT: each worker takes the next port; "
              f"{workers} workers do not fit below 65536", file=sys.stderr)  # fmt: skip
        return 2
    configure_logging(os.environ.get("JISR_LOG_LEVEL", "info"))
    if args.demo:
        base = f"http://{settings.host}:{settings.port}"
        print("Jisr demo: open each link in its own browser window", flush=True)
        for role, claims in DEMO_USERS:
            token = mint_token(settings, role=role, **claims)
            print(f"  {role:<11} {base}/{role}.html#token={token}", flush=True)
    if workers == 1:
        run_node(settings, settings.node_id, reuse_port=False)
        return 0
    return supervise(settings, workers)


def run_node(settings: Settings, node_id: str | None, reuse_port: bool) -> None:
    """One node on uvloop: the public listener (shared between workers with
    SO_REUSEPORT) and a private one other nodes reach it on."""
    import asyncio
    import logging
    import signal

    import uvloop

    from .app import create_app

    internal = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    internal.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    internal.bind((settings.internal_host, 0))
    internal_url = f"http://{settings.internal_host}:{internal.getsockname()[1]}"
    app = create_app(settings, node_id=node_id, internal_url=internal_url)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=logging.getLogger("aiohttp.access"),
            access_log_class=AccessLog, keepalive_timeout=settings.http_idle_timeout_s,
            lingering_time=LINGER_S,
        )  # fmt: skip
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port).start()
            await web.SockSite(runner, internal).start()
            await stop.wait()
        finally:
            await runner.cleanup()  # closes media, leaves the node map

    uvloop.run(main())


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index`` shares the HTTP port but takes a media UDP port of its own:
    JISR_MEDIA_UDP_PORT plus its index (0 stays 0: each picks one)."""
    if not settings.media_udp_port:
        return settings
    return settings.model_copy(update={"media_udp_port": settings.media_udp_port + index})


def _worker_main(settings: Settings, index: int, base_node_id: str) -> None:
    configure_logging(os.environ.get("JISR_LOG_LEVEL", "info"))
    run_node(worker_settings(settings, index), f"{base_node_id}-{index}", reuse_port=True)


def supervise(settings: Settings, workers: int) -> int:
    """Run ``workers`` node processes on one port, restarting any that dies."""
    import multiprocessing
    import signal
    import time

    context = multiprocessing.get_context("spawn")
    base = settings.node_id or f"n_{secrets.token_hex(3)}"
    stopping = False

    def start(index: int):
        process = context.Process(target=_worker_main, args=(settings, index, base), daemon=False)
        process.start()
        return process

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes = [start(i) for i in range(workers)]
    while not stopping:
        for index, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                get_logger().warning(
                    "node.worker_restarted", worker=index, exit_code=process.exitcode
                )
                processes[index] = start(index)
        time.sleep(0.5)  # supervision tick; exits are rare and this is not a test
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()
    return 0


def token(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        mint_token(
            settings,
            role=args.role,
            sub=args.sub,
            name=args.name,
            facility=args.facility,
            specialties=args.specialty or None,
            ttl_s=args.ttl,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jisr", description="Jisr teleconsultation server")
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="run a node")
    p_serve.add_argument("--host", help="listen address (JISR_HOST)")
    p_serve.add_argument("--port", type=int, help="listen port (JISR_PORT)")
    p_serve.add_argument(
        "--demo",
        action="store_true",
        help="print sign-in links for a referrer, a specialist and a supervisor",
    )
    p_serve.add_argument(
        "--workers", type=int, help="node processes (default: one per core with Redis, else 1)"
    )
    p_serve.set_defaults(func=serve)

    add_recordings_commands(commands)

    p_token = commands.add_parser("token", help="mint a development token (HS256)")
    p_token.add_argument("--role", required=True, choices=ROLES)
    p_token.add_argument("--sub", required=True)
    p_token.add_argument("--name")
    p_token.add_argument("--facility")
    p_token.add_argument("--specialty", action="append", help="repeat for several")
    p_token.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    p_token.set_defaults(func=token)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
