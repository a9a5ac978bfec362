"""The WebSocket protocol: pushes, and every refusal keeps the connection serving."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import WSMsgType

from signaling.app import create_app
from signaling.connection import BATCH_LIMIT, OUTBOX_LIMIT, Connection
from signaling.keys import HUB
from signaling.store import MemoryStore
from tests.conftest import Tokens

NEW = {
    "specialty": "cardiology",
    "urgency": "critical",
    "summary": "tamponade",
    "patient_ref": "P-1",
}


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings, store=MemoryStore()))


class Socket:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.seen: list[dict] = []  # every message received, matched or not

    async def next(self, predicate=lambda m: True, timeout: float = 5.0) -> dict:
        async def wait():
            while True:
                msg = await self.ws.receive()
                assert msg.type == WSMsgType.TEXT, msg
                data = json.loads(msg.data)
                self.seen.append(data)
                if predicate(data):
                    return data

        return await asyncio.wait_for(wait(), timeout)

    async def ask(self, message: dict) -> dict:
        await self.ws.send_json(message)
        return await self.next(lambda m: m.get("ref") == message.get("ref"))

    async def still_serving(self) -> None:
        assert (await self.ask({"type": "ping", "ref": "alive"}))["type"] == "pong"


async def connect(client, token: str | None) -> Socket:
    socket = Socket(await client.ws_connect("/ws"))
    if token is not None:
        welcome = await socket.ask({"type": "auth", "token": token, "ref": "a"})
        assert welcome["type"] == "welcome"
    return socket


async def accepted_session(client, tokens: Tokens) -> str:
    consult = await (
        await client.post("/api/consults", json=NEW, headers=tokens.header(tokens.referrer))
    ).json()
    body = await (
        await client.post(
            f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
        )
    ).json()
    return body["session"]["id"]


async def test_message_before_auth_is_refused_and_connection_kept(client, tokens):
    socket = await connect(client, None)
    error = await socket.ask({"type": "join", "session_id": "s_x", "ref": "j"})
    assert (error["type"], error["code"], error["ref"]) == ("error", "unauthenticated", "j")
    welcome = await socket.ask({"type": "auth", "token": tokens.referrer, "ref": "a"})
    assert welcome["user"]["role"] == "referrer"


async def test_malformed_json(client, tokens):
    socket = await connect(client, tokens.referrer)
    await socket.ws.send_str("{oops")
    error = await socket.next()
    assert (error["code"], error["ref"]) == ("bad_json", None)
    await socket.still_serving()


async def test_unknown_type(client, tokens):
    socket = await connect(client, tokens.referrer)
    error = await socket.ask({"type": "teleport", "ref": "t"})
    assert error["code"] == "unknown_type"
    await socket.still_serving()


async def test_schema_violation(client, tokens):
    socket = await connect(client, tokens.referrer)
    error = await socket.ask({"type": "join", "session_id": 42, "ref": "j"})
    assert error["code"] == "bad_request" and "session_id" in error["message"]
    await socket.still_serving()


async def test_oversized_message(client, tokens, settings):
    socket = await connect(client, tokens.referrer)
    error = await socket.ask({"type": "offer", "sdp": "x" * settings.max_message_bytes, "ref": "o"})
    assert error["code"] == "too_large"
    await socket.still_serving()


async def test_expired_token_closes_with_4401(client, tokens):
    socket = await connect(client, None)
    expired = tokens.make("referrer", "dr-old", facility="hospital-a", ttl_s=-60)
    error = await socket.ask({"type": "auth", "token": expired, "ref": "a"})
    assert error["code"] == "token_expired"
    closing = await asyncio.wait_for(socket.ws.receive(), 5)
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert socket.ws.close_code == 4401
    other = await connect(client, tokens.referrer)  # the server keeps serving others
    await other.still_serving()


async def test_forged_token(client, tokens, settings):
    socket = await connect(client, None)
    forged = Tokens(settings.model_copy(update={"jwt_secret": "f" * 40})).referrer
    error = await socket.ask({"type": "auth", "token": forged, "ref": "a"})
    assert error["code"] == "token_invalid"


async def test_unknown_session(client, tokens):
    socket = await connect(client, tokens.specialist)
    error = await socket.ask({"type": "join", "session_id": "s_missing", "ref": "j"})
    assert error["code"] == "session_not_found"
    await socket.still_serving()


async def test_wrong_people_cannot_join(client, tokens):
    session_id = await accepted_session(client, tokens)
    for token, code in (
        (tokens.other_specialist, "forbidden"),
        (tokens.other_referrer, "session_not_found"),
    ):
        socket = await connect(client, token)
        error = await socket.ask({"type": "join", "session_id": session_id, "ref": "j"})
        assert error["code"] == code
        await socket.still_serving()


async def test_offer_before_join_and_invalid_sdp(client, tokens):
    session_id = await accepted_session(client, tokens)
    socket = await connect(client, tokens.referrer)
    error = await socket.ask({"type": "offer", "sdp": "v=0", "ref": "o1"})
    assert error["code"] == "not_joined"
    joined = await socket.ask({"type": "join", "session_id": session_id, "ref": "j"})
    assert joined["type"] == "joined" and joined["as"] == "participant"
    for sdp in (
        "garbage",
        "v=0\r\nm=audio x\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ):
        error = await socket.ask({"type": "offer", "sdp": sdp, "ref": "o2"})
        assert (error["code"], error["ref"]) == ("bad_sdp", "o2")
    again = await socket.ask({"type": "join", "session_id": session_id, "ref": "j2"})
    assert again["code"] == "already_joined"
    await socket.still_serving()


async def test_pushes_consult_updates_and_roster(client, tokens):
    specialist = await connect(client, tokens.specialist)
    neurologist = await connect(client, tokens.neurologist)
    session_id = await accepted_session(client, tokens)
    created = await specialist.next(lambda m: m["type"] == "consult.updated")
    assert created["consult"]["state"] == "waiting"
    accepted = await specialist.next(lambda m: m["type"] == "consult.updated")
    assert accepted["consult"]["state"] == "accepted"

    referrer = await connect(client, tokens.referrer)
    await referrer.ask({"type": "join", "session_id": session_id, "ref": "j"})
    observer = await connect(client, tokens.supervisor)
    joined = await observer.ask({"type": "join", "session_id": session_id, "ref": "j"})
    assert joined["as"] == "observer"
    roster = await referrer.next(lambda m: m["type"] == "roster" and len(m["roster"]) == 2)
    assert {(m["sub"], m["as"]) for m in roster["roster"]} == {
        ("dr-amal", "participant"),
        ("sup-leila", "observer"),
    }
    await observer.ask({"type": "leave", "ref": "l"})
    roster = await referrer.next(lambda m: m["type"] == "roster" and len(m["roster"]) == 1)
    assert roster["roster"][0]["sub"] == "dr-amal"
    # The neurologist saw nothing of a cardiology consult.
    await neurologist.still_serving()
    assert [m["type"] for m in neurologist.seen] == ["welcome", "pong"]


async def test_dropped_participant_keeps_place_then_leaves(aiohttp_client, tokens):
    from tests.conftest import make_settings

    client = await aiohttp_client(
        create_app(make_settings(reconnect_grace_s=0.5), store=MemoryStore())
    )
    session_id = await accepted_session(client, tokens)
    specialist = await connect(client, tokens.specialist)
    await specialist.ask({"type": "join", "session_id": session_id, "ref": "j"})
    referrer = await connect(client, tokens.referrer)
    await referrer.ask({"type": "join", "session_id": session_id, "ref": "j"})
    await referrer.ws.close()  # the network drops
    held = await specialist.next(
        lambda m: (
            m["type"] == "roster"
            and any(e["sub"] == "dr-amal" and e["status"] == "reconnecting" for e in m["roster"])
        )
    )
    assert len(held["roster"]) == 2
    back = await connect(client, tokens.referrer)
    await back.ask({"type": "join", "session_id": session_id, "ref": "j"})
    rejoined = await specialist.next(
        lambda m: (
            m["type"] == "roster"
            and any(e["sub"] == "dr-amal" and e["status"] == "connected" for e in m["roster"])
        )
    )
    assert len(rejoined["roster"]) == 2
    await back.ws.close()  # drops again and this time does not come back
    gone = await specialist.next(
        lambda m: m["type"] == "roster" and [e["sub"] for e in m["roster"]] == ["dr-karim"],
        timeout=5,
    )
    assert gone["roster"][0]["status"] == "connected"


async def test_colleagues_learn_only_that_a_consult_left_their_queue(client, tokens):
    colleague = await connect(client, tokens.other_specialist)
    session_id = await accepted_session(client, tokens)
    assert session_id
    await colleague.next(
        lambda m: m["type"] == "consult.updated" and m["consult"]["state"] == "waiting"
    )
    taken = await colleague.next(
        lambda m: m["type"] == "consult.updated" and m["consult"]["state"] == "accepted"
    )
    assert "summary" not in taken["consult"] and "patient_ref" not in taken["consult"]
    assert "session_id" not in taken["consult"] and taken["consult"]["specialty"] == "cardiology"


async def test_a_client_that_takes_batches_gets_a_burst_in_one_frame(client, tokens):
    batched = Socket(await client.ws_connect("/ws"))
    auth = {"type": "auth", "token": tokens.supervisor, "ref": "a", "batch": True}
    assert (await batched.ask(auth))["type"] == "welcome"
    plain = await connect(client, tokens.admin)
    hub = client.server.app[HUB]
    by_sub = {c.principal.sub: c for c in hub.connections.values()}
    for n in range(5):  # queued together: the write loops cannot run in between
        for sub in ("sup-leila", "adm-yusuf"):
            by_sub[sub].send({"type": "test.burst", "n": n})

    frame = await asyncio.wait_for(batched.ws.receive(), 5)
    assert [m["n"] for m in json.loads(frame.data)] == [0, 1, 2, 3, 4]
    for n in range(5):  # a client that did not ask gets one message per frame
        frame = await asyncio.wait_for(plain.ws.receive(), 5)
        assert json.loads(frame.data) == {"type": "test.burst", "n": n}
    await batched.still_serving()


class RecordingSocket:
    """Stands in for the aiohttp WebSocket under a Connection: records frames."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.closed_with: tuple[int, bytes] | None = None

    @property
    def closed(self) -> bool:
        return self.closed_with is not None

    async def send_str(self, text: str) -> None:
        self.frames.append(text)

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed_with = (code, message)


