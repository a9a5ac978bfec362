"""Ports for the tests of a node's fixed ports (the shared media port, the internal
listener): free ones to configure, and which UDP ports a process holds (from /proc,
Linux)."""

from __future__ import annotations

import os
import random
import re
import socket


def free_udp_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive UDP ports free on 127.0.0.1 just now."""
    return consecutive_free_ports(count, socket.SOCK_DGRAM)


def free_tcp_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports free on 127.0.0.1 just now."""
    return consecutive_free_ports(count, socket.SOCK_STREAM)


def consecutive_free_ports(count: int, kind: socket.SocketKind) -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, kind)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free {kind.name} ports")


def udp_ports_of(pid: int | str = "self") -> list[int]:
    """The local ports of the UDP sockets process ``pid`` holds, one entry each."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def candidate_ports(sdp: str) -> set[int]:
    """The ports of every a=candidate line."""
    lines = re.finditer(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+) ", sdp, re.IGNORECASE)
    return {int(m.group(1)) for m in lines}
