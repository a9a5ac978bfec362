"""A real ``jisr serve`` process treated as a careless or hostile client would:
every line it writes is a JSON line and none carries a header value or text a user
typed; a client that drops mid-upload is an info line, not a traceback; requests
stalled in their headers or body are closed; a WebSocket client that stops reading
loses its connection for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import SECRET
from tests.integration.test_media_relay import start_consult
from tests.redis_server import free_port
from tests.support.peers import JisrClient

SECRET_MARK = "SECRETTOKENPART"
FREE_TEXT = "patient in theatre four until noon"
GENEROUS = "chat.user=100000/minute;message.user=100000/second;message.address=100000/second"


class Server:
    """``jisr serve`` on a free port, its stdout and stderr kept for reading."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out, self.err = tmp_path / "stdout.log", tmp_path / "stderr.log"
        full_env = {**os.environ, "JISR_PORT": str(self.port), "JISR_JWT_SECRET": SECRET,
                    "JISR_ICE_ADDRESSES": "127.0.0.1", **env}  # fmt: skip
        full_env.pop("JISR_REDIS_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "serve"], env=full_env,
            stdout=self.out.open("wb"), stderr=self.err.open("wb"),
        )  # fmt: skip

    async def ready(self, http: ClientSession) -> None:
        async with asyncio.timeout(20):
            while True:
                try:
                    if (await http.get(f"{self.base}/healthz")).status == 200:
                        return
                except OSError:
                    pass
                assert self.process.poll() is None, self.err.read_text()
                await asyncio.sleep(0.05)  # polling the starting server

    async def logged(self, event: str) -> None:
        """Wait until a line with ``event`` is on its stdout."""
        async with asyncio.timeout(10):
            while f'"event":"{event}"' not in self.out.read_text():
                await asyncio.sleep(0.05)  # polling the log file, bounded by the timeout

    def stop(self) -> tuple[list[str], list[str]]:
        """Stop it; every line it wrote to stdout and to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        return self.out.read_text().splitlines(), self.err.read_text().splitlines()


@pytest.fixture
async def http():
    async with ClientSession() as session:
        yield session


async def raw(port: int, data: bytes, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10) if read else b""
    writer.close()
    return answer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing the connection, which it must do within
    ``seconds``."""
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def test_every_line_is_json_and_keeps_headers_and_free_text_out(tmp_path, http, tokens):
    server = Server(tmp_path)
    try:
        await server.ready(http)
        long_header = b"Authorization: Bearer eyJ" + SECRET_MARK.encode() * 700 + b"\r\n"
        refused = await raw(
            server.port, b"GET /api/me HTTP/1.1\r\nHost: x\r\n" + long_header + b"\r\n"
        )
        assert refused.split(b" ")[1].startswith(b"4")
        bad_line = await raw(server.port, b"G\x00T /" + SECRET_MARK.encode() + b" HTTP/1.1\r\n\r\n")
        assert bad_line.split(b" ")[1].startswith(b"4")
        assert (await http.get(f"{server.base}/api/me?x={SECRET_MARK}",
                               headers=tokens.header(tokens.referrer))).status == 200  # fmt: skip
        consult = await (await http.post(
            f"{server.base}/api/consults", headers=tokens.header(tokens.referrer),
            json={"specialty": "cardiology", "urgency": "routine", "summary": FREE_TEXT,
                  "patient_ref": "P-1"},
        )).json()  # fmt: skip
        declined = await http.post(
            f"{server.base}/api/consults/{consult['id']}/decline",
            headers=tokens.header(tokens.specialist), json={"reason": FREE_TEXT},
        )  # fmt: skip
        assert declined.status == 200
        # a client dropping mid-body
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST /api/consults HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens.referrer}"
            '\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"a":'.encode()
        )
        await writer.drain()
        writer.close()
        await server.logged("http.client_gone")
    finally:
        out, err = server.stop()
    lines = [json.loads(line) for line in out + err]  # every line is JSON
    text = "\n".join(out + err)
    assert SECRET_MARK not in text and FREE_TEXT not in text
    events = [e["event"] for e in lines]
    assert "http.bad_request" in events  # aiohttp's refusals, as events
    access = [e for e in lines if e["event"] == "http.access"]
    assert access and all(set(e) >= {"method", "path", "status"} for e in access)
    assert not any("?" in e["path"] for e in access)
    decline = next(e for e in lines if e["event"] == "consult.declined")
    assert decline["note"]["chars"] == len(FREE_TEXT) and len(decline["note"]["sha256"]) == 16
    gone = [e for e in lines if e["event"] == "http.client_gone"]
    assert gone and gone[0]["level"] == "info" and "exception" not in gone[0]
    assert not [e for e in lines if "exception" in e or e["level"] == "error"]


async def test_stalled_requests_are_closed(tmp_path, http, tokens):
    server = Server(tmp_path, JISR_HTTP_IDLE_TIMEOUT_S="1", JISR_REQUEST_BODY_TIMEOUT_S="1")
    try:
        await server.ready(http)
        # stalled in its headers
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/me HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        await writer.drain()
        started = time.monotonic()
        await closed_within(reader, 5)
        assert time.monotonic() - started < 4
        writer.close()
        # stalled in its body
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST /api/consults HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens.referrer}"
            "\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{".encode()
        )
        await writer.drain()
        answer = await closed_within(reader, 5)
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
        writer.close()
    finally:
        server.stop()


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, 0x80 | size)
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    return head + mask + masked


async def test_a_websocket_client_that_stops_reading_is_cut_off(tmp_path, http, tokens):
    server = Server(tmp_path, JISR_RATE_LIMITS=GENEROUS)
    try:
        await server.ready(http)
        session_id = await start_consult(http, server.base, tokens)
        # The observer: signs in, joins, then reads nothing, with a small receive buffer.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                     b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        assert slow.recv(4096).startswith(b"HTTP/1.1 101")
        for message in ({"type": "auth", "token": tokens.supervisor},
                        {"type": "join", "session_id": session_id}):  # fmt: skip
            slow.sendall(ws_frame(json.dumps(message).encode()))
        speaker = JisrClient(http, server.base, tokens.referrer)
        await speaker.connect()
        assert (await speaker.join(session_id))["type"] == "joined"
        line = "x" * 2000
        for n in range(6000):  # about 12 MB of chat lines for the observer
            await speaker.send({"type": "chat", "text": line})
            if n % 500 == 0:
                await speaker.expect(lambda m: m.get("type") == "chat.ok")
        flooded = time.monotonic()
        slow.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(10):  # its socket is gone within 10 s
            while True:
                try:
                    if not await loop.sock_recv(slow, 65536):
                        break
                except ConnectionResetError:
                    break
        print(f"the slow reader's socket was gone {time.monotonic() - flooded:.1f} s later")
        await speaker.request({"type": "ping"})  # and the server still serves the others
        await speaker.close()
        slow.close()
    finally:
        server.stop()
