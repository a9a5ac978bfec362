"""The case packet: checked by content and size, encrypted at rest, shown only to
those who may see it; refused files leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
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


# large files: streamed to disk as they arrive, never cut short --------------------

MIB = 1024 * 1024


def big_file(kind: str, size: int) -> bytes:
    """A file of ``size`` bytes that sniffs as ``kind``, with content that differs
    everywhere (a cut or a reordered chunk changes its hash)."""
    head = {"application/pdf": b"%PDF-1.7\n", "image/png": PNG[:8]}[kind]
    body = os.urandom(size - len(head))
    return head + body


@pytest.fixture
async def roomy(aiohttp_client, tmp_path):
    """A real server with the default attachment limit (20 MiB)."""
    key = tmp_path / "master.key"
    generate_key_file(key)
    settings = make_settings(
        recording_key=key, attachments_dir=tmp_path / "attachments",
        recordings_dir=tmp_path / "recordings",
    )  # fmt: skip
    assert settings.max_attachment_bytes == 20 * MIB
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))
    client.folder = tmp_path / "attachments"
    return client


async def new_consult(client, tokens) -> dict:
    created = await client.post("/api/consults", json=NEW, headers=tokens.header(tokens.referrer))
    assert created.status == 201
    return await created.json()


async def trickle(data: bytes, piece: int = 256 * 1024):
    """A chunked body that arrives piece by piece, as over a slow link."""
    for start in range(0, len(data), piece):
        await asyncio.sleep(0)
        yield data[start : start + piece]


@pytest.mark.parametrize(
    "size, kind, chunked",
    [
        (5 * MIB, "image/png", False),
        (5 * MIB, "application/pdf", True),
        (19 * MIB, "application/pdf", False),
        (19 * MIB, "image/png", True),
    ],
)
async def test_large_files_round_trip_byte_identical(roomy, tokens, size, kind, chunked):
    consult = await new_consult(roomy, tokens)
    data = big_file(kind, size)
    body = trickle(data) if chunked else data
    added = await upload(roomy, tokens, consult["id"], body, "scan", kind)
    assert added.status == 201, await added.text()
    entry = await added.json()
    assert entry["size"] == size
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    stored = sum(p.stat().st_size for p in roomy.folder.rglob("*") if p.is_file())
    assert stored > size  # the whole file, encrypted (tags and headers on top)
    shown = await roomy.get(
        f"/api/consults/{consult['id']}/attachments/{entry['id']}",
        headers=tokens.header(tokens.referrer),
    )
    assert shown.status == 200
    assert await shown.read() == data


async def test_oversized_chunked_upload_is_refused_and_nothing_is_stored(roomy, tokens):
    consult = await new_consult(roomy, tokens)
    refused = await upload(
        roomy, tokens, consult["id"], trickle(big_file("application/pdf", 25 * MIB)),
        "huge.pdf", "application/pdf",
    )  # fmt: skip
    assert refused.status == 413
    assert (await refused.json())["error"]["code"] == "too_large"
    assert not any(p.is_file() for p in roomy.folder.rglob("*"))
    stored = await (await roomy.get(
        f"/api/consults/{consult['id']}", headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    assert stored.get("attachments", []) == []


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_upload_cut_by_the_client_stores_nothing(roomy, tokens, chunked):
    consult = await new_consult(roomy, tokens)
    data = big_file("application/pdf", 5 * MIB)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(data)}"
    head = (
        f"POST /api/consults/{consult['id']}/attachments HTTP/1.1\r\n"
        f"Host: {roomy.host}\r\nAuthorization: Bearer {tokens.referrer}\r\n"
        f"Content-Type: application/pdf\r\nX-Filename: ecg.pdf\r\n{framing}\r\n\r\n"
    ).encode()
    part = data[: 2 * MIB]
    body = f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part
    reader, writer = await asyncio.open_connection(roomy.host, roomy.port)
    writer.write(head + body)
    await writer.drain()
    # The server is writing the encrypted file as the bytes come...
    await wait_for(lambda: any(p.name.endswith(".part") for p in roomy.folder.rglob("*")))
    writer.close()  # ...and the client goes away mid-body
    await wait_for(lambda: not any(p.is_file() for p in roomy.folder.rglob("*")))
    stored = await (await roomy.get(
        f"/api/consults/{consult['id']}", headers=tokens.header(tokens.referrer)
    )).json()  # fmt: skip
    assert stored.get("attachments", []) == []
    # and it serves the next upload as usual
    added = await upload(roomy, tokens, consult["id"], PDF, "ecg.pdf", "application/pdf")
    assert added.status == 201
