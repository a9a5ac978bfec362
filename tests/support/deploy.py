"""The files of deploy/ as the tests read them: systemd units and drop-ins (their
commands and environment), the nodes' settings file (deploy/jisr.env) and the
Compose file. Tests run what these files say, with only machine-specific values
(paths, addresses, ports, secrets) put in, and every value they put in must be one
the file has: a setting or a path renamed in deploy/ fails the tests instead of
going unused."""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"

# Where each file of deploy/ is installed on the machines (deploy/README.md lists
# the same): the units' commands and the configuration files name these paths.
INSTALLED = {
    "/etc/jisr/jisr.env": "jisr.env",
    "/etc/systemd/system/jisr.service": "systemd/jisr.service",
    "/etc/systemd/system/redis-server.service.d/jisr.conf":
        "systemd/redis-server.service.d/jisr.conf",
    "/etc/systemd/system/redis-sentinel.service.d/jisr.conf":
        "systemd/redis-sentinel.service.d/jisr.conf",
    "/etc/systemd/system/coturn.service.d/jisr.conf": "systemd/coturn.service.d/jisr.conf",
    "/etc/systemd/system/caddy.service.d/jisr.conf": "systemd/caddy.service.d/jisr.conf",
    "/etc/redis/redis.conf": "redis/redis.conf",
    "/etc/redis/secrets.conf": "redis/secrets.conf",
    "/etc/redis/users.acl": "redis/users.acl",
    "/etc/redis/sentinel.conf": "redis/sentinel.conf",
    "/etc/coturn/turnserver.conf": "coturn/turnserver.conf",
    "/etc/caddy/Caddyfile": "Caddyfile",
}  # fmt: skip

# Per node, the settings that differ between node a (deploy/jisr.env) and node b
# (compose.yaml's jisr-b; deploy/README.md says so too).
PER_NODE = ("JISR_NODE_ID", "JISR_HOST", "JISR_INTERNAL_HOST", "JISR_ICE_ADDRESSES")


class Unit:
    """A systemd unit file or drop-in: each section's assignments, in order (a key
    may repeat; an empty assignment resets the list, as systemd reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sections: dict[str, list[tuple[str, str]]] = {}
        section = None
        text = re.sub(r"\\\n", " ", path.read_text())  # continuation lines
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = self.sections.setdefault(line[1:-1], [])
                continue
            key, equals, value = line.partition("=")
            if section is None or not equals:
                raise AssertionError(f"{path}:{number}: not an assignment in a section")
            section.append((key.strip(), value.strip()))

    def values(self, key: str, section: str = "Service") -> list[str]:
        found: list[str] = []
        for name, value in self.sections.get(section, []):
            if name == key:
                found = [] if value == "" else [*found, value]
        return found

    def value(self, key: str, section: str = "Service") -> str | None:
        found = self.values(key, section)
        return found[-1] if found else None

    def exec_start(self) -> list[str]:
        commands = self.values("ExecStart")
        if len(commands) != 1:
            raise AssertionError(f"{self.path} has {len(commands)} ExecStart commands, not 1")
        return shlex.split(commands[0])

    def environment(self) -> dict[str, str]:
        pairs = [word.partition("=") for line in self.values("Environment")
                 for word in shlex.split(line)]  # fmt: skip
        return {key: value for key, _, value in pairs}


def unit(name: str) -> Unit:
    """deploy/systemd/``name``: a unit or a drop-in ("redis-server.service.d/jisr.conf")."""
    return Unit(SYSTEMD / name)


def command(argv: list[str], replace: Mapping[str, str]) -> list[str]:
    """``argv`` with whole arguments replaced; each one to replace must be there."""
    missing = [old for old in replace if old not in argv]
    if missing:
        raise AssertionError(f"{argv} has no {missing}: the unit changed, so must the test")
    return [replace.get(arg, arg) for arg in argv]


def executable(path: str, package: str) -> str:
    """A command's program on this machine (where a Debian package puts it)."""
    found = shutil.which(Path(path).name)
    if found is None:
        pytest.fail(f"{Path(path).name} is not installed (Debian: apt-get install {package})",
                    pytrace=False)  # fmt: skip
    return found


_ENV_LINE = re.compile(r"^(JISR_[A-Z0-9_]+)=([A-Za-z0-9_.,:/?=@+%-]*)$")


def env_file(path: Path = DEPLOY / "jisr.env") -> dict[str, str]:
    """A settings file: comment lines and KEY=value lines only, values unquoted and
    without spaces, so that systemd (EnvironmentFile=), Compose (env_file) and sh
    (``set -a; . file``) all read the same values."""
    settings: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise AssertionError(f"{path}:{number}: not JISR_NAME=value (no quotes, spaces, $): "
                                 f"{line!r}")  # fmt: skip
        if match.group(1) in settings:
            raise AssertionError(f"{path}:{number}: {match.group(1)} given twice")
        settings[match.group(1)] = match.group(2)
    return settings


def settings(base: Mapping[str, str], replace: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the values of ``replace`` put in; each key must be in ``base``."""
    missing = sorted(set(replace) - set(base))
    if missing:
        raise AssertionError(f"the settings have no {missing}: the file changed, so must the test")
    return {**base, **replace}


def compose() -> dict:
    import yaml  # the test extras: PyYAML

    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())
