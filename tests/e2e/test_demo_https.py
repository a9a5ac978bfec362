"""The demo's HTTPS link, opened by a browser on another computer: headless
Chromium reaches `jisr serve --demo` on its network address (10.77.0.1, in a
network namespace of the test's own), trusts the certificate the demo made by its
public key only (as a person continuing past the warning would), and the page is a
secure context: its signaling connects over wss: and the camera and the microphone
are given to it."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.conftest import CHROMIUM_FLAGS
from tests.e2e.test_consult_flow import state, wait_until
from tests.support.demo import ADDRESS, demo, https_get, machine_with_address

pytestmark = pytest.mark.e2e

GET_USER_MEDIA_JS = (
    "const done = arguments[arguments.length - 1];"
    "navigator.mediaDevices.getUserMedia({audio: true, video: true})"
    ".then(s => { done(s.getTracks().map(t => t.kind).sort()); s.getTracks().forEach("
    "t => t.stop()); }, e => done(String(e)));"
)


def spki_hash(cert_file) -> str:
    """What --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the key."""
    key = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_the_demo_page_over_https_is_a_secure_context(tmp_path, browsers):
    with machine_with_address() as namespace, demo(namespace, tmp_path) as (text, _, port):
        link = next(line.split()[1] for line in text.splitlines()
                    if line.split()[:1] == ["referrer"] and f"https://{ADDRESS}:" in line)
        cert_file = tmp_path / "var/demo-tls/cert.pem"
        https_get(namespace, port, cert_file, time.monotonic() + 20)  # listening
        resolver = [f for f in CHROMIUM_FLAGS if f.startswith("--host-resolver-rules=")][0]
        with namespace.entered():  # chromedriver and Chromium start there, and stay
            page = browsers(f"--ignore-certificate-errors-spki-list={spki_hash(cert_file)}",
                            f"{resolver}, EXCLUDE {ADDRESS}")  # fmt: skip
            try:
                page.get(link)
                try:
                    wait_until(lambda: state(page).get("ready"), 20, "the referrer page ready")
                except AssertionError as failed:  # a page that never started: what it shows
                    raise AssertionError(f"{failed}; the page: {state(page)}") from None
                assert page.execute_script("return window.isSecureContext") is True
                assert page.execute_script("return location.origin") == f"https://{ADDRESS}:{port}"
                assert page.execute_async_script(GET_USER_MEDIA_JS) == ["audio", "video"]
            finally:
                page.quit()  # from here: its driver listens in the namespace