async def test_the_end_of_a_connection_sends_everything_queued_then_stops():
    ws = RecordingSocket()
    conn = Connection(ws)
    conn.batch = True
    for n in range(BATCH_LIMIT + 3):
        conn.send({"type": "test.push", "n": n})
    conn.close_outbox()
    conn.send({"type": "test.push", "n": "after the end"})
    await asyncio.wait_for(conn.write_loop(), 5)  # no lingering once the end is queued
    sent = [m["n"] for frame in ws.frames for m in json.loads(frame)]
    assert sent == list(range(BATCH_LIMIT + 3))
    assert [len(json.loads(frame)) for frame in ws.frames] == [BATCH_LIMIT, 3]


async def test_a_client_that_stops_reading_is_closed_not_buffered():
    ws = RecordingSocket()
    conn = Connection(ws)  # its write loop never runs: the client reads nothing
    for n in range(OUTBOX_LIMIT):
        conn.send_text(json.dumps({"type": "test.push", "n": n}))
    assert ws.closed_with is None
    conn.send_text(json.dumps({"type": "test.push", "n": "one too many"}))
    async with asyncio.timeout(5):  # the close was scheduled; let it run
        while ws.closed_with is None:
            await asyncio.sleep(0)
    assert ws.closed_with == (1008, b"too slow")
    conn.send_text("{}")
    assert len(conn._outbox) == 0  # its backlog is dropped, and nothing more is kept


