"""HTTPS served by Jisr itself (``JISR_TLS_CERT_FILE``, ``JISR_TLS_KEY_FILE``):
the server's TLS context, checked at start, and HSTS on every HTTPS answer.

Browsers give the camera and microphone only to secure contexts (HTTPS, or
localhost), so anything but a one-machine trial needs HTTPS: here, or at a reverse
proxy in front (deploy/Caddyfile; ``JISR_TRUSTED_PROXIES``)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .proxies import CLIENT_SCHEME

# A year; browsers then refuse plain HTTP to this host (and certificate errors) for
# that long. Not for subdomains: a hospital's other hosts are not Jisr's to decide.
HSTS = "max-age=31536000"


def check_certificate(path: Path) -> x509.Certificate:
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    leaf = chain[0]
    expiry = leaf.not_valid_after_utc
    if expiry <= datetime.datetime.now(datetime.UTC):
        raise ValueError(f"the certificate in {path} expired on {expiry:%Y-%m-%d}")
    return leaf


def check_key(path: Path) -> None:
    try:
        load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):  # TypeError: the key wants a passphrase
        raise ValueError(f"{path} holds no unencrypted PEM private key") from None


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server's TLS context: TLS 1.2 and 1.3 only, Python's default ciphers
    (forward-secret suites only, no SHA-1 MACs). ValueError says plainly what is
    wrong with the files: unreadable, not PEM, expired, or another certificate's key."""
    check_certificate(cert_file)
    check_key(key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError:
        raise ValueError(f"the key in {key_file} is not the key of the certificate in "
                         f"{cert_file}") from None  # fmt: skip
    return context


async def strict_transport(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer to an HTTPS request (here, or at a
    trusted proxy) tells the browser to use HTTPS only from now on."""
    if request.secure or request.get(CLIENT_SCHEME) == "https":
        response.headers["Strict-Transport-Security"] = HSTS


def self_signed(
    addresses: Sequence[str], names: Sequence[str] = ("localhost",), days: float = 90,
    start: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A self-signed server certificate (P-256) for these IP addresses and DNS
    names, valid ``days`` from ``start`` (now): its PEM and its key's PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = start or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Jisr")])
    alt_names = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
