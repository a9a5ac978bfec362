"""Real aiortc peers exchanging real media with the server over loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import Tokens
from tests.support.peers import JisrClient, PatternVideoTrack

FPS = 15
WIDTH, HEIGHT = 320, 240


@pytest.fixture
async def server(aiohttp_server, settings):
    app = create_app(settings, store=MemoryStore())
    return await aiohttp_server(app)


async def start_consult(http: ClientSession, base: str, tokens: Tokens) -> str:
    consult = await (
        await http.post(
            f"{base}/api/consults",
            headers=tokens.header(tokens.referrer),
            json={
                "specialty": "cardiology",
                "urgency": "critical",
                "summary": "post-op tamponade?",
                "patient_ref": "P-1",
            },
        )
    ).json()
    accepted = await (
        await http.post(
            f"{base}/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
        )
    ).json()
    return accepted["session"]["id"]


async def test_participants_and_observer_exchange_media(server, tokens):
    base = str(server.make_url("")).rstrip("/")
    async with ClientSession() as http:
        session_id = await start_consult(http, base, tokens)
        referrer = JisrClient(http, base, tokens.referrer)
        specialist = JisrClient(http, base, tokens.specialist)
        observer = JisrClient(http, base, tokens.supervisor)
        clients = [referrer, specialist, observer]
        try:
            for client in clients:
                assert (await client.connect())["type"] == "welcome"
                assert (await client.join(session_id))["type"] == "joined"
            for client, shade in ((referrer, 40), (specialist, 200)):
                reply = await client.start_media(
                    publish=True, video=PatternVideoTrack(WIDTH, HEIGHT, FPS, shade)
                )
                assert reply["type"] == "answer"
            assert (await observer.start_media(publish=False, receive_pairs=2))["type"] == "answer"

            # Everyone's first video frame, then a 5 s measuring window.
            videos = {
                name: c.by_kind("video")
                for name, c in (
                    ("referrer", referrer),
                    ("specialist", specialist),
                    ("observer", observer),
                )
            }
            assert [len(v) for v in videos.values()] == [1, 1, 2]
            for received in [r for v in videos.values() for r in v]:
                await asyncio.wait_for(received.first.wait(), 15)
            start = time.monotonic() + 1.0  # past the first keyframes and encoder start
            await asyncio.sleep(6.0)  # the measuring window itself: media must flow for 5 s
            for name, received_list in videos.items():
                for received in received_list:
                    rate = received.rate(start, start + 5.0)
                    sizes = {(w, h) for t, w, h in received.frames if t >= start}
                    assert sizes == {(WIDTH, HEIGHT)}, (name, sizes)
                    assert rate >= 0.9 * FPS, (name, rate)
            for client, expected in ((referrer, 1), (specialist, 1), (observer, 2)):
                audio = client.by_kind("audio")
                assert len(audio) == expected
                assert all(len(a.frames) > 100 for a in audio)  # 20 ms frames over > 2 s

            # The observer may not send: an offer with a sending track is refused,
            # and its connection stays usable.
            intruder = JisrClient(http, base, tokens.supervisor)
            clients.append(intruder)
            await intruder.connect()
            await intruder.join(session_id)
            refused = await intruder.start_media(publish=True)
            assert refused["type"] == "error" and refused["code"] == "observer_cannot_send"
            assert (await intruder.request({"type": "ping"}))["type"] == "pong"
        finally:
            for client in clients:
                await client.close()
