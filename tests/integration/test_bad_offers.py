"""A real aiortc peer's offer, spoiled one way at a time, through a real server: each
is refused with its coded error, nothing of it lingers (no task dies unseen), and
the connection keeps serving, down to a correct offer that connects."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import ClientSession

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.integration.test_media_relay import start_consult
from tests.support.peers import JisrClient


@pytest.fixture
async def server(aiohttp_server, settings):
    return await aiohttp_server(create_app(settings, store=MemoryStore()))


def without(prefix: str):
    return lambda sdp: "".join(line for line in sdp.splitlines(True) if not line.startswith(prefix))


def no_codec_we_answer(sdp: str) -> str:
    return re.sub(r"a=rtpmap:(\d+) [^/\r\n]+/", r"a=rtpmap:\1 x-unknown/", sdp)


SPOILED = [
    (without("a=fingerprint"), "no DTLS fingerprint (a=fingerprint)"),
    (without("a=ice-ufrag"), "no ICE username fragment (a=ice-ufrag)"),
    (without("a=ice-pwd"), "no ICE password (a=ice-pwd)"),
    (no_codec_we_answer, "offers no codec this server can answer"),
    (lambda sdp: re.sub(r"(m=\w+) \d+", r"\1 0", sdp), "every m-line of the offer is disabled"),
]


async def test_spoiled_offers_and_candidates_get_coded_errors(server, tokens):
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        client = JisrClient(http, base, tokens.referrer)
        try:
            assert (await client.connect())["type"] == "welcome"
            assert (await client.join(session_id))["type"] == "joined"
            for munge, says in SPOILED:
                refused = await client.start_media(publish=True, munge=munge)
                assert (refused["type"], refused["code"]) == ("error", "bad_sdp"), refused
                assert says in refused["message"]
                assert (await client.request({"type": "ping"}))["type"] == "pong"
                await client.pc.close()

            # A candidate before any offer was answered has no connection to go to.
            line = "candidate:1 1 udp 2122194687 127.0.0.1 5000 typ host"
            early = await client.request({"type": "candidate", "candidate": {"candidate": line}})
            assert early["code"] == "not_joined"

            connected = asyncio.Event()
            answer = await client.start_media(publish=True)
            assert answer["type"] == "answer"
            client.pc.on("connectionstatechange", lambda: (
                client.pc.connectionState == "connected" and connected.set()
            ))  # fmt: skip
            for candidate, says in (
                ({"candidate": line}, "names no m-line"),
                ({"candidate": line, "sdpMid": "9"}, "sdpMid '9' names no m-line"),
                ({"candidate": line, "sdpMLineIndex": 7}, "sdpMLineIndex 7 names no m-line"),
                ({"candidate": "candidate:1 1 udp", "sdpMid": "0"}, "cannot be parsed"),
                ({"candidate": line.replace("5000", "70000"), "sdpMid": "0"}, "port outside"),
            ):
                refused = await client.request({"type": "candidate", "candidate": candidate})
                assert (refused["type"], refused["code"]) == ("error", "bad_candidate"), refused
                assert says in refused["message"]
            assert (await client.request({"type": "ping"}))["type"] == "pong"
            if client.pc.connectionState != "connected":
                await asyncio.wait_for(connected.wait(), 15)
        finally:
            await client.close()
