"""Redis as ``deploy/redis/`` sets it up (TLS only, ACL users, a replica and three
Sentinels), on free loopback ports, for tests and ``bench.failover``: the deploy
files themselves, with the test's ports, paths and passwords put in, each started
with the command of its systemd drop-in (``deploy/systemd/redis-server.service.d``,
``redis-sentinel.service.d``), so every one of them is exercised. Files holding a
secret are written with mode 0600."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.redis_server import free_port
from tests.support.deploy import DEPLOY, command, executable, unit
from tests.support.tls import Pki

SERVER_UNIT = "redis-server.service.d/jisr.conf"
SENTINEL_UNIT = "redis-sentinel.service.d/jisr.conf"
MASTER = "jisr"  # the name deploy/redis/sentinel.conf monitors
# Test-friendly, yet realistic: a second of silence and the primary is down
# (deploy/redis/sentinel.conf uses 5 s; docs/benchmarks.md says why).
DOWN_AFTER_MS = 1000


def _token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Passwords:
    jisr: str = field(default_factory=_token)
    replica: str = field(default_factory=_token)
    sentinel: str = field(default_factory=_token)  # the data nodes' "sentinel" user
    admin: str = field(default_factory=_token)
    sentinel_client: str = field(default_factory=_token)  # what clients tell Sentinels

    def placeholders(self) -> dict[str, str]:
        def sha(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        return {
            "JISR_PASSWORD_SHA256": sha(self.jisr), "REPLICA_PASSWORD_SHA256": sha(self.replica),
            "SENTINEL_PASSWORD_SHA256": sha(self.sentinel),
            "ADMIN_PASSWORD_SHA256": sha(self.admin),
            "SENTINEL_CLIENT_PASSWORD": self.sentinel_client,
            "REPLICA_PASSWORD": self.replica, "SENTINEL_PASSWORD": self.sentinel,
        }  # fmt: skip


def write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def render(name: str, passwords: Passwords, directives: dict[str, str], extra=()) -> str:
    """deploy/``name`` ("redis/redis.conf") with its placeholders filled in and the
    named directives set (a directive is a line's first word, or first two for
    ``sentinel`` lines)."""
    text = (DEPLOY / name).read_text()
    for placeholder, value in sorted(passwords.placeholders().items(), key=lambda p: -len(p[0])):
        text = text.replace(placeholder, value)
    lines = []
    for line in text.splitlines():
        words = line.split()
        key = " ".join(words[:2]) if words[:1] == ["sentinel"] else " ".join(words[:1])
        lines.append(f"{key} {directives[key]}" if key in directives else line)
    return "\n".join([*lines, *extra]) + "\n"


class Process:
    """One redis-server or redis-sentinel on its own TLS port."""

    def __init__(self, name: str, workdir: Path, pki: Pki, passwords: Passwords) -> None:
        self.name, self.pki, self.passwords = name, pki, passwords
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def tls_paths(self) -> dict[str, str]:
        return {"tls-cert-file": str(self.pki.server_cert),
                "tls-key-file": str(self.pki.server_key), "tls-ca-cert-file": str(self.pki.ca),
                "bind": "127.0.0.1", "tls-port": str(self.port), "dir": str(self.dir),
                "logfile": str(self.dir / "log"), "pidfile": str(self.dir / "pid")}  # fmt: skip

    def client(self, **auth) -> redis.Redis:
        return redis.Redis(
            port=self.port, ssl=True, ssl_ca_certs=str(self.pki.ca),
            ssl_certfile=str(self.pki.client_cert), ssl_keyfile=str(self.pki.client_key),
            socket_timeout=2, socket_connect_timeout=2, decode_responses=True, **auth,
        )  # fmt: skip

    def start(self, drop_in: str, conf: Path, ready, timeout: float = 15.0) -> None:
        """The drop-in's command, this test's configuration file in it."""
        argv = unit(drop_in).exec_start()
        argv = command(argv, {argv[0]: executable(argv[0], Path(argv[0]).name),
                              argv[1]: str(conf)})  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # no systemd here
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     env=env)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if ready():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass
            time.sleep(0.05)  # polling a starting server, bounded by the deadline
        log = self.dir / "log"
        raise RuntimeError(f"{self.name} did not start:\n" + (
            log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"))  # fmt: skip

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class DataNode(Process):
    """deploy/redis/redis.conf, users.acl and secrets.conf, run as
    deploy/systemd/redis-server.service.d/jisr.conf runs them."""

    def start_node(self, replica_of: int | None = None) -> None:
        acl = write_private(self.dir / "users.acl",
                            render("redis/users.acl", self.passwords, {}))  # fmt: skip
        secrets_conf = write_private(
            self.dir / "secrets.conf", render("redis/secrets.conf", self.passwords, {})
        )
        directives = {**self.tls_paths(), "aclfile": str(acl), "include": str(secrets_conf)}
        extra = [f"replicaof 127.0.0.1 {replica_of}"] if replica_of else []
        text = render("redis/redis.conf", self.passwords, directives, extra)
        conf = write_private(self.dir / "redis.conf", text)
        admin = self.admin()

        def ready() -> bool:
            if not admin.ping():
                return False
            info = admin.info("replication")
            return replica_of is None or info.get("master_link_status") == "up"

        try:
            self.start(SERVER_UNIT, conf, ready)
        finally:
            admin.close()

    def admin(self) -> redis.Redis:
        return self.client(username="admin", password=self.passwords.admin)

    @property
    def url(self) -> str:
        """Where Jisr reaches it: the ACL user in the URL, its password in a file."""
        return f"rediss://jisr@127.0.0.1:{self.port}/0"


class SentinelNode(Process):
    """deploy/redis/sentinel.conf, watching ``primary``, run as
    deploy/systemd/redis-sentinel.service.d/jisr.conf runs it."""

    def start_sentinel(self, primary: DataNode, down_after_ms: int = DOWN_AFTER_MS) -> None:
        directives = {**self.tls_paths(),
                      "sentinel monitor": f"{MASTER} 127.0.0.1 {primary.port} 2",
                      "sentinel down-after-milliseconds": f"{MASTER} {down_after_ms}",
                      "sentinel failover-timeout": f"{MASTER} 10000"}  # fmt: skip
        conf = write_private(self.dir / "sentinel.conf",
                             render("redis/sentinel.conf", self.passwords, directives))  # fmt: skip
        sentinel = self.client(password=self.passwords.sentinel_client)
        try:
            self.start(SENTINEL_UNIT, conf, sentinel.ping)
        finally:
            sentinel.close()

    def view(self) -> tuple[int, int, int]:
        """(the primary's port, replicas known, other Sentinels known)."""
        client = self.client(password=self.passwords.sentinel_client)
        try:
            master = client.sentinel_master(MASTER)
            replicas = [r for r in client.sentinel_slaves(MASTER) if not r["is_sdown"]]
            return int(master["port"]), len(replicas), len(client.sentinel_sentinels(MASTER))
        finally:
            client.close()


class SentinelGroup:
    """A primary, its replica and three Sentinels (a quorum of two)."""

    def __init__(
        self, workdir: Path, pki: Pki, passwords: Passwords | None = None,
        down_after_ms: int = DOWN_AFTER_MS,
    ) -> None:  # fmt: skip
        self.dir, self.pki, self.down_after_ms = workdir, pki, down_after_ms
        self.passwords = passwords or Passwords()
        self.primary = DataNode("primary", workdir, pki, self.passwords)
        self.replica = DataNode("replica", workdir, pki, self.passwords)
        self.sentinels = [SentinelNode(f"sentinel{i}", workdir, pki, self.passwords)
                          for i in range(3)]  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        self.primary.start_node()
        self.replica.start_node(replica_of=self.primary.port)
        for sentinel in self.sentinels:
            sentinel.start_sentinel(self.primary, self.down_after_ms)
        # Sentinels find the replica and each other through the primary (hello
        # messages every 2 s): nothing to wait on but their view.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.view() == (self.primary.port, 1, 2) for s in self.sentinels):
                return
            time.sleep(0.2)  # polling the Sentinels' view, bounded by the deadline
        views = [s.view() for s in self.sentinels]
        raise RuntimeError(f"the Sentinels never saw the group: {views}")

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica, self.primary]:
            process.stop()

    def jisr_env(self) -> dict[str, str]:
        """Settings for a Jisr node reaching the primary through the Sentinels."""
        return {
            **jisr_tls_env(self.dir, self.pki, self.passwords),
            "JISR_REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "JISR_REDIS_SENTINEL_MASTER": MASTER, "JISR_REDIS_TLS": "true",
            "JISR_REDIS_USERNAME": "jisr",
            "JISR_REDIS_SENTINEL_PASSWORD_FILE": str(write_private(
                self.dir / "sentinel.password", self.passwords.sentinel_client + "\n")),
        }  # fmt: skip


def jisr_tls_env(directory: Path, pki: Pki, passwords: Passwords) -> dict[str, str]:
    """The Jisr user's password file, the CA and the client certificate."""
    password = write_private(directory / "jisr.password", passwords.jisr + "\n")
    return {
        "JISR_REDIS_PASSWORD_FILE": str(password), "JISR_REDIS_CA_FILE": str(pki.ca),
        "JISR_REDIS_CERT_FILE": str(pki.client_cert), "JISR_REDIS_KEY_FILE": str(pki.client_key),
    }  # fmt: skip
