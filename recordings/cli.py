"""``jisr recordings …``: key management, listing, export, verification, the audit
journal and retention.

Reads ``JISR_RECORDING_KEY`` (the master key file), ``JISR_RECORDING_OLD_KEYS``
(retired keys still unwrapped during a rotation), ``JISR_RECORDINGS_DIR`` and, for a
rotation, ``JISR_ATTACHMENTS_DIR``. Every export, verification, deletion and rotation
is written to the audit trail (structlog, ``jisr.audit``, on standard error); exports
and verifications also to the recording's journal, which the server relays into its
own audit log (recordings.trail).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

from .crypto import MasterKeyError, TamperedError, generate_key_file, load_master_key
from .keyring import Keyring, Shelf
from .layout import check_id
from .storage import FileStorage
from .tracks import RENDITIONS, SCREEN, media_participants, media_screens, rendition_tracks
from .vault import NoMedia, RecordingNotFound, Vault
from .verify import OK, TAMPERED, verify_many

ATTACHMENTS_DIR = "var/attachments"  # the server's default JISR_ATTACHMENTS_DIR


class _ConfigError(Exception):
    pass


def _audit_log(event: str, /, **fields: Any) -> None:
    reason = fields.get("reason")
    if isinstance(reason, str):
        # An operator's --reason is free text: the sealed journal keeps it; a log line
        # only its length and a short hash, as the server's relayed line does.
        sha256 = hashlib.sha256(reason.encode("utf-8", "replace")).hexdigest()[:16]
        fields["reason"] = {"chars": len(reason), "sha256": sha256}
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
    return Vault(FileStorage(root), keyring, origin="cli")


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
        if rec["state"] == TAMPERED:
            check = rec["verification"]
            print(f"  verified {_when(check['verified_at'])}: {_failures(check['failures'])}")
    return 0


def _failures(failures: list[dict]) -> str:
    return ", ".join(f"segment {f['segment']} {f['reason']}" for f in failures)


def _renditions(vault: Vault, args: argparse.Namespace) -> list[str | None]:
    """What to write: the whole recording (None), one rendition, or each
    participant's camera and microphone and each shared screen."""
    if args.participant:
        return [args.participant]
    if not args.per_participant:
        return [None]
    tracks = vault.tracks(args.recording_id)
    screens = [f"{slot}-{SCREEN}" for slot in media_screens(tracks)]
    renditions = [*media_participants(tracks), *screens]
    if not renditions:
        raise NoMedia(f"recording {args.recording_id} holds no participant's media")
    return renditions


def export(args: argparse.Namespace) -> int:
    """The whole recording as one multi-track file, or with ``--participant`` one
    rendition, or with ``--per-participant`` one file per rendition, named after
    FILE (``review.webm`` → ``review-referrer.webm``). Each file is audited."""
    check_id(args.recording_id)
    vault, target = _vault(), Path(args.file)
    for rendition in _renditions(vault, args):
        path = target
        if rendition is not None and args.per_participant:
            path = target.with_name(f"{target.stem}-{rendition}{target.suffix}")
        written = _export_one(vault, args, path, rendition)
        print(f"exported {args.recording_id}{f' ({rendition})' if rendition else ''} to {written}")
    return 0


def _export_one(vault: Vault, args: argparse.Namespace, path: Path, rendition: str | None) -> Path:
    fields: dict[str, Any] = {"actor": _actor(), "reason": args.reason}
    if rendition is None:
        return vault.export(args.recording_id, path, audit=_audit_log, **fields)
    try:
        return vault.export(
            args.recording_id, path, audit=_audit_log, tracks=rendition_tracks(rendition),
            participant=rendition, **fields,
        )  # fmt: skip
    except NoMedia:
        slot, _, screen = rendition.partition("-")
        what = "shared screen" if screen else "media"
        raise NoMedia(f"recording {args.recording_id} holds no {what} of the {slot}") from None


def verify(args: argparse.Namespace) -> int:
    """Check every segment's authentication, without writing any plaintext; mark
    what fails as tampered. Exit 0: all verified; 1: something failed (or could not
    be opened); 2: a bad or unknown id (then nothing is verified)."""
    vault = _vault()
    ids = [check_id(recording_id) for recording_id in args.recording_ids] or None
    for recording_id in ids or ():
        if not vault.keyring.has("recording", recording_id):
            raise RecordingNotFound(f"recording {recording_id} does not exist (or was deleted)")
    summary = verify_many(vault, ids, audit=_audit_log, actor=_actor())
    for check in summary.verified:
        line = f"{check.recording_id:<24} {check.result:<10}"
        if check.result == OK:
            print(f"{line} {check.segments} segment(s) authenticated")
        elif check.result == TAMPERED:
            print(f"{line} {_failures([f.public() for f in check.failures])}")
        else:
            print(f"{line} {check.error}")
    print(
        f"verified {len(summary.verified)} recording(s): {summary.count(OK)} ok, "
        f"{summary.count(TAMPERED)} tampered, {summary.count('unreadable')} unreadable"
    )
    return 0 if summary.clean else 1


def trail(args: argparse.Namespace) -> int:
    """The recording's audit journal, oldest first."""
    events = _vault().trail.events(check_id(args.recording_id))
    for entry in events:
        if args.json:
            print(json.dumps(entry, sort_keys=True, default=str))
            continue
        actor = entry.get("actor") or entry.get("by") or {}
        who = actor.get("sub", "-") if isinstance(actor, dict) else str(actor)
        extra = f" {entry['participant']}" if entry.get("participant") else ""
        print(
            f"{_when(entry.get('at')):<21} {entry['event']:<26} {entry.get('outcome', '-'):<7} "
            f"{who}{extra} ({entry['origin'] if 'origin' in entry else '-'})"
        )
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
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--participant", choices=RENDITIONS,
        help="only this participant's camera and microphone (or <slot>-screen: their "
        "shared screen)",
    )  # fmt: skip
    which.add_argument(
        "--per-participant", action="store_true",
        help="one file per participant (camera and microphone) and per shared screen, "
        "named FILE-<participant>",
    )  # fmt: skip
    p = command(
        "verify", verify,
        "check every segment's authentication (all recordings, or those named); mark "
        "failures as tampered",
    )  # fmt: skip
    p.add_argument("recording_ids", nargs="*", metavar="ID")
    p = command("trail", trail, "print a recording's audit journal")
    p.add_argument("recording_id")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = command("list", list_recordings, "list recordings")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = command("purge", purge, "delete recordings older than the retention period")
    p.add_argument("--older-than-days", required=True, type=float, metavar="N")
    return parser
