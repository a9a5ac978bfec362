"""Settings validation, JWT verification with each algorithm, and log hygiene."""

from __future__ import annotations

import asyncio
import io
import json

import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signaling.auth import TokenVerifier, mint_token
from signaling.errors import ApiError
from signaling.logs import Audit, configure_logging, get_logger
from signaling.settings import SettingsError, load_settings
from tests.conftest import SECRET


def test_each_bad_value_gets_its_own_message(monkeypatch):
    monkeypatch.setenv("JISR_PORT", "70000")
    monkeypatch.setenv("JISR_REDIS_URL", "http://localhost")
    monkeypatch.setenv("JISR_ICE_ADDRESSES", "127.0.0.1,not-an-ip")
    monkeypatch.setenv("JISR_MAX_MESSAGE_BYTES", "12")
    monkeypatch.setenv("JISR_JWT_SECRET", SECRET)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("JISR_PORT", "JISR_REDIS_URL", "JISR_ICE_ADDRESSES", "JISR_MAX_MESSAGE_BYTES"):
        assert name in message
    assert "not-an-ip" in message


def test_media_port_one_per_worker(monkeypatch):
    from signaling.cli import main, worker_settings

    monkeypatch.delenv("JISR_MEDIA_UDP_PORT", raising=False)
    settings = load_settings(jwt_secret=SECRET)
    assert settings.media_udp_port == 7882
    assert [worker_settings(settings, i).media_udp_port for i in range(3)] == [7882, 7883, 7884]
    system_picks = load_settings(jwt_secret=SECRET, media_udp_port=0)
    assert worker_settings(system_picks, 2).media_udp_port == 0
    with pytest.raises(SettingsError, match="JISR_MEDIA_UDP_PORT"):
        load_settings(jwt_secret=SECRET, media_udp_port=65536)
    monkeypatch.setenv("JISR_JWT_SECRET", SECRET)
    monkeypatch.setenv("JISR_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("JISR_MEDIA_UDP_PORT", "65535")
    assert main(["serve", "--workers", "2"]) == 2  # the second worker's port would not fit


def test_secrets_are_required_and_never_printed(monkeypatch):
    with pytest.raises(SettingsError, match="JISR_JWT_SECRET is required"):
        load_settings(jwt_secret=None)
    with pytest.raises(SettingsError, match="at least 32"):
        load_settings(jwt_secret="short")
    with pytest.raises(SettingsError, match="JISR_JWT_PUBLIC_KEY_FILE"):
        load_settings(jwt_algorithms="RS256")
    assert SECRET not in repr(load_settings(jwt_secret=SECRET))


def test_relay_only_needs_turn_urls():
    assert load_settings(jwt_secret=SECRET).ice_transport_policy == "all"
    with pytest.raises(SettingsError, match="needs turn: or turns: URLs"):
        load_settings(jwt_secret=SECRET, ice_transport_policy="relay", turn_urls="stun:a:3478")
    with pytest.raises(SettingsError, match="JISR_ICE_TRANSPORT_POLICY"):
        load_settings(jwt_secret=SECRET, ice_transport_policy="nat")
    settings = load_settings(
        jwt_secret=SECRET, ice_transport_policy="relay", turn_secret="s3cret",
        turn_urls="turns:turn.example.org:5349?transport=tcp",
    )  # fmt: skip
    assert settings.turn_urls == ["turns:turn.example.org:5349?transport=tcp"]


def _pem_pair(private_key) -> tuple[str, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.mark.parametrize(
    "algorithm, key",
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_public_key_algorithms(tmp_path, algorithm, key):
    private, public = _pem_pair(key())
    (tmp_path / "pub.pem").write_text(public)
    settings = load_settings(jwt_algorithms=algorithm, jwt_public_key_file=tmp_path / "pub.pem")
    token = mint_token(
        settings, role="supervisor", sub="sup", private_key=private, algorithm=algorithm
    )
    assert asyncio.run(TokenVerifier(settings).verify(token)).role == "supervisor"
    # An HS256 token is refused when only the public-key algorithm is accepted.
    hs = jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")
    with pytest.raises(ApiError) as caught:
        asyncio.run(TokenVerifier(settings).verify(hs))
    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize(
    "change, code",
    [
        ({"aud": "someone-else"}, "token_invalid"),
        ({"iss": "mallory"}, "token_invalid"),
        ({"role": "surgeon"}, "token_invalid"),
        ({"exp": 1}, "token_expired"),
    ],
)
def test_claims_are_checked(settings, change, code):
    claims = jwt.decode(
        mint_token(settings, role="referrer", sub="r", facility="f"),
        options={"verify_signature": False},
    )
    token = jwt.encode({**claims, **change}, SECRET, algorithm="HS256")
    with pytest.raises(ApiError) as caught:
        asyncio.run(TokenVerifier(settings).verify(token))
    assert caught.value.code == code


def test_unsigned_token_is_refused(settings):
    token = jwt.encode({"sub": "x", "role": "admin"}, key=None, algorithm="none")
    with pytest.raises(ApiError) as caught:
        asyncio.run(TokenVerifier(settings).verify(token))
    assert caught.value.code == "token_invalid"


def test_logs_are_json_and_redact_secrets():
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        get_logger().info("peer.offer", token="eyJsecret", sdp="v=0 secret sdp", session_id="s1")
        Audit("n1").record("consult.created", {"sub": "dr"}, consult_id="c1")
    finally:
        configure_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "peer.offer" and lines[0]["session_id"] == "s1"
    assert "eyJsecret" not in stream.getvalue() and "secret sdp" not in stream.getvalue()
    assert lines[1]["audit"] is True and lines[1]["event"] == "consult.created"


def test_a_logger_made_before_logging_is_configured_follows_the_configuration():
    """Modules make their loggers at import, which in a worker process comes before
    its logging is configured: their lines must still be JSON."""
    structlog.reset_defaults()  # as a fresh process starts
    made_at_import = get_logger(component="probe")
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        made_at_import.info("probe.logged", session_id="s1")
    finally:
        configure_logging()
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == "probe.logged" and line["session_id"] == "s1"
