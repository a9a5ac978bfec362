"""The demo on a machine with a network address, for the tests: `jisr serve --demo`
in a network namespace of the test's own where an interface holds 10.77.0.1."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from tests.redis_server import free_port
from tests.support.netns import NetworkNamespace, missing_tools
from tests.support.processes import ROOT, stop

ADDRESS = "10.77.0.1"
LAST_LINE = "Continue to the page"  # of the demo's links and its words on the certificate


@contextmanager
def machine_with_address() -> Iterator[NetworkNamespace]:
    missing = missing_tools(("ip", "nsenter"))
    if missing:
        pytest.fail(f"missing: {', '.join(missing)}", pytrace=False)
    space = NetworkNamespace()
    try:
        space.add_interface("jisr0", f"{ADDRESS}/24")
        yield space
    finally:
        space.close()


@contextmanager
def demo(namespace: NetworkNamespace, folder: Path) -> Iterator[tuple]:
    """`jisr serve --demo` in the namespace, from ``folder`` (its var/ folder):
    what it printed, once it printed its links; its HTTP port and its HTTPS port."""
    port, https_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JISR_")}
    log = folder / "demo.log"
    with log.open("wb") as out:
        process = namespace.popen(
            [sys.executable, "-m", "signaling.cli", "serve", "--demo", "--port", str(port),
             "--https-port", str(https_port)],
            cwd=folder, env={**env, "PYTHONPATH": str(ROOT)}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield read_until(process, log, LAST_LINE), port, https_port
    finally:
        stop(process)

def read_until(process: subprocess.Popen, log: Path, marker: str, timeout: float = 20) -> str:
    """What the process printed (to ``log``), once it printed ``marker``."""
    deadline = time.monotonic() + timeout
    while marker not in (printed := log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {marker!r} from the demo; it printed:\n{printed}")
        time.sleep(0.05)  # polling its output, bounded by the deadline
    return printed


def https_get(namespace: NetworkNamespace, port: int, cert_file: Path, deadline: float) -> tuple:
    """GET /healthz over TLS from inside the namespace, verifying the demo's
    certificate for the address; the answer's head and the certificate."""
    context = ssl.create_default_context(cafile=str(cert_file))
    while True:
        with namespace.entered():
            sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect((ADDRESS, port))
            break
        except ConnectionRefusedError:  # printed its links; the listener comes next
            sock.close()
            assert time.monotonic() < deadline, "the demo's HTTPS listener never answered"
            time.sleep(0.05)
    with context.wrap_socket(sock, server_hostname=ADDRESS) as tls:
        tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {ADDRESS}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode())  # fmt: skip
        head = tls.recv(4096).decode()
        return head, x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
