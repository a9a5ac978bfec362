"""``jisr recordings …``: key management, listing, export and retention.

Reads ``JISR_RECORDING_KEY`` (the master key file), ``JISR_RECORDING_OLD_KEYS``
(retired keys still unwrapped during a rotation), ``JISR_RECORDINGS_DIR`` and, for a
rotation, ``JISR_ATTACHMENTS_DIR``. Every export, deletion and rotation is written to
the audit trail (structlog, ``jisr.audit``).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import socket
import sys
from typing import Any

import structlog

from .crypto import MasterKeyError, TamperedError, generate_key_file, load_master_key
from .keyring import Keyring, Shelf
from .storage import FileStorage
from .vault import RecordingNotFound, Vault

ATTACHMENTS_DIR = "var/attachments"  # the server's default JISR_ATTACHMENTS_DIR


class _ConfigError(Exception):
    pass


def _audit_log(event: str, /, **fields: Any) -> None:
    structlog.get_logger("jisr.audit").info(event, audit=True, **fields)


def _configure_logging() -> None:
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),  # stdout is the output
    )


def _actor() -> dict:
    return {"sub": f"cli:{getpass.getuser()}", "host": socket.gethostname(), "via": "cli"}


def _keyring() -> Keyring:
    key_file = os.environ.get("JISR_RECORDING_KEY")
    if not key_file:
        raise _ConfigError("JISR_RECORDING_KEY is not set: the path of the recording key file")
    old = [p.strip() for p in os.environ.get("JISR_RECORDING_OLD_KEYS", "").split(",")]
    return Keyring(load_master_key(key_file), retired=[load_master_key(p) for p in old if p])


def _vault(keyring: Keyring | None = None) -> Vault:
    keyring = keyring or _keyring()
    root = os.environ.get("JISR_RECORDINGS_DIR")
    if not root:
        raise _ConfigError("JISR_RECORDINGS_DIR is not set: the directory recordings live in")
    return Vault(FileStorage(root), keyring)


def _signin_shelf() -> Shelf:
    """The pages' web sessions seal provider tokens with a key kept beside the
    attachments (signaling.app.open_signin)."""
    root = os.environ.get("JISR_ATTACHMENTS_DIR") or ATTACHMENTS_DIR
    return Shelf("signin", FileStorage(root), "signin.key")


def _attachments_shelf() -> Shelf:
    """The case packet's keys (signaling.attachments): ``<id>/key`` under
    JISR_ATTACHMENTS_DIR, the server's default when unset."""
    root = os.environ.get("JISR_ATTACHMENTS_DIR") or ATTACHMENTS_DIR
    return Shelf("attachment", FileStorage(root), "key")


def _run(action: Any, args: argparse.Namespace) -> int:
    _configure_logging()
    try:
        return action(args)
    except (_ConfigError, MasterKeyError, RecordingNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TamperedError as exc:
        print(f"error: verification failed, nothing was written: {exc}", file=sys.stderr)
        return 1


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def init_key(args: argparse.Namespace) -> int:
    key = generate_key_file(args.file)
    print(f"wrote a new recording master key to {args.file} (key id {key.key_id})")
    return 0


def list_recordings(args: argparse.Namespace) -> int:
    recordings = _vault().list()
    if args.json:
        for rec in recordings:
            print(json.dumps(rec, sort_keys=True))
        return 0
    print(f"{'ID':<24} {'STATE':<12} {'STARTED':<21} {'DURATION':>9} {'SEGMENTS':>8}")
    for rec in recordings:
        duration = rec.get("duration_s")
        shown = "-" if duration is None else f"{duration:.0f}s"
        print(
            f"{rec['recording_id']:<24} {rec['state']:<12} {_when(rec.get('started_at')):<21} "
            f"{shown:>9} {rec.get('segments', '-'):>8}"
        )
        if "error" in rec:
            print(f"  {rec['error']}")
    return 0


def export(args: argparse.Namespace) -> int:
    path = _vault().export(
        args.recording_id, args.file, audit=_audit_log, actor=_actor(), reason=args.reason
    )
    print(f"exported {args.recording_id} to {path}")
    return 0


def purge(args: argparse.Namespace) -> int:
    purged = _vault().purge_older_than(args.older_than_days, audit=_audit_log, actor=_actor())
    print(f"deleted {len(purged)} recording(s) older than {args.older_than_days} days")
    for recording_id in purged:
        print(f"  {recording_id}")
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    """Rewrap every data key of the keyring (recordings and attachments) under the
    new key, or under JISR_RECORDING_KEY when no new key is given (the keys still
    wrapped by JISR_RECORDING_OLD_KEYS)."""
    keyring = _keyring()
    _vault(keyring)
    keyring.add_shelf(_attachments_shelf())
    keyring.add_shelf(_signin_shelf())
    new_key = load_master_key(args.new_key) if args.new_key else None
    old_id = keyring.master_key_id
    report = keyring.rotate(new_key or load_master_key(os.environ["JISR_RECORDING_KEY"]))
    _audit_log(
        "recordings.key_rotated", actor=_actor(), old_key_id=old_id,
        new_key_id=report.new_key_id, rewrapped=report.count,
        by_kind={kind: len(ids) for kind, ids in report.rewrapped.items()},
    )  # fmt: skip
    for kind, ids in report.rewrapped.items():
        print(
            f"{kind} keys: {len(ids)} rewrapped, {report.already[kind]} already under "
            f"{report.new_key_id}"
        )
        for owner_id in ids:
            print(f"  {owner_id}")
    print(f"rewrapped {report.count} key(s) in all to master key {report.new_key_id}.")
    if new_key is not None:
        print(
            f"Point JISR_RECORDING_KEY at {args.new_key} and JISR_RECORDING_OLD_KEYS at the "
            "old key file, restart every node, run `jisr recordings rotate-key` again to "
            "catch objects created meanwhile, then destroy the old key file."
        )
    else:
        print("Once no node lists the old key in JISR_RECORDING_OLD_KEYS, destroy its file.")
    return 0


def add_recordings_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``recordings`` and its subcommands to an argparse subparsers object; each
    sets ``func(args) -> exit status``."""
    parser = subparsers.add_parser("recordings", help="manage encrypted recordings")
    commands = parser.add_subparsers(dest="recordings_command", required=True)

    def command(name: str, action: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(func=lambda args: _run(action, args))
        return sub

    p = command("init-key", init_key, "write a new random master key file (mode 0600)")
    p.add_argument("file")
    p = command(
        "rotate-key", rotate_key,
        "rewrap every data key (recordings, attachments) under a new master key",
    )  # fmt: skip
    p.add_argument(
        "--new-key", metavar="FILE",
        help="the new master key (default: JISR_RECORDING_KEY, finishing a rotation "
        "from JISR_RECORDING_OLD_KEYS)",
    )  # fmt: skip
    p = command("export", export, "write one recording as a playable WebM/Matroska file")
    p.add_argument("recording_id")
    p.add_argument("file")
    p.add_argument("--reason", default=None, help="why (kept in the audit trail)")
    p = command("list", list_recordings, "list recordings")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = command("purge", purge, "delete recordings older than the retention period")
    p.add_argument("--older-than-days", required=True, type=float, metavar="N")
    return parser
