"""The demo for two computers: `jisr serve --demo` on a machine with a network
address (an interface with 10.77.0.1, in a network namespace of the test's own)
prints HTTPS links on that address and serves them with the certificate it made,
whose subjectAltName covers the address; plain HTTP stays on loopback."""

from __future__ import annotations

import socket
import time

import pytest
from cryptography import x509

from tests.support.demo import ADDRESS, demo, https_get, machine_with_address


@pytest.fixture
def namespace():
    with machine_with_address() as space:
        yield space


@pytest.fixture
def running(namespace, tmp_path):
    with demo(namespace, tmp_path) as started:
        yield started


def test_the_demo_serves_https_on_the_network_address(running, namespace, tmp_path):
    text, port, https_port = running
    for role in ("referrer", "specialist", "supervisor"):
        assert f"http://127.0.0.1:{port}/{role}.html#token=" in text
        assert f"https://{ADDRESS}:{https_port}/{role}.html#token=" in text
    assert "Your browser will warn that the certificate is not trusted" in text
    cert_file = tmp_path / "var/demo-tls/cert.pem"
    assert str(cert_file) in text
    assert oct((tmp_path / "var/demo-tls/key.pem").stat().st_mode & 0o777) == "0o600"
    head, served = https_get(namespace, https_port, cert_file, time.monotonic() + 20)
    assert head.startswith("HTTP/1.1 200")
    assert "Strict-Transport-Security: max-age=31536000" in head
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ADDRESS in {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    assert served == x509.load_pem_x509_certificate(cert_file.read_bytes())
    with namespace.entered():  # and plain HTTP on loopback, for this computer
        plain = socket.create_connection(("127.0.0.1", port), timeout=5)
    with plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert plain.recv(4096).startswith(b"HTTP/1.1 200")
