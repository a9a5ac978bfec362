"""Redis dies mid-session: media keeps flowing, state calls get a clear 503 at once,
and everything recovers by itself when Redis is back, with nothing lost (AOF)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import ClientSession

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.store import RedisStore, StoreUnavailable
from tests.integration.test_media_relay import start_consult
from tests.redis_server import RedisServer
from tests.support.peers import JisrClient

NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "valve", "patient_ref": "P-8"}


async def poll(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)  # polling a recovering service, bounded by the deadline
    raise AssertionError(f"timed out waiting for {what}")


async def test_session_survives_redis_restart(aiohttp_server, settings, tokens):
    with RedisServer(persistent=True) as redis:
        server = await aiohttp_server(
            create_app(settings.model_copy(update={"node_heartbeat_s": 0.5}),
                       store=RedisStore(redis.url))
        )  # fmt: skip
        base = str(server.make_url("")).rstrip("/")
        async with ClientSession() as http:
            session_id = await start_consult(http, base, tokens)
            referrer = JisrClient(http, base, tokens.referrer)
            specialist = JisrClient(http, base, tokens.specialist)
            watcher = JisrClient(http, base, tokens.other_specialist)
            try:
                for client in (referrer, specialist):
                    await client.connect()
                    await client.join(session_id)
                    await client.start_media(publish=True)
                video = specialist.by_kind("video")[0]
                await asyncio.wait_for(video.first.wait(), 15)
                await watcher.connect()

                redis.kill()
                started = time.monotonic()
                response = await http.post(
                    f"{base}/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
                )
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "store_unavailable"
                assert time.monotonic() - started < 5  # a clear answer, never a hang
                assert (await http.get(f"{base}/readyz")).status == 503
                frames = len(video.frames)
                await asyncio.sleep(2)  # media keeps flowing while Redis is down
                assert len(video.frames) >= frames + 20  # 15 fps for 2 s, with margin

                redis.restart()

                async def ready():
                    return (await http.get(f"{base}/readyz")).status == 200

                await poll(ready, 15, "readiness after Redis returns")
                session = await (await http.get(
                    f"{base}/api/sessions/{session_id}", headers=tokens.header(tokens.referrer)
                )).json()  # fmt: skip
                assert session["state"] == "live"  # nothing lost across the restart

                async def pushed():
                    created = await http.post(
                        f"{base}/api/consults", json=NEW, headers=tokens.header(tokens.referrer)
                    )
                    assert created.status == 201
                    consult_id = (await created.json())["id"]
                    try:
                        await watcher.expect(
                            lambda m: m.get("consult", {}).get("id") == consult_id, timeout=1
                        )
                        return True
                    except TimeoutError:
                        return False  # events not resubscribed yet

                await poll(pushed, 20, "live pushes after Redis returns")
            finally:
                for client in (referrer, specialist, watcher):
                    await client.close()


async def test_recording_state_changed_while_redis_is_down_is_saved_when_it_returns(
    aiohttp_server, settings, tokens, tmp_path
):
    """The recording's state goes with the session into Redis (so that another node
    can continue the recording if this one dies); a change made while Redis is down
    reaches it with the first heartbeat after Redis is back."""
    key = tmp_path / "master.key"
    generate_key_file(key)
    node_settings = settings.model_copy(update={
        "node_heartbeat_s": 0.5, "recording_key": key, "recordings_dir": tmp_path / "rec",
    })  # fmt: skip
    with RedisServer(persistent=True) as redis:
        server = await aiohttp_server(create_app(node_settings, store=RedisStore(redis.url)))
        base = str(server.make_url("")).rstrip("/")
        reader = RedisStore(redis.url)  # what another node would read
        await reader.start()
        async with ClientSession() as http:
            session_id = await start_consult(http, base, tokens)
            referrer = JisrClient(http, base, tokens.referrer)
            specialist = JisrClient(http, base, tokens.specialist)
            try:
                for client in (referrer, specialist):
                    await client.connect()
                    await client.join(session_id)
                asked = await specialist.request({"type": "recording.request"})
                assert asked["type"] == "recording.ok", asked
                await referrer.expect(
                    lambda m: m["type"] == "recording.state" and m["state"] == "requested"
                )
                assert (await reader.get_session(session_id))["recording"]["state"] == "requested"

                redis.kill()
                consented = await referrer.request({"type": "recording.consent", "consent": True})
                assert consented["type"] == "recording.ok", consented  # Redis is not needed
                started = await specialist.expect(
                    lambda m: m["type"] == "recording.state" and m["state"] == "recording"
                )
                redis.restart()

                async def saved():
                    try:
                        session = await reader.get_session(session_id)
                    except StoreUnavailable:
                        return None  # the reader's own connection is still coming back
                    return session["recording"]["state"] == "recording" and session["recording"]

                snapshot = await poll(saved, 15, "the recording state saved after Redis returns")
                assert snapshot["recording_id"] == started["recording_id"]
            finally:
                for client in (referrer, specialist):
                    await client.close()
                await reader.close()
