"""The case packet: checked by content and size, encrypted at rest, shown only to
those who may see it; refused files leave nothing behind."""

from __future__ import annotations

import urllib.parse

import pytest

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import make_settings

NEW = {"specialty": "cardiology", "urgency": "critical", "summary": "ECG", "patient_ref": "P-5"}
PDF = b"%PDF-1.7\n" + b"ECG trace 12-lead " * 50 + b"\n%%EOF"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key,
        attachments_dir=tmp_path / "attachments",
        max_attachment_bytes=4096,
        recordings_dir=tmp_path / "recordings",
    )
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))
    client.folder = tmp_path / "attachments"
    return client


async def upload(client, tokens, consult_id, data, name, kind, token=None):
    return await client.post(
        f"/api/consults/{consult_id}/attachments", data=data,
        headers={**tokens.header(token or tokens.referrer), "Content-Type": kind,
                 "X-Filename": urllib.parse.quote(name)},
    )  # fmt: skip


async def test_attach_view_and_encrypted_at_rest(client, tokens):
    consult = await (await client.post(
        "/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    added = await upload(client, tokens, consult["id"], PDF, "ecg 12 lead.pdf", "application/pdf")
    assert added.status == 201
    entry = await added.json()
    assert (entry["content_type"], entry["filename"], entry["size"]) == (
        "application/pdf",
        "ecg 12 lead.pdf",
        len(PDF),
    )
    for path in client.folder.rglob("*"):
        if path.is_file():
            assert b"%PDF" not in path.read_bytes() and b"ECG trace" not in path.read_bytes()

    url = f"/api/consults/{consult['id']}/attachments/{entry['id']}"
    before_accept = await client.get(url, headers=tokens.header(tokens.specialist))
    assert before_accept.status == 404  # only the accepting specialist sees the packet
    await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
    )
    for token in (tokens.specialist, tokens.supervisor, tokens.referrer):
        shown = await client.get(url, headers=tokens.header(token))
        assert shown.status == 200 and await shown.read() == PDF
        assert shown.headers["Content-Type"] == "application/pdf"
    assert (await client.get(url, headers=tokens.header(tokens.other_referrer))).status == 404


@pytest.mark.parametrize(
    "data, name, kind, status, code",
    [
        (PDF + b"x" * 5000, "big.pdf", "application/pdf", 413, "too_large"),
        (b"MZ\x90\x00" + b"\x00" * 200, "ecg.pdf", "application/pdf", 415, "unsupported_type"),
        (b"\x7fELF" + b"\x00" * 200, "scan.png", "image/png", 415, "unsupported_type"),
        (PNG, "ecg.pdf", "application/pdf", 415, "unsupported_type"),
    ],
)
async def test_refused_files_store_nothing(client, tokens, data, name, kind, status, code):
    consult = await (await client.post(
        "/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    refused = await upload(client, tokens, consult["id"], data, name, kind)
    assert refused.status == status
    assert (await refused.json())["error"]["code"] == code
    assert not any(p.is_file() for p in client.folder.rglob("*"))
    stored = await (await client.get(
        f"/api/consults/{consult['id']}", headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    assert stored.get("attachments", []) == []


async def test_only_the_referring_facility_attaches(client, tokens):
    consult = await (await client.post(
        "/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    for token, status in ((tokens.specialist, 403), (tokens.supervisor, 403)):
        refused = await upload(
            client, tokens, consult["id"], PDF, "x.pdf", "application/pdf", token
        )
        assert refused.status == status