def typed_consult(fields: dict):
    """A consult record with what the test leaves out filled in."""
    import msgspec

    from signaling.model import Consult

    person = {"sub": "dr-r", "name": "R"}
    fields = {
        **fields,
        "specialist": fields["specialist"] and {**person, **fields["specialist"]},
        "declines": [{**person, "reason": "busy", "at": 1.0, **d} for d in fields["declines"]],
    }
    base = {"urgency": "urgent", "summary": "s", "patient_ref": "P-1", "referrer": person,
            "created_at": 1.0}  # fmt: skip
    return msgspec.convert({**base, **fields}, Consult)


def test_a_consult_change_is_weighed_only_for_connections_it_may_concern():
    """The hub's groups never leave out a connection the rule (``notification``)
    would push a change to, for every role and consult state."""
    from signaling.audience import notification
    from signaling.auth import Principal
    from signaling.hub import Hub

    people = [
        Principal("sup", "S", "supervisor"),
        Principal("adm", "A", "admin"),
        Principal("ref-a", "R", "referrer", facility="a"),
        Principal("ref-b", "R", "referrer", facility="b"),
        Principal("spec-c", "C", "specialist", specialties=("cardiology",)),
        Principal("spec-n", "N", "specialist", specialties=("neurology", "cardiology")),
        Principal("spec-x", "X", "specialist", specialties=("nephrology",)),
    ]
    hub = Hub(app=None)
    everyone = []
    for who in people:
        for presence, batch in ((None, False), ("away", True)):
            conn = Connection(RecordingSocket())
            conn.principal, conn.presence, conn.batch = who, presence, batch
            hub.register(conn)
            everyone.append(conn)
    consults = [
        typed_consult({
            "id": "c1",
            "state": state,
            "facility": facility,
            "specialty": specialty,
            "specialist": specialist,
            "declines": declines,
            "offered_to": offered,
        })  # fmt: skip
        for state in ("waiting", "accepted", "live", "ended")
        for facility in ("a", "b")
        for specialty in ("cardiology", "nephrology")
        for specialist in (None, {"sub": "spec-x"}, {"sub": "spec-c"})
        for declines in ([], [{"sub": "spec-c"}])
        for offered in ([], ["spec-x"])
    ]
    for consult in consults:
        expected = {c for c in everyone if notification(c, consult) is not None}
        assert expected <= hub.concerned(consult), consult
    assert len(hub.concerned(consults[0])) < len(everyone)  # and it does leave some out
    for conn in everyone:
        hub.unregister(conn)
    assert hub.connections == {} and hub.audiences == {}


