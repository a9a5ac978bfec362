"""The HTTP API: consult lifecycle, roles, and every refusal a user can cause."""

from __future__ import annotations

import pytest

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import Tokens

NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "murmur", "patient_ref": "P-9"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings, store=MemoryStore(), clock=Clock()))


async def create(client, tokens: Tokens, **fields) -> dict:
    response = await client.post(
        "/api/consults", json={**NEW, **fields}, headers=tokens.header(tokens.referrer)
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def error_of(response, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body["error"]) >= {"code", "message"}
    return body["error"]["code"]


async def test_queue_order_critical_first_then_oldest(client, tokens):
    routine = await create(client, tokens, urgency="routine")
    urgent_old = await create(client, tokens, urgency="urgent")
    critical = await create(client, tokens, urgency="critical")
    urgent_new = await create(client, tokens, urgency="urgent")
    await create(client, tokens, specialty="neurology")  # not this specialist's queue
    listing = await (
        await client.get("/api/consults", headers=tokens.header(tokens.specialist))
    ).json()
    assert [c["id"] for c in listing["consults"]] == [
        critical["id"],
        urgent_old["id"],
        urgent_new["id"],
        routine["id"],
    ]


async def test_accept_creates_session_and_second_accept_conflicts(client, tokens):
    consult = await create(client, tokens)
    first = await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
    )
    assert first.status == 200
    body = await first.json()
    assert body["consult"]["state"] == "accepted"
    assert body["session"]["consult_id"] == consult["id"]
    second = await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.other_specialist)
    )
    assert await error_of(second, 409) == "already_accepted"
    session = await client.get(
        f"/api/sessions/{body['session']['id']}", headers=tokens.header(tokens.referrer)
    )
    assert (await session.json())["specialist"]["sub"] == "dr-karim"


async def test_referrer_cancels_while_waiting_only(client, tokens):
    consult = await create(client, tokens)
    other = await client.post(
        f"/api/consults/{consult['id']}/cancel", headers=tokens.header(tokens.other_referrer)
    )
    assert await error_of(other, 404) == "consult_not_found"
    cancelled = await client.post(
        f"/api/consults/{consult['id']}/cancel", headers=tokens.header(tokens.referrer)
    )
    assert (await cancelled.json())["state"] == "cancelled"
    again = await client.post(
        f"/api/consults/{consult['id']}/cancel", headers=tokens.header(tokens.referrer)
    )
    assert await error_of(again, 409) == "invalid_state"
    accept = await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
    )
    assert await error_of(accept, 409) == "invalid_state"


async def test_malformed_json(client, tokens):
    response = await client.post(
        "/api/consults", data=b"{not json", headers=tokens.header(tokens.referrer)
    )
    assert await error_of(response, 400) == "bad_json"


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"urgency": "whenever"}, "urgency"),
        ({"summary": ""}, "summary"),
        ({"patient_ref": "Jane Doe"}, "patient_ref"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_invalid_fields(client, tokens, fields, fragment):
    response = await client.post(
        "/api/consults", json={**NEW, **fields}, headers=tokens.header(tokens.referrer)
    )
    assert await error_of(response, 400) == "bad_request"
    assert fragment in (await response.json())["error"]["message"]


async def test_unknown_specialty(client, tokens):
    response = await client.post(
        "/api/consults",
        json={**NEW, "specialty": "astrology"},
        headers=tokens.header(tokens.referrer),
    )
    assert await error_of(response, 400) == "unknown_specialty"


async def test_oversized_body(client, tokens, settings):
    big = {**NEW, "summary": "x" * (settings.max_message_bytes + 10)}
    response = await client.post("/api/consults", json=big, headers=tokens.header(tokens.referrer))
    assert await error_of(response, 413) == "too_large"
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize("role", ["specialist", "supervisor", "admin"])
async def test_wrong_role_cannot_create(client, tokens, role):
    token = {
        "specialist": tokens.specialist,
        "supervisor": tokens.supervisor,
        "admin": tokens.admin,
    }[role]
    response = await client.post("/api/consults", json=NEW, headers=tokens.header(token))
    assert await error_of(response, 403) == "forbidden"


async def test_referrer_cannot_accept_and_other_specialty_cannot_see(client, tokens):
    consult = await create(client, tokens)
    by_referrer = await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.referrer)
    )
    assert await error_of(by_referrer, 403) == "forbidden"
    by_neurologist = await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.neurologist)
    )
    assert await error_of(by_neurologist, 404) == "consult_not_found"


