"""TURN REST credentials (signaling/turn.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from signaling.turn import ice_servers, turn_credentials


def reference_password(secret: str, username: str) -> str:
    """The scheme as coturn computes it, written out independently."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def test_known_answer():
    # `printf %s 1700003600:dr-amal | openssl dgst -sha1 -hmac north-star-secret -binary | base64`
    username, password = turn_credentials("north-star-secret", "dr-amal", 3600, 1_700_000_000.0)
    assert username == "1700003600:dr-amal"
    assert password == "YdW7yVkNnUnuRFuB8yGmI4Egk1k="


@pytest.mark.parametrize(
    ("secret", "user"),
    [("s3cret", "dr-karim"), ("ünïcode-sécret", "sup-leila"), ("x" * 200, "urn:hospital:42")],
)
def test_password_matches_reference(secret, user):
    username, password = turn_credentials(secret, user, 600, 1_234_567_890.5)
    assert username == f"1234568490:{user}"
    assert password == reference_password(secret, username)
    assert len(base64.b64decode(password)) == 20  # a SHA-1 digest


def test_expiry_is_integer_now_plus_ttl():
    username, _ = turn_credentials("s", "u", 86_400, 1_700_000_000.999)
    expiry, _, user = username.partition(":")
    assert int(expiry) == 1_700_000_000 + 86_400
    assert user == "u"
    # A later issue time moves the expiry, and the password with it.
    later, later_password = turn_credentials("s", "u", 86_400, 1_700_000_001.0)
    assert later == f"{1_700_000_001 + 86_400}:u"
    assert later_password != turn_credentials("s", "u", 86_400, 1_700_000_000.0)[1]


def test_password_depends_on_secret_and_user():
    base = turn_credentials("secret-a", "u1", 60, 1000)[1]
    assert turn_credentials("secret-b", "u1", 60, 1000)[1] != base
    assert turn_credentials("secret-a", "u2", 60, 1000)[1] != base


@pytest.mark.parametrize(("secret", "ttl"), [("", 60), ("s", 0), ("s", -5)])
def test_bad_arguments(secret, ttl):
    with pytest.raises(ValueError):
        turn_credentials(secret, "u", ttl, 1000)


def test_ice_servers_empty_without_urls():
    assert ice_servers([], "secret", "u", 600, 1000) == []
    assert ice_servers([], None, "u", 600, 1000) == []


def test_ice_servers_stun_and_turn():
    urls = [
        "stun:stun.example.org:3478",
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349?transport=tcp",
    ]
    servers = ice_servers(urls, "secret", "dr-amal", 600, 1_700_000_000)
    assert servers[0] == {"urls": ["stun:stun.example.org:3478"]}
    turn = servers[1]
    assert turn["urls"] == urls[1:]
    assert turn["username"] == "1700000600:dr-amal"
    assert turn["credential"] == reference_password("secret", "1700000600:dr-amal")
    assert len(servers) == 2


def test_ice_servers_stun_only():
    assert ice_servers(["stun:127.0.0.1:3478"], None, "u", 600, 1000) == [
        {"urls": ["stun:127.0.0.1:3478"]}
    ]


def test_ice_servers_turn_without_secret_is_left_out():
    assert ice_servers(["turn:127.0.0.1:3478"], None, "u", 600, 1000) == []
    assert ice_servers(["stun:a", "turn:b"], "", "u", 600, 1000) == [{"urls": ["stun:a"]}]


def test_ice_servers_refuses_unknown_scheme():
    with pytest.raises(ValueError, match="http://"):
        ice_servers(["http://example.org"], "s", "u", 600, 1000)