async def test_supervisors_share_each_consult_change_in_the_order_it_was_pushed():
    """Batching supervisors get consult changes through one shared list per linger:
    each still receives every change once, in order with its own messages."""
    from signaling.auth import Principal
    from signaling.hub import Hub

    hub = Hub(app=None)

    def supervisor(sub: str) -> tuple[Connection, RecordingSocket]:
        ws = RecordingSocket()
        conn = Connection(ws)
        conn.principal, conn.batch = Principal(sub, sub, "supervisor"), True
        hub.register(conn)
        return conn, ws

    def received(ws: RecordingSocket) -> list:
        out = []
        for frame in ws.frames:
            data = json.loads(frame)
            out += [m["n"] for m in (data if isinstance(data, list) else [data])]
        return out

    (a, ws_a), (b, ws_b) = supervisor("sup-a"), supervisor("sup-b")
    writers = [asyncio.ensure_future(conn.write_loop()) for conn in (a, b)]
    hub.push_to_watchers('{"n": "u1"}')
    a.send({"n": "reply", "ref": "r"})  # goes out at once, after u1
    hub.push_to_watchers('{"n": "u2"}')
    c, ws_c = supervisor("sup-c")  # signs in while the linger is open
    writers.append(asyncio.ensure_future(c.write_loop()))
    hub.push_to_watchers('{"n": "u3"}')
    async with asyncio.timeout(5):
        while hub.shared_pushes.get("local") is not None or len(ws_b.frames) < 1:
            await asyncio.sleep(0.005)  # polling the sockets the write loops fill
        hub.push_to_watchers('{"n": "u4"}')  # the next linger
        while len(received(ws_c)) < 2 or len(received(ws_a)) < 5:
            await asyncio.sleep(0.005)
    assert received(ws_a) == ["u1", "reply", "u2", "u3", "u4"]
    assert json.loads(ws_a.frames[0]) == [{"n": "u1"}, {"n": "reply", "ref": "r"}]
    assert received(ws_b) == ["u1", "u2", "u3", "u4"]
    assert [len(json.loads(f)) for f in ws_b.frames[:1]] == [3]  # one write per linger
    assert received(ws_c) == ["u3", "u4"]
    for conn in (a, b, c):
        conn.close_outbox()
    await asyncio.wait_for(asyncio.gather(*writers), 5)


