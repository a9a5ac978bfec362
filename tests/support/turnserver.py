"""coturn for the e2e tests, with TURN REST credentials (the ``use-auth-secret``
scheme of signaling/turn.py): ``coturn()``, TURN over UDP on 127.0.0.1, in the
test's own namespace.

Needs Debian's ``coturn`` package (``turnserver``).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.netns import die_with_parent, stop, which


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
