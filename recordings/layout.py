"""How one recording lies in the storage: the names of its objects, and the
metadata fields and states that are the vault's own.

Objects of one recording::

    <id>/key.json           its data key wrapped by the master key (crypto.wrap_data_key)
    <id>/meta.enc           its metadata, JSON sealed with the data key
    <id>/seg-00000001.enc   its segments, each a Matroska/WebM file (crypto.SegmentWriter)
    <id>/play-<hash>.enc    a playback cache per rendition played (recordings.playback)
    <id>/verify.enc         its last verification, sealed with the data key (recordings.verify)
    <id>/trail-<time>-<random>-<origin>.enc
                            its audit journal: one event each, sealed with the data key
                            (recordings.trail)

and, beside the recordings (a name no recording id can take)::

    relay.inbox/<id>.trail-<time>-<random>-cli
                            an empty pointer to an event a ``jisr recordings`` command
                            journalled, until a server has written it to its audit log
"""

from __future__ import annotations

import re

RECORDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
KEY_OBJECT = "key.json"
META_OBJECT = "meta.enc"
SEGMENT = re.compile(r"seg-(\d{8})\.enc")
VERIFY_OBJECT = "verify.enc"
TRAIL = re.compile(r"trail-\d{20}-[0-9a-f]{8}-(node|cli)\.enc")
RELAY_INBOX = "relay.inbox"  # has a dot: never a recording id
FINAL_STATES = ("complete", "interrupted")
RESERVED_FIELDS = frozenset({"recording_id", "state", "segment_indices"})


def check_id(recording_id: str) -> str:
    if not isinstance(recording_id, str) or not RECORDING_ID.fullmatch(recording_id):
        raise ValueError(f"invalid recording id {recording_id!r}")
    return recording_id


def key_name(recording_id: str) -> str:
    return f"{recording_id}/{KEY_OBJECT}"


def meta_name(recording_id: str) -> str:
    return f"{recording_id}/{META_OBJECT}"


def segment_name(recording_id: str, index: int) -> str:
    return f"{recording_id}/seg-{index:08d}.enc"


def meta_ad(recording_id: str) -> bytes:
    """Associated data sealed with the metadata: it opens only as this recording's."""
    return b"jisr.meta.v1\0" + recording_id.encode()


def verify_name(recording_id: str) -> str:
    return f"{recording_id}/{VERIFY_OBJECT}"


def verify_ad(recording_id: str) -> bytes:
    return b"jisr.verify.v1\0" + recording_id.encode()
