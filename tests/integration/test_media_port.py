"""Media on one UDP port: every peer of a node on one shared socket, with real aiortc
clients exchanging media through it, and a second node beside it on its own port."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession

from signaling.app import create_app
from signaling.keys import MEDIA
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.integration.test_media_relay import start_consult
from tests.support.peers import JisrClient
from tests.support.udp import candidate_ports, free_udp_ports, udp_ports_of


async def test_a_consult_on_one_shared_port_beside_a_second_node(aiohttp_server, tokens):
    before = udp_ports_of()
    port, other_port = free_udp_ports(), free_udp_ports()
    apps = [
        create_app(make_settings(media_udp_port=p), store=MemoryStore())
        for p in (port, other_port)
    ]  # fmt: skip
    servers = [await aiohttp_server(app) for app in apps]
    bases = [str(server.make_url("")).rstrip("/") for server in servers]
    assert [app[MEDIA].udp_ports() for app in apps] == [
        {"127.0.0.1": port}, {"127.0.0.1": other_port},
    ]  # fmt: skip
    async with ClientSession() as http:
        session_id = await start_consult(http, bases[0], tokens)
        other_session = await start_consult(http, bases[1], tokens)
        referrer = JisrClient(http, bases[0], tokens.referrer)
        specialist = JisrClient(http, bases[0], tokens.specialist)
        observer = JisrClient(http, bases[0], tokens.supervisor)
        elsewhere = JisrClient(http, bases[1], tokens.referrer)
        clients = [referrer, specialist, observer, elsewhere]
        try:
            answers = []
            for client, session, media in (
                (referrer, session_id, {"publish": True}),
                (specialist, session_id, {"publish": True}),
                (observer, session_id, {"publish": False, "receive_pairs": 2}),
                (elsewhere, other_session, {"publish": True}),
            ):
                await client.connect()
                assert (await client.join(session))["type"] == "joined"
                reply = await client.start_media(**media)
                assert reply["type"] == "answer", reply
                answers.append(reply["sdp"])
            # Every host candidate the node offers carries its one port.
            assert [candidate_ports(sdp) for sdp in answers] == [
                {port}, {port}, {port}, {other_port},
            ]  # fmt: skip
            # Media flows both ways between the participants, and to the observer.
            for client, expected in ((referrer, 1), (specialist, 1), (observer, 2)):
                videos = client.by_kind("video")
                assert len(videos) == expected
                for received in videos:
                    await asyncio.wait_for(received.first.wait(), 15)
            # The nodes hold one UDP socket each; every other new one is a client's.
            client_ports = [p for c in clients for p in candidate_ports(c.pc.localDescription.sdp)]
            new = list(udp_ports_of())
            for existing in before:
                new.remove(existing)
            assert sorted(new) == sorted([port, other_port, *client_ports])
            assert apps[0][MEDIA].udp_stats()["peers"] == 3
        finally:
            for client in clients:
                await client.close()
