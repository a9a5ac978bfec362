"""The demo's own certificate: made for the machine's addresses (and localhost),
its key readable by its owner only, kept and used again while it is still good for
the same addresses, made again otherwise; and what the demo prints about it."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

from cryptography import x509

from signaling.demo import Listener, demo_certificate, fingerprint, links
from signaling.tls import self_signed
from tests.conftest import make_settings


def alt_names(cert_file: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ({str(a) for a in names.get_values_for_type(x509.IPAddress)},
            set(names.get_values_for_type(x509.DNSName)))  # fmt: skip


def test_the_certificate_covers_the_addresses_and_its_key_is_private(tmp_path):
    cert_file, key_file = demo_certificate(tmp_path / "tls", ["10.77.0.1", "192.168.1.20"])
    assert alt_names(cert_file) == ({"127.0.0.1", "10.77.0.1", "192.168.1.20"}, {"localhost"})
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700


def test_it_is_kept_while_good_for_the_same_addresses(tmp_path):
    folder = tmp_path / "tls"
    cert_file, key_file = demo_certificate(folder, ["10.77.0.1"])
    first = cert_file.read_bytes(), key_file.read_bytes()
    assert demo_certificate(folder, ["10.77.0.1"]) == (cert_file, key_file)
    assert (cert_file.read_bytes(), key_file.read_bytes()) == first  # the same one
    demo_certificate(folder, ["10.77.0.2"])  # the machine's address changed
    assert cert_file.read_bytes() != first[0]
    assert alt_names(cert_file)[0] == {"127.0.0.1", "10.77.0.2"}


def test_it_is_made_again_near_its_end_or_when_its_key_went_astray(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=89, hours=12)
    cert, key = self_signed(["127.0.0.1", "10.77.0.1"], days=90, start=start)
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    (folder / "key.pem").chmod(0o644)
    cert_file, key_file = demo_certificate(folder, ["10.77.0.1"])
    assert cert_file.read_bytes() != cert  # half a day left: a new one
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.write_bytes(self_signed(["127.0.0.1"])[1])  # another certificate's key
    demo_certificate(folder, ["10.77.0.1"])
    assert cert_file.read_bytes() != cert


def test_the_printed_links_and_what_the_browser_will_say(tmp_path):
    settings = make_settings()
    cert_file, key_file = demo_certificate(tmp_path, ["10.77.0.1"])
    text = links(settings, [Listener("10.77.0.1", 8443, cert_file, key_file)])
    for role in ("referrer", "specialist", "supervisor"):
        assert f"http://127.0.0.1:8080/{role}.html#token=" in text
        assert f"https://10.77.0.1:8443/{role}.html#token=" in text
    assert "your browser will warn that the certificate is not trusted" in text.lower()
    assert "this demo made it" in text and fingerprint(cert_file) in text
    alone = links(settings, [])
    assert "https://" not in alone and "only this computer" in alone