async def test_expired_token(client, tokens):
    expired = tokens.make("referrer", "dr-old", facility="hospital-a", ttl_s=-60)
    response = await client.get("/api/me", headers=tokens.header(expired))
    assert await error_of(response, 401) == "token_expired"


async def test_forged_and_missing_tokens(client, tokens):
    forged = tokens.referrer[:-4] + ("AAAA" if not tokens.referrer.endswith("AAAA") else "BBBB")
    assert (
        await error_of(await client.get("/api/me", headers=tokens.header(forged)), 401)
        == "token_invalid"
    )
    assert await error_of(await client.get("/api/me"), 401) == "unauthenticated"
    assert (
        await error_of(
            await client.get("/api/me", headers={"Authorization": "Bearer nonsense"}), 401
        )
        == "token_invalid"
    )


async def test_unknown_consult_and_session(client, tokens):
    for path, code in (
        ("/api/consults/c_nothing", "consult_not_found"),
        ("/api/sessions/s_nothing", "session_not_found"),
    ):
        response = await client.get(path, headers=tokens.header(tokens.supervisor))
        assert await error_of(response, 404) == code
    response = await client.post(
        "/api/consults/c_nothing/accept", headers=tokens.header(tokens.specialist)
    )
    assert await error_of(response, 404) == "consult_not_found"


async def test_session_end_closes_consult(client, tokens):
    consult = await create(client, tokens)
    accepted = await (
        await client.post(
            f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
        )
    ).json()
    session_id = accepted["session"]["id"]
    observer_end = await client.post(
        f"/api/sessions/{session_id}/end", headers=tokens.header(tokens.supervisor)
    )
    assert await error_of(observer_end, 403) == "forbidden"
    ended = await client.post(
        f"/api/sessions/{session_id}/end", headers=tokens.header(tokens.specialist)
    )
    assert (await ended.json())["state"] == "ended"
    closed = await (
        await client.get(f"/api/consults/{consult['id']}", headers=tokens.header(tokens.referrer))
    ).json()
    assert closed["state"] == "ended"


async def test_health_config_and_security_headers(client):
    health = await client.get("/healthz")
    assert (await health.json()) == {"status": "ok"}
    assert "default-src 'self'" in health.headers["Content-Security-Policy"]
    assert (await client.get("/readyz")).status == 200
    config = await (await client.get("/api/config")).json()
    assert "cardiology" in config["specialties"]
    assert await error_of(await client.get("/api/nowhere"), 404) == "not_found"


async def test_turn_credentials_only_for_signed_in_users(aiohttp_client, tokens):
    import base64
    import hashlib
    import hmac

    from tests.conftest import make_settings

    settings = make_settings(
        turn_urls="stun:127.0.0.1:3478,turn:127.0.0.1:3478?transport=udp", turn_secret="s3cret"
    )
    client = await aiohttp_client(create_app(settings, store=MemoryStore()))
    anonymous = await (await client.get("/api/config")).json()
    assert anonymous["ice_servers"] == []
    assert anonymous["ice_transport_policy"] == "all"
    mine = await (await client.get("/api/config", headers=tokens.header(tokens.referrer))).json()
    turn = next(s for s in mine["ice_servers"] if s.get("username"))
    expiry, user = turn["username"].split(":")
    assert user == "dr-amal" and int(expiry) > 0
    expected = base64.b64encode(
        hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected


async def test_any_api_path_gets_a_coded_answer(client, tokens):
    """Found by the fuzz tests: a path holding a newline fell through to the static
    files and got an empty 404."""
    for path in ("/api/consults/%0A%7B", "/api/%0A", "/api/x%0Ay"):
        answer = await client.get(path, headers=tokens.header(tokens.referrer))
        assert answer.status == 404
        assert (await answer.json())["error"]["code"] == "not_found"