async def test_a_shared_list_closed_before_its_holders_wrote_it_is_still_sent():
    """Holders of a closed list are told in slices; a new list may open before
    the last of them has written the old one."""
    from signaling.auth import Principal
    from signaling.hub import Hub

    hub = Hub(app=None)
    ws = RecordingSocket()
    conn = Connection(ws)
    conn.principal, conn.batch = Principal("sup", "sup", "supervisor"), True
    hub.register(conn)
    hub.push_to_watchers('{"n": 1}')
    hub.close_shared(hub.shared_pushes["local"])
    hub.push_to_watchers('{"n": 2}')  # a new list, before the write loop ran
    hub.close_shared(hub.shared_pushes["local"])
    conn.close_outbox()
    await asyncio.wait_for(conn.write_loop(), 5)
    assert [m["n"] for frame in ws.frames for m in json.loads(frame)] == [1, 2]


async def test_session_ended_says_who_ended_it_and_a_later_report_reaches_the_referrer(
    client, tokens
):
    session_id = await accepted_session(client, tokens)
    referrer = await connect(client, tokens.referrer)
    joined = await referrer.ask({"type": "join", "session_id": session_id, "ref": "j"})
    assert joined["type"] == "joined"
    consult_id = joined["consult"]["id"]
    ended = await client.post(
        f"/api/sessions/{session_id}/end", headers=tokens.header(tokens.specialist)
    )
    assert ended.status == 200, await ended.text()
    pushed = await referrer.next(lambda m: m["type"] == "session.ended")
    assert pushed["reason"] == "ended_by_participant"
    assert pushed["part"] == "specialist" and pushed["by"]["sub"] == "dr-karim"
    # The report written after the end still reaches the referrer's page.
    report = {
        "findings": "effusion",
        "assessment": "tamponade",
        "recommendation": "drain now",
        "follow_up_urgency": "critical",
    }
    sent = await client.post(
        f"/api/consults/{consult_id}/report", json=report, headers=tokens.header(tokens.specialist)
    )
    assert sent.status == 200, await sent.text()
    update = await referrer.next(
        lambda m: m["type"] == "consult.updated" and (m["consult"].get("report") or {})
    )
    assert update["consult"]["report"]["findings"] == "effusion"


async def test_layer_events_from_media_reach_the_peers_connection():
    """media's layer events (media.events) become `layers` for a publisher and
    `picture` for a subscriber, on the connection whose id is the peer's."""
    from media import PublishedLayers, ReceivedLayers
    from signaling.auth import Principal
    from signaling.hub import Hub

    hub = Hub(app=None)
    ws = RecordingSocket()
    conn = Connection(ws)
    conn.principal = Principal("ref-a", "R", "referrer", facility="a")
    hub.register(conn)
    hub.on_media_layers(PublishedLayers(conn.id, "video", ("q", "h")))
    hub.on_media_layers(ReceivedLayers(conn.id, "specialist", "video", True))
    hub.on_media_layers(ReceivedLayers("w_gone", "specialist", "video", True))  # nobody
    conn.close_outbox()
    await asyncio.wait_for(conn.write_loop(), 5)
    assert [json.loads(frame) for frame in ws.frames] == [
        {"type": "layers", "role": "video", "active": ["q", "h"]},
        {"type": "picture", "slot": "specialist", "role": "video", "reduced": True},
    ]
    hub.unregister(conn)
