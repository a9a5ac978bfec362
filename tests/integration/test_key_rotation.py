"""Rotating the master key with `jisr recordings rotate-key` (the real command)
rewraps every data key, recordings' and attachments' alike: after the old key file
is destroyed, a node with the new key still opens every recording and attachment,
and a node left with a key that wraps nothing answers a coded error, never 500."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from recordings.crypto import generate_key_file, load_master_key
from recordings.storage import FileStorage
from recordings.vault import Vault
from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.integration.test_attachments import NEW, PDF, PNG, upload
from tests.unit.test_vault import probe, record

RECORDING = "r_rotation01"


def rotate(env: dict, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "recordings", "rotate-key", *argv],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


async def start_node(aiohttp_client, store, key, folders):
    settings = make_settings(recording_key=key, **folders)
    return await aiohttp_client(create_app(settings, store=store))


async def opens_everything(node, tokens, consult_id, files) -> None:
    for attachment_id, data in files.items():
        shown = await node.get(
            f"/api/consults/{consult_id}/attachments/{attachment_id}",
            headers=tokens.header(tokens.referrer),
        )
        assert shown.status == 200 and await shown.read() == data
    played = await node.get(
        f"/api/recordings/{RECORDING}/media", headers=tokens.header(tokens.supervisor)
    )
    assert played.status == 200
    assert probe(await played.read())["frames"] > 0


async def test_rotation_keeps_every_recording_and_attachment_readable(
    aiohttp_client, tmp_path, tokens
):
    old_key, new_key, stranger = (tmp_path / n for n in ("old.key", "new.key", "other.key"))
    for key in (old_key, new_key, stranger):
        generate_key_file(key)
    folders = {"recordings_dir": tmp_path / "recordings", "attachments_dir": tmp_path / "files"}
    store = MemoryStore()  # the consults outlive the nodes, as in Redis

    # Before: attachments uploaded through a node, a recording in the vault.
    node = await start_node(aiohttp_client, store, old_key, folders)
    consult = await (await node.post(
        "/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    files = {}
    for data, kind in ((PDF, "application/pdf"), (PNG, "image/png")):
        added = await upload(node, tokens, consult["id"], data, "f", kind)
        assert added.status == 201
        files[(await added.json())["id"]] = data
    vault = Vault(FileStorage(folders["recordings_dir"]), load_master_key(old_key))
    record(vault, RECORDING, segments=2, started_at=time.time())  # within retention
    await opens_everything(node, tokens, consult["id"], files)
    await node.close()

    env = {
        "JISR_RECORDING_KEY": str(old_key),
        "JISR_RECORDINGS_DIR": str(folders["recordings_dir"]),
        "JISR_ATTACHMENTS_DIR": str(folders["attachments_dir"]),
    }
    said = rotate(env, "--new-key", str(new_key))
    new_id = load_master_key(new_key).key_id
    assert f"recording keys: 1 rewrapped, 0 already under {new_id}" in said
    assert f"attachment keys: 2 rewrapped, 0 already under {new_id}" in said
    assert RECORDING in said and all(attachment_id in said for attachment_id in files)
    # Run again with the new key in place: nothing is left to do.
    again = rotate({**env, "JISR_RECORDING_KEY": str(new_key)})
    assert "rewrapped 0 key(s)" in again and "2 already under" in again
    old_key.unlink()  # as the procedure says: the old key is destroyed

    node = await start_node(aiohttp_client, store, new_key, folders)
    await opens_everything(node, tokens, consult["id"], files)
    await node.close()

    # A node given a key that wraps none of it answers a coded error, never 500.
    node = await start_node(aiohttp_client, store, stranger, folders)
    shown = await node.get(
        f"/api/consults/{consult['id']}/attachments/{next(iter(files))}",
        headers=tokens.header(tokens.referrer),
    )
    assert shown.status == 503
    assert (await shown.json())["error"]["code"] == "key_unavailable"
    for path in ("", "/media"):
        played = await node.get(
            f"/api/recordings/{RECORDING}{path}", headers=tokens.header(tokens.supervisor)
        )
        assert played.status == 503
        assert (await played.json())["error"]["code"] == "key_unavailable"
    await node.close()
