"""``jisr serve --demo``: a single node that needs no configuration, for one
computer or two on the same network.

On this computer the pages are on plain HTTP at the loopback address (browsers
treat loopback as secure). Another computer reaches this one on a network address,
and there a browser gives the camera and microphone only to an HTTPS page: so the
demo also serves HTTPS on each of the machine's network addresses (port 8443), with
a certificate it makes itself, kept in var/demo-tls/ and made again only when it
nears its end or the addresses change."""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .auth import mint_token
from .settings import Settings
from .tls import self_signed, server_context

HTTPS_PORT = 8443
TLS_FOLDER = Path("var/demo-tls")
CERT_DAYS = 90

USERS = (
    ("referrer", {"sub": "dr-amal", "name": "Dr Amal Haddad", "facility": "hospital-a"}),
    (
        "specialist",
        {
            "sub": "dr-karim",
            "name": "Dr Karim Nasser",
            "facility": "heart-centre",
            "specialties": ["cardiology", "cardiac-surgery"],
        },
    ),
    ("supervisor", {"sub": "sup-leila", "name": "Dr Leila Mansour", "facility": "heart-centre"}),
)


class Listener(NamedTuple):
    """One more listener of a node: HTTPS on ``host:port`` with these PEM files."""

    host: str
    port: int
    cert_file: Path
    key_file: Path


def network_addresses() -> list[str]:
    """The machine's IPv4 addresses other computers may reach (not loopback)."""
    import aioice.ice

    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    return sorted({a for a in found if not ipaddress.ip_address(a).is_loopback})


def demo_environment() -> None:
    """A random signing secret for this run, a recording key in var/, and media
    reachable on loopback as well as the machine's own addresses."""
    os.environ.setdefault("JISR_JWT_SECRET", secrets.token_urlsafe(48))
    if "JISR_RECORDING_KEY" not in os.environ:  # recording works out of the box
        from recordings.crypto import generate_key_file

        key = os.path.abspath("var/recording.key")
        if not os.path.exists(key):
            os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
            generate_key_file(key)
        os.environ["JISR_RECORDING_KEY"] = key
    if "JISR_ICE_ADDRESSES" not in os.environ:
        os.environ["JISR_ICE_ADDRESSES"] = ",".join(["127.0.0.1", *network_addresses()])


def _still_good(cert_file: Path, key_file: Path, addresses: set[str]) -> bool:
    """The kept certificate covers exactly these addresses for at least a day more,
    and the kept key is its key."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        server_context(cert_file, key_file)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    covered = {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return covered == addresses and left > datetime.timedelta(days=1)


def demo_certificate(folder: Path, addresses: list[str]) -> tuple[Path, Path]:
    """The demo's certificate for ``addresses`` (and localhost, 127.0.0.1): the kept
    one when still good, else a new one; its key file is readable by its owner only."""
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    wanted = ["127.0.0.1", *addresses]
    if _still_good(cert_file, key_file, set(wanted)):
        return cert_file, key_file
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    cert, key = self_signed(wanted, ["localhost"], days=CERT_DAYS)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a key file kept from before may have been wider
    with os.fdopen(descriptor, "wb") as out:
        out.write(key)
    cert_file.write_bytes(cert)
    return cert_file, key_file


def https_listeners(port: int, folder: Path = TLS_FOLDER) -> list[Listener]:
    """HTTPS on ``port`` of each network address (none without one)."""
    addresses = network_addresses()
    if not addresses:
        return []
    cert_file, key_file = demo_certificate(folder.absolute(), addresses)
    return [Listener(address, port, cert_file, key_file) for address in addresses]


def fingerprint(cert_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def links(settings: Settings, listeners: list[Listener]) -> str:
    """What the demo prints: a signed-in link for each user, on this computer and,
    over HTTPS, from others; and what their browsers will say about the certificate."""
    tokens = [(role, mint_token(settings, role=role, **claims)) for role, claims in USERS]
    lines = ["Jisr demo: open each link in its own browser window", "  On this computer:"]
    base = f"http://{settings.host}:{settings.port}"
    lines += [f"    {role:<11} {base}/{role}.html#token={token}" for role, token in tokens]
    if not listeners:
        lines.append("  (No network address found: only this computer can take part.)")
        return "\n".join(lines)
    lines += ["  From another computer on this network (over HTTPS, so that its browser",
              "  lets the page use the camera and the microphone):"]
    for listener in listeners:
        base = f"https://{listener.host}:{listener.port}"
        lines += [f"    {role:<11} {base}/{role}.html#token={token}" for role, token in tokens]
    lines += [
        "  Your browser will warn that the certificate is not trusted: this demo made it",
        "  itself. Continue to the page anyway (Chrome: \"Advanced\", then \"Proceed to\";",
        "  Firefox: \"Advanced\", then \"Accept the Risk and Continue\"); the camera and",
        "  the microphone then work as usual. The certificate's SHA-256 fingerprint, for",
        f"  whoever wants to check it is this one ({listeners[0].cert_file}):",
        f"    {fingerprint(listeners[0].cert_file)}",
    ]
    return "\n".join(lines)
