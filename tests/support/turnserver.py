"""coturn for the e2e tests, with TURN REST credentials (the ``use-auth-secret``
scheme of signaling/turn.py):

- ``coturn()``: TURN over UDP on 127.0.0.1, in the test's own namespace;
- ``tls_coturn()``: TURN over TLS (``turns:``) in the server site of
  tests/support/sites.py, run with deploy/coturn/turnserver.conf itself, only its
  addresses, secret, certificate and file paths replaced;
- ``deploy_coturn()``: the same file on 127.0.0.1, its ports free ones.

Both run the command of deploy/systemd/coturn.service.d/jisr.conf.

Needs Debian's ``coturn`` package (``turnserver``).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.certs import ServerCertificate
from tests.support.deploy import DEPLOY, command, unit
from tests.support.netns import die_with_parent, stop, which
from tests.support.sites import Sites

DEPLOY_CONFIG = DEPLOY / "coturn/turnserver.conf"
UNIT = "coturn.service.d/jisr.conf"


@dataclass
class Coturn:
    port: int
    secret: str
    realm: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _stun_answered(port: int) -> bool:
    from aioice import stun

    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(bytes(request), ("127.0.0.1", port))
            data, _ = sock.recvfrom(2048)
            response = stun.parse_message(data)
        except (OSError, ValueError):
            return False
    return response.transaction_id == request.transaction_id


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def coturn(realm: str = "jisr.test", start_timeout: float = 10.0):
    """A coturn on 127.0.0.1 (listening and relaying), TURN REST credentials, in a
    temporary folder; stopped and removed on exit."""
    executable = which("turnserver")
    if executable is None:
        raise RuntimeError("turnserver is not installed (Debian package coturn)")
    folder = Path(tempfile.mkdtemp(prefix="jisr-coturn-"))
    secret = secrets.token_urlsafe(32)
    log_path = folder / "turnserver.log"
    process = None
    try:
        for _ in range(5):  # a free port may be taken before coturn binds it
            port = _free_udp_port()
            config = folder / "turnserver.conf"
            config.write_text("\n".join([
                "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={port}",
                "use-auth-secret", f"static-auth-secret={secret}", f"realm={realm}",
                "fingerprint", "no-tls", "no-dtls", "no-tcp-relay", "allow-loopback-peers",
                "no-multicast-peers", "no-cli", "log-file=stdout", "simple-log",
                f"pidfile={folder / 'turnserver.pid'}", f"userdb={folder / 'turndb'}", "",
            ]))  # fmt: skip
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [executable, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )  # fmt: skip
            deadline = time.monotonic() + start_timeout
            while process.poll() is None and time.monotonic() < deadline:
                if _stun_answered(port):
                    break
            else:
                stop(process)
                process = None
                continue
            break
        if process is None:
            raise RuntimeError("turnserver did not start:\n" + log_path.read_text(errors="replace"))
        yield Coturn(port, secret, realm, log_path)
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)


# -- TURN over TLS, as deployed --------------------------------------------------------


def deploy_config(values: dict[str, str]) -> str:
    """deploy/coturn/turnserver.conf with the value of each key in ``values``
    replaced; every key must have exactly one line in the file."""
    lines = DEPLOY_CONFIG.read_text().splitlines()
    for key, value in values.items():
        found = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
        if len(found) != 1:
            raise AssertionError(f"{DEPLOY_CONFIG} has {len(found)} {key}= lines, not 1")
        lines[found[0]] = f"{key}={value}"
    return "\n".join(lines) + "\n"


def deploy_command(executable: str, config: Path) -> list[str]:
    """The drop-in's command, with this machine's turnserver and the test's file."""
    return command(unit(UNIT).exec_start(), {"/usr/bin/turnserver": executable,
                                             "/etc/coturn/turnserver.conf": str(config)})


def config_value(text: str, key: str) -> str:
    return re.search(rf"^{key}=(.*)$", text, re.M).group(1)


