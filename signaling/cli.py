"""The ``jisr`` command: ``jisr serve``, ``jisr token``, ``jisr recordings …`` and
``jisr audit …``."""

from __future__ import annotations

import argparse
import errno
import gc
import os
import secrets
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from recordings.cli import add_recordings_commands

from .auth import ROLES, mint_token
from .demo import HTTPS_PORT, Listener, demo_environment, https_listeners, links
from .logs import AccessLog, configure_logging, get_logger
from .records.cli import add_audit_commands
from .settings import Settings, SettingsError, load_settings
from .tls import server_context

# After refusing a request early (too large, too slow), the rest of its body is read
# and dropped this long, so the client can read the answer before the close.
LINGER_S = 2.0

def serve(args: argparse.Namespace) -> int:
    if args.demo:
        demo_environment()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    workers = args.workers
    if workers is None:  # one node per core; without Redis nodes cannot share state
        workers = (os.cpu_count() or 1) if settings.uses_redis else 1
    if workers > 1 and not settings.uses_redis:
        print("--workers above 1 needs Redis (JISR_REDIS_URL or JISR_REDIS_SENTINELS): "
              "nodes share state through it",
              file=sys.stderr)  # fmt: skip
        return 2
    for name, first in (("JISR_MEDIA_UDP_PORT", settings.media_udp_port),
                        ("JISR_INTERNAL_PORT", settings.internal_port)):  # fmt: skip
        if first and first + workers - 1 > 65535:
            print(f"{name}: each worker takes the next port; "
                  f"{workers} workers do not fit below 65536", file=sys.stderr)  # fmt: skip
            return 2
    configure_logging(os.environ.get("JISR_LOG_LEVEL", "info"))
    listeners = []
    if args.demo:  # and HTTPS on the network addresses, for another computer
        listeners = https_listeners(args.https_port)
        print(links(settings, listeners), flush=True)
    if workers == 1:
        return run_node(settings, settings.node_id, reuse_port=False, listeners=listeners)
    return supervise(settings, workers, listeners)


def run_node(
    settings: Settings, node_id: str | None, reuse_port: bool, listeners: Sequence[Listener] = ()
) -> int:
    """One node on uvloop: the public listener (shared between workers with
    SO_REUSEPORT), the demo's HTTPS ``listeners``, and a private one other nodes
    reach it on (TLS when it has a certificate). 1 when it cannot start (its store
    refuses it or is down, or a port is taken)."""
    import uvloop

    from .app import create_app
    from .cluster import server_ssl

    internal = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    internal.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        internal.bind((settings.internal_host, settings.internal_port))
    except OSError as exc:
        internal.close()
        return start_failed("JISR_INTERNAL_PORT", settings.internal_port, exc)
    internal_tls = server_ssl(settings)
    scheme = "https" if internal_tls else "http"
    internal_url = f"{scheme}://{settings.internal_host}:{internal.getsockname()[1]}"
    app = create_app(settings, node_id=node_id, internal_url=internal_url,
                     internal_address=internal.getsockname())  # fmt: skip
    context = None  # HTTPS on the public listener
    if settings.tls_cert_file and settings.tls_key_file:
        context = server_context(settings.tls_cert_file, settings.tls_key_file)
    public = [PublicSite("JISR_PORT", settings.host, settings.port, context)]
    public += [PublicSite("--https-port", extra.host, extra.port,
                          server_context(extra.cert_file, extra.key_file))
               for extra in listeners]  # fmt: skip
    return uvloop.run(serve_node(app, settings, public, internal, internal_tls, reuse_port))


@dataclass(frozen=True)
class PublicSite:
    setting: str  # what a start_failed line names when the port is taken
    host: str
    port: int
    ssl_context: ssl.SSLContext | None


