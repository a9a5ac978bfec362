"""HTTPS served by `jisr serve` itself: bad certificate settings stop it at start
with a clear line each; a good pair gives real TLS 1.2/1.3 (older refused), HSTS on
every answer and a WebSocket over TLS that signs in and gets answers."""

from __future__ import annotations

import datetime
import ssl
import warnings

import aiohttp
import pytest

from signaling import cli
from signaling.settings import SettingsError
from signaling.tls import self_signed
from tests.conftest import Tokens, make_settings
from tests.redis_server import free_port
from tests.support.processes import jisr, wait_for


@pytest.fixture
def pair(tmp_path):
    cert, key = self_signed(["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def bad_settings(tmp_path, pair) -> dict[str, tuple[dict, str]]:
    cert, key = pair
    other_key = self_signed(["127.0.0.1"])[1]
    (tmp_path / "other.pem").write_bytes(other_key)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    (tmp_path / "expired.pem").write_bytes(self_signed(["127.0.0.1"], days=30, start=old)[0])
    (tmp_path / "text.pem").write_text("not a certificate\n")
    return {
        "cert alone": ({"tls_cert_file": cert}, "JISR_TLS_CERT_FILE and JISR_TLS_KEY_FILE go"),
        "key alone": ({"tls_key_file": key}, "give both"),
        "missing": ({"tls_cert_file": tmp_path / "none.pem", "tls_key_file": key},
                    "JISR_TLS_CERT_FILE: cannot read"),
        "not PEM": ({"tls_cert_file": tmp_path / "text.pem", "tls_key_file": key},
                    "JISR_TLS_CERT_FILE: " + f"{tmp_path / 'text.pem'} holds no PEM certificate"),
        "key not PEM": ({"tls_cert_file": cert, "tls_key_file": tmp_path / "text.pem"},
                        "JISR_TLS_KEY_FILE: "),
        "other key": ({"tls_cert_file": cert, "tls_key_file": tmp_path / "other.pem"},
                      "is not the key of the certificate"),
        "expired": ({"tls_cert_file": tmp_path / "expired.pem", "tls_key_file": key},
                    "expired on"),
        "bad CIDR": ({"trusted_proxies": "10.0.0.0/33"},
                     "JISR_TRUSTED_PROXIES: '10.0.0.0/33' is not an IP address or network"),
        "a name": ({"trusted_proxies": "127.0.0.1, proxy.local"}, "'proxy.local' is not"),
    }  # fmt: skip


def test_bad_tls_or_proxy_settings_are_refused_with_a_clear_line(tmp_path, pair):
    for case, (values, line) in bad_settings(tmp_path, pair).items():
        with pytest.raises(SettingsError) as refused:
            make_settings(**values)
        assert line in str(refused.value), (case, str(refused.value))
    good = make_settings(tls_cert_file=pair[0], tls_key_file=pair[1],
                         trusted_proxies="127.0.0.1,10.0.0.0/8, fd00::/8")  # fmt: skip
    assert good.trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]


def test_jisr_serve_stops_at_start_on_a_bad_key(tmp_path, pair, monkeypatch, capsys):
    monkeypatch.setenv("JISR_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("JISR_TLS_CERT_FILE", str(pair[0]))
    monkeypatch.setenv("JISR_TLS_KEY_FILE", str(tmp_path / "none.pem"))
    assert cli.main(["serve"]) == 2
    assert f"JISR_TLS_KEY_FILE: cannot read {tmp_path / 'none.pem'}" in capsys.readouterr().err


def client_context(cert, *versions: ssl.TLSVersion) -> ssl.SSLContext:
    """Trusting ``cert``; speaking only ``versions`` (lowest, highest) when given."""
    context = ssl.create_default_context(cafile=str(cert))
    if versions:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client would try; the server must say no
        with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version, context.maximum_version = versions[0], versions[-1]
    return context


async def test_https_listener_tls12_and_up_hsts_and_wss(tmp_path, pair):
    cert, key = pair
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    env = {"JISR_PORT": str(port), "JISR_TLS_CERT_FILE": str(cert), "JISR_TLS_KEY_FILE": str(key)}
    with jisr(tmp_path, env) as process:
        wait_for(base + "/healthz", process, tmp_path / "jisr.log", client_context(cert))
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            connector = aiohttp.TCPConnector(ssl=client_context(cert, version, version))
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.get(base + "/healthz") as answer:
                    assert answer.status == 200
                    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        old = client_context(cert, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
        connector = aiohttp.TCPConnector(ssl=old)
        async with aiohttp.ClientSession(connector=connector) as http:
            with pytest.raises(aiohttp.ClientConnectorError):  # the server hangs up
                await http.get(base + "/healthz")
        tokens = Tokens(make_settings())
        connector = aiohttp.TCPConnector(ssl=client_context(cert))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(base + "/index.html") as page:
                assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
            async with http.ws_connect(f"wss://127.0.0.1:{port}/ws") as ws:
                await ws.send_json({"type": "auth", "token": tokens.referrer})
                assert (await ws.receive_json(timeout=10))["type"] == "welcome"
                await ws.send_json({"type": "ping", "ref": "p1"})
                assert await ws.receive_json(timeout=10) == {"type": "pong", "ref": "p1"}
