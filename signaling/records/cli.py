"""``jisr audit verify``: check the audit trail's hash chain in the record store
(every entry's number, link and keyed hash, and the head), naming each entry
changed, removed or out of place; ``jisr audit export``: the trail as JSON lines;
``jisr records rotate-key``: the record store's part of a master key rotation.

Reads ``JISR_RECORDS_URL`` (or the SQLite file under ``JISR_DATA_DIR``),
``JISR_RECORDING_KEY`` and ``JISR_RECORDING_OLD_KEYS`` as the server does."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from recordings.crypto import MasterKeyError, load_master_key
from recordings.keyring import Keyring

from . import chain
from .database import DatabaseUnavailable, database_url, open_engine, sqlite_url, transient
from .sealing import KeyShredded, Sealing
from .trail import TrailQuery, search


class ConfigError(Exception):
    pass


def _keyring() -> Keyring:
    key = os.environ.get("JISR_RECORDING_KEY")
    if not key:
        raise ConfigError("JISR_RECORDING_KEY is not set: the chain is keyed by the master key")
    old = [p.strip() for p in os.environ.get("JISR_RECORDING_OLD_KEYS", "").split(",") if p.strip()]
    return Keyring(load_master_key(key), retired=[load_master_key(p) for p in old])


def _password() -> str | None:
    path = os.environ.get("JISR_RECORDS_PASSWORD_FILE")
    return Path(path).read_text().strip() if path else None


def _url() -> str:
    url = os.environ.get("JISR_RECORDS_URL")
    if url:
        database_url(url)
        return url
    path = Path(os.environ.get("JISR_DATA_DIR", "var")).resolve() / "records.db"
    if not path.exists():
        raise ConfigError(f"no record store at {path} (set JISR_RECORDS_URL or JISR_DATA_DIR)")
    return sqlite_url(path)


async def _verify(url: str, keyring: Keyring) -> chain.ChainReport:
    engine = open_engine(url, password=_password())
    try:
        try:
            async with engine.connect() as conn:
                key: bytes | None = await Sealing(keyring).key(conn, chain.KEY_ID, create=False)
        except KeyShredded:
            key = None  # no trail yet (or its key is gone: every entry is unverifiable)

        def key_for(key_id: str | None) -> tuple[str, bytes]:
            if key is None or key_id not in (None, chain.KEY_ID):
                raise LookupError(key_id)
            return chain.KEY_ID, key

        return await chain.verify(engine, key_for)
    finally:
        await engine.dispose()


async def _rotate(url: str, keyring: Keyring) -> tuple[int, int]:
    engine = open_engine(url, password=_password())
    try:
        return await Sealing(keyring).rewrap_all(engine)
    finally:
        await engine.dispose()


def rotate_key(args: argparse.Namespace) -> int:
    keyring = _keyring()
    done, already = asyncio.run(_rotate(_url(), keyring))
    print(f"record store: rewrapped {done} keys under master key {keyring.master_key_id} "
          f"({already} were already)")  # fmt: skip
    return 0


def verify(args: argparse.Namespace) -> int:
    report = asyncio.run(_verify(_url(), _keyring()))
    for problem in report.problems:
        print(f"FAILED entry {problem.seq}: {problem.kind}: {problem.message}")
    if not report.ok:
        print(f"audit trail: {len(report.problems)} problems in {report.entries} entries")
        return 1
    print(f"audit trail ok: {report.entries} entries, every hash and link verified")
    return 0


async def _export(url: str, query: TrailQuery) -> int:
    engine = open_engine(url, password=_password())
    count = 0
    try:
        while True:
            entries = await search(engine, query)
            for entry in entries:
                sys.stdout.write(msgspec.json.encode(entry).decode() + "\n")
            count += len(entries)
            if len(entries) < query.limit:
                return count
            query = msgspec.structs.replace(query, after=entries[-1].seq)
    finally:
        await engine.dispose()


def export(args: argparse.Namespace) -> int:
    query = TrailQuery(organisation=args.organisation, patient_ref=args.patient,
                       consult_id=args.consult, actor=args.actor, limit=1000)  # fmt: skip
    asyncio.run(_export(_url(), query))
    return 0


def _run(action: Any, args: argparse.Namespace) -> int:
    try:
        return action(args)
    except (ConfigError, MasterKeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not transient(exc) and not isinstance(exc, DatabaseUnavailable):
            raise
        print(f"error: the record store is unreachable ({type(exc).__name__})", file=sys.stderr)
        return 2


def add_audit_commands(subparsers: Any) -> None:
    records = subparsers.add_parser("records", help="the record store")
    commands = records.add_subparsers(dest="records_command", required=True)
    p = commands.add_parser("rotate-key", help="rewrap every key of the record store (consults' "
                            "and the audit chain's) under JISR_RECORDING_KEY, opening them with "
                            "it or JISR_RECORDING_OLD_KEYS")  # fmt: skip
    p.set_defaults(func=lambda args: _run(rotate_key, args))

    parser = subparsers.add_parser("audit", help="the audit trail in the record store")
    commands = parser.add_subparsers(dest="audit_command", required=True)
    p = commands.add_parser("verify", help="check the hash chain; name every entry changed, "
                            "removed or out of place (exit 1 if any)")  # fmt: skip
    p.set_defaults(func=lambda args: _run(verify, args))
    p = commands.add_parser("export", help="an organisation's trail as JSON lines")
    p.add_argument("--organisation", default="local")
    p.add_argument("--patient")
    p.add_argument("--consult")
    p.add_argument("--actor")
    p.set_defaults(func=lambda args: _run(export, args))
