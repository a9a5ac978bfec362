"""Two organisations, each with its own real OpenID provider (oidc-provider), trusted
through an issuers file: their tokens verify by ``kid`` from each one's JWKS; a key
rotation at a provider is followed without a restart; tokens of an issuer not in
the file, or signed by one organisation's key while claiming the other's issuer, are
refused; a provider that is down leaves valid tokens working and makes a new
sign-in fail clearly; and each organisation sees only its own, plus the consults
between them."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from signaling.app import create_app
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.support.openid import OpenIdProvider

PEOPLE = {
    "org-a": {
        "amal": {"password": "a-pass", "claims": {"name": "Dr Amal", "jisr_role": "referrer",
                                                  "facility": "hospital-1"}},
        "sara": {"password": "s-pass", "claims": {"name": "Sara", "jisr_role": "supervisor"}},
    },
    "org-b": {
        "karim": {"password": "k-pass", "claims": {"name": "Dr Karim", "groups": ["cardio"],
                                                   "specialties": ["cardiology"]}},
        "leila": {"password": "l-pass", "claims": {"name": "Leila", "jisr_role": "supervisor"}},
        # the same login and facility name as in org-a: another person, another place
        "amal": {"password": "b-pass", "claims": {"name": "Amal B", "jisr_role": "referrer",
                                                  "facility": "hospital-1"}},
    },
    "org-c": {
        "omar": {"password": "o-pass", "claims": {"name": "Omar", "jisr_role": "supervisor"}},
        "nadia": {"password": "n-pass", "claims": {"name": "Dr Nadia", "jisr_role": "specialist",
                                                   "specialties": ["cardiology"]}},
        "root": {"password": "r-pass", "claims": {"name": "Root", "jisr_role": "admin"}},
    },
}  # fmt: skip
NEW = {"specialty": "cardiology", "urgency": "critical", "summary": "s", "patient_ref": "P-1"}


@pytest.fixture
def providers(tmp_path):
    started = {}
    for org, users in PEOPLE.items():
        provider = OpenIdProvider(tmp_path, org, users, ["http://127.0.0.1/auth/callback"],
                                  ["http://127.0.0.1/signin.html"])  # fmt: skip
        provider.start()
        started[org] = provider
    yield started
    for provider in started.values():
        provider.stop()


@pytest.fixture
async def jisr(aiohttp_client, tmp_path, providers):
    entries = [
        providers["org-a"].issuer_entry(consults_to=["org-a", "org-b"]),
        providers["org-b"].issuer_entry(claims={"group_roles": {"cardio": "specialist"}}),
        providers["org-c"].issuer_entry(roles=["specialist", "supervisor"]),
    ]
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuer": entries}))
    settings = make_settings(issuers_file=issuers, jwks_refetch_s=0.2)
    return await aiohttp_client(create_app(settings, store=MemoryStore()))


async def call(client, method: str, path: str, token: str, **kwargs):
    answer = await client.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                  **kwargs)  # fmt: skip
    return answer.status, await answer.json()


async def access(providers, org: str, login: str) -> str:
    return (await providers[org].tokens(login))["access_token"]


async def test_tokens_map_to_namespaced_identities(jisr, providers):
    status, me = await call(jisr, "GET", "/api/me", await access(providers, "org-a", "amal"))
    assert status == 200
    assert (me["sub"], me["role"], me["facility"], me["organisation"]) == (
        "org-a/amal",
        "referrer",
        "org-a/hospital-1",
        "org-a",
    )
    status, me = await call(jisr, "GET", "/api/me", await access(providers, "org-b", "amal"))
    assert (me["sub"], me["facility"]) == ("org-b/amal", "org-b/hospital-1")
    status, me = await call(jisr, "GET", "/api/me", await access(providers, "org-b", "karim"))
    assert (me["role"], me["specialties"]) == ("specialist", ["cardiology"])  # from its group


async def test_a_role_the_issuer_may_not_grant_is_refused(jisr, providers):
    status, body = await call(jisr, "GET", "/api/me", await access(providers, "org-c", "root"))
    assert status == 401 and body["error"]["code"] == "token_invalid"
    assert "not trusted to grant the role admin" in body["error"]["message"]


async def test_key_rotation_is_followed_without_a_restart(jisr, providers):
    old = await access(providers, "org-a", "sara")
    assert jwt.get_unverified_header(old)["kid"] == "org-a-1"
    assert (await call(jisr, "GET", "/api/me", old))[0] == 200
    providers["org-a"].rotate_key()
    new = await access(providers, "org-a", "sara")
    assert jwt.get_unverified_header(new)["kid"] == "org-a-2"
    deadline = time.monotonic() + 5  # the unknown kid is fetched (at most every 0.2 s here)
    while (status := (await call(jisr, "GET", "/api/me", new))[0]) != 200:
        assert time.monotonic() < deadline, status
    assert (await call(jisr, "GET", "/api/me", old))[0] == 200  # until it expires


async def test_untrusted_and_cross_issuer_tokens_are_refused(jisr, providers, tmp_path):
    stranger = OpenIdProvider(tmp_path, "org-x", {"x": {"password": "p", "claims": {
        "jisr_role": "supervisor"}}}, [], [])  # fmt: skip
    stranger.start()
    try:
        status, body = await call(jisr, "GET", "/api/me", await access({"x": stranger}, "x", "x"))
    finally:
        stranger.stop()
    assert status == 401 and body["error"]["code"] == "token_invalid"
    # signed with org-a's own key, claiming org-b's issuer (and either key id)
    key = jwt.PyJWK(providers["org-a"].keys[0]).key
    now = int(time.time())
    claims = {"iss": providers["org-b"].issuer, "aud": "jisr", "sub": "leila", "iat": now,
              "exp": now + 300, "jisr_role": "supervisor"}  # fmt: skip
    for kid in ("org-a-1", "org-b-1"):
        forged = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
        status, body = await call(jisr, "GET", "/api/me", forged)
        assert status == 401 and body["error"]["code"] == "token_invalid", kid


async def test_a_provider_that_is_down(jisr, providers):
    token = await access(providers, "org-a", "sara")
    assert (await call(jisr, "GET", "/api/me", token))[0] == 200
    providers["org-a"].stop()
    assert (await call(jisr, "GET", "/api/me", token))[0] == 200  # its keys are kept
    answer = await jisr.get("/auth/login?organisation=org-a&next=/supervisor.html",
                            allow_redirects=False)  # fmt: skip
    assert answer.status == 302
    assert answer.headers["Location"].startswith("/signin.html?error=provider_unreachable")


async def test_each_organisation_sees_its_own_and_the_consults_between_them(jisr, providers):
    people = [("org-a", "amal"), ("org-a", "sara"), ("org-b", "karim"), ("org-b", "leila"),
              ("org-c", "omar"), ("org-c", "nadia"), ("org-b", "amal")]  # fmt: skip
    tokens = {who: await access(providers, *who) for who in people}
    status, consult = await call(jisr, "POST", "/api/consults", tokens["org-a", "amal"], json=NEW)
    assert status == 201 and consult["organisation"] == "org-a"
    assert consult["routed_to"] == ["org-a", "org-b"]

    async def sees(who) -> bool:
        _, listed = await call(jisr, "GET", "/api/consults", tokens[who])
        return consult["id"] in [c["id"] for c in listed["consults"]]

    # org-b's "amal" of org-b's "hospital-1" is not org-a's: she does not see it
    assert [await sees(w) for w in people] == [True, True, True, True, False, False, False]
    status, _ = await call(jisr, "GET", f"/api/consults/{consult['id']}", tokens["org-c", "omar"])
    assert status == 404
    status, _ = await call(jisr, "POST", f"/api/consults/{consult['id']}/accept",
                           tokens["org-c", "nadia"])  # fmt: skip
    assert status == 404  # not routed to org-c
    status, taken = await call(jisr, "POST", f"/api/consults/{consult['id']}/accept",
                               tokens["org-b", "karim"])  # fmt: skip
    assert status == 200 and taken["consult"]["specialist_organisation"] == "org-b"
    session_id = taken["session"]["id"]
    for who, visible in ((("org-a", "sara"), 200), (("org-b", "leila"), 200),
                         (("org-c", "omar"), 404)):  # fmt: skip
        assert (await call(jisr, "GET", f"/api/sessions/{session_id}", tokens[who]))[0] == visible
    _, board = await call(jisr, "GET", "/api/dashboard", tokens["org-c", "omar"])
    assert board["live"] == [] and board["queue"]["critical"]["waiting"] == 0
