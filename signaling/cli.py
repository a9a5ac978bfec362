"""The ``jisr`` command: ``jisr serve`` and ``jisr token``."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from aiohttp import web

from .auth import ROLES, mint_token
from .logs import configure_logging
from .settings import SettingsError, load_settings

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
    run, and media reachable on loopback as well as the machine's own addresses."""
    os.environ.setdefault("JISR_JWT_SECRET", secrets.token_urlsafe(48))
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
    configure_logging(os.environ.get("JISR_LOG_LEVEL", "info"))
    from .app import create_app

    app = create_app(settings)
    if args.demo:
        base = f"http://{settings.host}:{settings.port}"
        print("Jisr demo: open each link in its own browser window", flush=True)
        for role, claims in DEMO_USERS:
            token = mint_token(settings, role=role, **claims)
            print(f"  {role:<11} {base}/{role}.html#token={token}", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None)
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
    p_serve.set_defaults(func=serve)

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