async def serve_node(
    app: web.Application, settings: Settings, public: list[PublicSite],
    internal: socket.socket, internal_tls: ssl.SSLContext | None, reuse_port: bool,
) -> int:  # fmt: skip
    """Start the app and its listeners, serve until SIGTERM or SIGINT, clean up."""
    import asyncio
    import logging
    import signal

    from media import PortUnavailable

    from .store import StoreUnavailable

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=logging.getLogger("aiohttp.access"),
        access_log_class=AccessLog, keepalive_timeout=settings.http_idle_timeout_s,
        lingering_time=LINGER_S,
    )  # fmt: skip
    try:
        await runner.setup()
    except StoreUnavailable as exc:  # the message names no password: see store.connect
        get_logger().error("node.start_failed", reason=exc.code, error=str(exc))
        return 1
    except PortUnavailable as exc:  # the media port, bound at start
        return start_failed("JISR_MEDIA_UDP_PORT", settings.media_udp_port, exc)
    try:
        sites = [(p.setting, p.port, web.TCPSite(runner, p.host, p.port, reuse_port=reuse_port,
                                                 ssl_context=p.ssl_context))
                 for p in public]  # fmt: skip
        sites.append(("JISR_INTERNAL_PORT", settings.internal_port,
                      web.SockSite(runner, internal, ssl_context=internal_tls)))  # fmt: skip
        for name, port, site in sites:
            try:
                await site.start()
            except OSError as exc:
                return start_failed(name, port, exc)
        set_aside_startup_objects()
        await stop.wait()
    finally:
        await runner.cleanup()  # closes media, leaves the node map
    return 0


def set_aside_startup_objects() -> None:
    """What the node loaded to start (modules, the database and FHIR models) lives as
    long as the process: the cycle collector need not walk it again. Left in, each
    full collection walked some 150,000 objects, and a burst of joins paid for it
    (bench.signaling: a fifth more server CPU per join)."""
    gc.collect()
    gc.freeze()


def start_failed(setting: str, port: int, exc: OSError) -> int:
    """A port the node cannot bind (taken, or not allowed): one coded line, exit 1."""
    reason = "port_in_use" if exc.errno == errno.EADDRINUSE else "port_unavailable"
    get_logger().error("node.start_failed", reason=reason, setting=setting, port=port,
                       error=exc.strerror or type(exc).__name__)  # fmt: skip
    return 1


WORKER_START_FAILED = 78  # EX_CONFIG: the store refused or could not be reached at start


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index`` shares the HTTP port but takes a media UDP port and an
    internal port of its own: the configured ones plus its index (0 stays 0: each
    picks one)."""
    ports = ("media_udp_port", "internal_port")
    update = {name: getattr(settings, name) + index for name in ports if getattr(settings, name)}
    return settings.model_copy(update=update) if update else settings


def _worker_main(
    settings: Settings, index: int, base_node_id: str, listeners: Sequence[Listener]
) -> None:
    configure_logging(os.environ.get("JISR_LOG_LEVEL", "info"))
    failed = run_node(
        worker_settings(settings, index), f"{base_node_id}-{index}", reuse_port=True,
        listeners=listeners,
    )  # fmt: skip
    sys.exit(WORKER_START_FAILED if failed else 0)


def supervise(settings: Settings, workers: int, listeners: Sequence[Listener] = ()) -> int:
    """Run ``workers`` node processes on one port, restarting any that dies."""
    import multiprocessing
    import signal
    import time

    context = multiprocessing.get_context("spawn")
    base = settings.node_id or f"n_{secrets.token_hex(3)}"
    stopping, outcome = False, 0

    def start(index: int):
        process = context.Process(target=_worker_main, args=(settings, index, base, listeners),
                                  daemon=False)  # fmt: skip
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
            if process.exitcode == WORKER_START_FAILED:  # restarting would fail the same way
                get_logger().error("node.workers_stopped", worker=index, reason="start_failed")
                stopping, outcome = True, 1
                break
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
    return outcome


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
        help="print sign-in links for a referrer, a specialist and a supervisor, here and"
        " (over HTTPS, with a certificate the demo makes) from other computers",
    )
    p_serve.add_argument(
        "--https-port", type=int, default=HTTPS_PORT,
        help=f"with --demo: HTTPS port on the network addresses (default {HTTPS_PORT})",
    )  # fmt: skip
    p_serve.add_argument(
        "--workers", type=int, help="node processes (default: one per core with Redis, else 1)"
    )
    p_serve.set_defaults(func=serve)

    add_recordings_commands(commands)
    add_audit_commands(commands)

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