@dataclass
class TlsCoturn:
    address: str
    port: int  # tls-listening-port
    secret: str
    realm: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"turns:{self.address}:{self.port}?transport=tcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _tls_stun_answered(port: int, cert: ServerCertificate, address: str) -> bool:
    """A STUN binding answered over TLS, the certificate checked against the test's
    authority for ``address`` (through a relay on 127.0.0.1:``port``)."""
    from aioice import stun

    context = ssl.create_default_context(cafile=str(cert.ca_file))
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            with context.wrap_socket(raw, server_hostname=address) as tls:
                tls.sendall(bytes(request))
                data = tls.recv(2048)
        return stun.parse_message(data).transaction_id == request.transaction_id
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def tls_coturn(sites: Sites, cert: ServerCertificate, address: str, peer: str,
               realm: str = "jisr.test", start_timeout: float = 10.0):  # fmt: skip
    """coturn in ``sites``' server site, from the deploy file: listening and relaying
    on ``address``, TLS on the file's port with ``cert``, allowed to relay to the
    Jisr node at ``peer``. Stopped and its folder removed on exit."""
    executable = which("turnserver")
    if executable is None:
        raise RuntimeError("turnserver is not installed (Debian package coturn)")
    folder = Path(tempfile.mkdtemp(prefix="jisr-coturn-tls-"))
    secret = secrets.token_urlsafe(32)
    config = folder / "turnserver.conf"
    config.write_text(deploy_config({
        "listening-ip": address, "relay-ip": address, "static-auth-secret": secret,
        "realm": realm, "cert": str(cert.cert_file), "pkey": str(cert.key_file),
        "allowed-peer-ip": peer, "log-file": "stdout", "pidfile": str(folder / "turnserver.pid"),
        "userdb": str(folder / "turndb"),
    }))  # fmt: skip
    port = int(config_value(config.read_text(), "tls-listening-port"))
    log_path = folder / "turnserver.log"
    with open(log_path, "wb") as log:
        process = sites.popen("server", deploy_command(executable, config),
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        probe = sites.forward("server", port, host=address)
        deadline = time.monotonic() + start_timeout
        while not _tls_stun_answered(probe, cert, address):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("turnserver (TLS) did not start:\n" + log_path.read_text())
            time.sleep(0.05)  # refused at once while coturn starts: ask again shortly
        yield TlsCoturn(address, port, secret, realm, log_path)
    finally:
        stop(process)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class DeployCoturn:
    port: int  # listening-port: TURN over UDP and TCP
    tls_port: int  # tls-listening-port: TURN over TLS
    secret: str
    realm: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def deploy_coturn(cert_file: Path, key_file: Path, ca_file: Path, start_timeout: float = 10.0):
    """coturn from deploy/coturn/turnserver.conf on 127.0.0.1: its listening and TLS
    ports free ones, its realm, relay range and everything else as the file says,
    the certificate ``cert_file`` (for 127.0.0.1, signed by ``ca_file``). Stopped
    and its folder removed on exit."""
    executable = which("turnserver")
    if executable is None:
        raise RuntimeError("turnserver is not installed (Debian package coturn)")
    folder = Path(tempfile.mkdtemp(prefix="jisr-coturn-deploy-"))
    secret = secrets.token_urlsafe(32)
    config, log_path = folder / "turnserver.conf", folder / "turnserver.log"
    process = None
    try:
        for _ in range(5):  # a free port may be taken before coturn binds it
            port, tls_port = _free_udp_port(), _free_udp_port()
            config.write_text(deploy_config({
                "listening-ip": "127.0.0.1", "relay-ip": "127.0.0.1",
                "listening-port": str(port), "tls-listening-port": str(tls_port),
                "static-auth-secret": secret, "cert": str(cert_file), "pkey": str(key_file),
                "allowed-peer-ip": "127.0.0.1", "log-file": "stdout",
                "pidfile": str(folder / "turnserver.pid"), "userdb": str(folder / "turndb"),
            }))  # fmt: skip
            with open(log_path, "wb") as log:
                process = subprocess.Popen(deploy_command(executable, config), stdout=log,
                                           stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            deadline = time.monotonic() + start_timeout
            while process.poll() is None and time.monotonic() < deadline:
                if _stun_answered(port) and _tls_stun_answered_at(tls_port, ca_file):
                    break
                time.sleep(0.05)  # refused at once while coturn starts: ask again shortly
            else:
                stop(process)
                process = None
                continue
            break
        if process is None:
            raise RuntimeError("turnserver did not start:\n" + log_path.read_text(errors="replace"))
        realm = config_value(config.read_text(), "realm")
        yield DeployCoturn(port, tls_port, secret, realm, log_path)
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def _tls_stun_answered_at(port: int, ca_file: Path) -> bool:
    from aioice import stun

    context = ssl.create_default_context(cafile=str(ca_file))
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(bytes(request))
                data = tls.recv(2048)
        return stun.parse_message(data).transaction_id == request.transaction_id
    except (OSError, ValueError):
        return False
