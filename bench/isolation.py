"""Where a benchmark's processes run.

``enter_namespace`` re-runs the benchmark inside a network namespace of its own,
with a veth pair whose one end carries ``SERVER_ADDRESS``: nothing the benchmark
sends leaves it, and a middle that gathers no ICE candidate on loopback (Janus)
has an address. ``GeneratorNamespace`` moves the pair's other end into a second
namespace for the load generators (``GENERATOR_ADDRESS``), so their packets
cross a link to reach the server instead of sharing its loopback. CPU pinning
(``SERVER_CPUS``, ``GENERATOR_CPUS``) keeps the server on one core and the
generators on the other, so the server's figure is its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.support.netns import new_namespace, run_in, setns

SERVER_ADDRESS = "10.89.0.1"
GENERATOR_ADDRESS = "10.89.0.2"
INTERFACE = "jb0"  # the server's end; INTERFACE + "p" is the other
NAMESPACE_FLAG = "JISR_BENCH_NETNS"


def enter_namespace(module: str) -> str | None:
    """Re-run ``python -m module`` (same arguments) in a fresh network namespace
    (never returns when it can); None once inside, else why it cannot."""
    if os.environ.get(NAMESPACE_FLAG) == "1":
        return None
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip (iproute2) is missing"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "this user cannot make a network namespace (unshare -n)"
    setup = (
        f"ip link set lo up && ip link add {INTERFACE} type veth peer name {INTERFACE}p"
        f" && ip addr add {SERVER_ADDRESS}/24 dev {INTERFACE} && ip link set {INTERFACE} up"
        f' && ip link set {INTERFACE}p up && exec "$@"'
    )
    os.environ[NAMESPACE_FLAG] = "1"
    argv = [sys.executable, "-m", module, *sys.argv[1:]]
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", setup, "sh", *argv])
    return "exec failed"  # not reached


def pinning() -> tuple[set[int], set[int]] | None:
    """(server cores, generator cores) when there are two cores or more to share."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[0]}, set(cores[1:])


class GeneratorNamespace:
    """A namespace for the load generators, holding the veth pair's other end at
    ``GENERATOR_ADDRESS``; held by a descriptor of this process (``path`` names it
    for children), gone when this process ends."""

    def __init__(self) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            self.fd = new_namespace(home)
        finally:
            os.close(home)
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"
        peer = INTERFACE + "p"
        subprocess.run(["ip", "link", "set", peer, "netns", self.path], check=True)
        run_in(self.path, "ip", "link", "set", "lo", "up")
        run_in(self.path, "ip", "addr", "add", f"{GENERATOR_ADDRESS}/24", "dev", peer)
        run_in(self.path, "ip", "link", "set", peer, "up")


def place_generator(netns_path: str | None, cpus: set[int] | None) -> None:
    """In a load generator process, first thing: into its namespace, onto its cores."""
    if netns_path is not None:
        fd = os.open(netns_path, os.O_RDONLY)
        setns(fd)
        os.close(fd)
    if cpus:
        os.sched_setaffinity(0, cpus)
