"""kill -9 of the node hosting a recorded session: when the participants come back
through a live node, the recording continues there as a new part of the same
recording, on the same timeline, and the export holds both parts."""

from __future__ import annotations

import asyncio
import signal
import time

import av
from aiohttp import ClientSession

from recordings.crypto import generate_key_file, load_master_key
from recordings.storage import FileStorage
from recordings.vault import Vault
from tests.integration.test_media_relay import start_consult
from tests.integration.test_node_loss import start_two_nodes, stop_nodes
from tests.integration.test_recording import published
from tests.integration.test_workers import wait_for_nodes
from tests.support.peers import JisrClient, PatternVideoTrack

SIZE = (320, 240)


async def join_and_publish(http, base, tokens, session_id) -> list[JisrClient]:
    """Both participants join through ``base`` and publish; each client keeps the
    recording state its ``joined`` message reported."""
    clients = []
    for token, shade in ((tokens.referrer, 60), (tokens.specialist, 200)):
        client = JisrClient(http, base, token)
        clients.append(client)
        await client.connect()
        joined = await client.join(session_id)
        assert joined["type"] == "joined", joined
        client.recording_on_join = joined["recording"]
        await client.start_media(publish=True, video=PatternVideoTrack(*SIZE, 30, shade))
    for client in clients:
        await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 15)
    return clients


async def session_state(http, base, tokens, session_id, wanted="interrupted") -> str:
    """The session's state as the API shows it, once it is ``wanted`` (or after 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        async with http.get(
            f"{base}/api/sessions/{session_id}", headers=tokens.header(tokens.supervisor)
        ) as response:
            state = (await response.json())["state"]
        if state == wanted or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)  # polling the API, bounded by the deadline


def is_recording(message: dict) -> bool:
    return message["type"] == "recording.state" and message["state"] == "recording"


async def test_recording_continues_as_a_new_part_after_kill_9(redis_url, tokens, tmp_path):
    key, folder = tmp_path / "master.key", tmp_path / "recordings"
    generate_key_file(key)
    recording = {"JISR_RECORDING_KEY": str(key), "JISR_RECORDINGS_DIR": str(folder),
                 "JISR_RECORDING_SEGMENT_S": "2"}  # fmt: skip
    nodes, base = start_two_nodes(redis_url, **recording)
    clients: list[JisrClient] = []
    try:
        await wait_for_nodes(redis_url, 2, nodes["n_a"])
        async with ClientSession() as http:
            session_id = await start_consult(http, base["n_a"], tokens)  # hosted on n_a
            referrer, specialist = await join_and_publish(http, base["n_a"], tokens, session_id)
            clients += [referrer, specialist]
            assert (await specialist.request({"type": "recording.request"}))["type"] == (
                "recording.ok"
            )
            await referrer.request({"type": "recording.consent", "consent": True})
            recording_id = (await referrer.expect(is_recording))["recording_id"]
            first_part = await published(folder, 2)  # about 4 s recorded on n_a

            nodes["n_a"].send_signal(signal.SIGKILL)
            nodes["n_a"].wait(10)
            for client in clients:
                await client.close()
            # Its heartbeat expires: the live node marks the session interrupted.
            assert (await session_state(http, base["n_b"], tokens, session_id)) == "interrupted"
            referrer, specialist = await join_and_publish(http, base["n_b"], tokens, session_id)
            clients += [referrer, specialist]
            # Consent is on record: back to recording without asking anyone again.
            for client in (referrer, specialist):
                state = client.recording_on_join
                assert (state["state"], state["recording_id"]) == ("recording", recording_id)
            assert (await session_state(http, base["n_b"], tokens, session_id, "live")) == "live"
            await published(folder, len(first_part) + 2)  # about 4 s more on n_b
            await referrer.request({"type": "recording.stop"})
            await specialist.expect(
                lambda m: m["type"] == "recording.state" and m["state"] == "stopped"
            )
    finally:
        await stop_nodes(nodes, clients)

    vault = Vault(FileStorage(folder), load_master_key(key))
    meta = vault.get(recording_id)
    assert meta["state"] == "complete"
    assert [p["node"] for p in meta["parts"]] == ["n_a", "n_b"]
    second_start = meta["parts"][1]["started_at"] - meta["started_at"]
    events = [e["event"] for e in meta["consent_record"]]
    assert "recording.continued" in events and events[-1] == "recording.stopped"
    assert {p["sub"] for p in meta["participants"]} == {"dr-amal", "dr-karim"}

    exported = vault.export(recording_id, tmp_path / "case.webm", audit=lambda *a, **k: None)
    with av.open(str(exported)) as container:
        videos = [s for s in container.streams if s.type == "video"]
        assert len(videos) == 2 and any(s.type == "audio" for s in container.streams)
    for index in range(2):
        with av.open(str(exported)) as reader:
            stream = reader.streams.video[index]
            times = [
                float(frame.pts * frame.time_base)
                for frame in reader.decode(stream)
                if frame.pts is not None and (frame.width, frame.height) == SIZE
            ]
        # Both parts decode, on one timeline: frames before the loss and after the
        # second part started, with the outage between them as a gap.
        assert sum(t < second_start - 0.5 for t in times) >= 30, (index, second_start)
        assert sum(t > second_start for t in times) >= 30, (index, second_start)
