"""The files of deploy/ agree with each other and with what the tests run:

- the systemd units pass ``systemd-analyze verify``;
- each service of deploy/compose.yaml runs its unit's command, as its user, with
  its settings, limits and restart policy, and mounts the files of deploy/ where
  the units' commands look for them (deploy/debian.Dockerfile installs the Debian
  packages whose programs those commands are; the project's Dockerfile builds the
  virtual environment and web folder jisr.service uses);
- every path a unit, a configuration file or the Compose file names is a file of
  deploy/, installed where deploy/README.md says;
- deploy/jisr.env reads the same to systemd, Compose and sh, and its addresses and
  ports are the ones the Redis, Sentinel, coturn and Caddy files use;
- deploy/README.md's firewall table lists every port these files open.

tests/integration/test_deploy.py runs the deployment itself."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.support.deploy import (
    DEPLOY,
    INSTALLED,
    PER_NODE,
    ROOT,
    Unit,
    compose,
    env_file,
    unit,
)

DEBIAN_UNITS = Path("/usr/lib/systemd/system")
# Debian's units our drop-ins change, and the package that ships each.
DEBIAN = {"redis-server": "redis-server", "redis-sentinel": "redis-sentinel",
          "coturn": "coturn", "caddy": "caddy"}  # fmt: skip
SERVICES = {  # Compose service -> its unit in deploy/systemd/
    "jisr-a": "jisr.service", "jisr-b": "jisr.service",
    "redis-primary": "redis-server.service.d/jisr.conf",
    "redis-replica": "redis-server.service.d/jisr.conf",
    "sentinel-a": "redis-sentinel.service.d/jisr.conf",
    "sentinel-b": "redis-sentinel.service.d/jisr.conf",
    "sentinel-edge": "redis-sentinel.service.d/jisr.conf",
    "caddy": "caddy.service.d/jisr.conf", "coturn": "coturn.service.d/jisr.conf",
}  # fmt: skip
MACHINES = {"a": {"jisr-a", "redis-primary", "sentinel-a"},
            "b": {"jisr-b", "redis-replica", "sentinel-b"},
            "edge": {"caddy", "coturn", "sentinel-edge"}}  # fmt: skip


def debian_unit(name: str) -> Unit:
    path = DEBIAN_UNITS / f"{name}.service"
    if not path.is_file():
        pytest.fail(f"{path} is missing (Debian: apt-get install {DEBIAN[name]})", pytrace=False)
    return Unit(path)


def effective(drop_in: str, key: str) -> str | None:
    """A setting of the unit as systemd sees it: the drop-in's, else Debian's."""
    ours = unit(drop_in)
    if drop_in.endswith(".service"):
        return ours.value(key)
    return ours.value(key) or debian_unit(drop_in.split(".service.d")[0]).value(key)


def conf_value(name: str, key: str) -> str:
    """The value of a ``key value`` (Redis) or ``key=value`` (coturn) line of a file
    of deploy/; the line must be there once."""
    found = re.findall(rf"^{re.escape(key)}[ =](.*)$", (DEPLOY / name).read_text(), re.M)
    assert len(found) == 1, f"deploy/{name} has {len(found)} {key!r} lines"
    return found[0].strip()


def node_b() -> dict[str, str]:
    return {**env_file(), **compose()["services"]["jisr-b"]["environment"]}


# -- systemd ----------------------------------------------------------------------


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    """Against a root of their own (``--root``): Debian's units from this machine,
    ours installed where deploy/README.md says, and a stand-in for each program a
    command names, since verify checks that every command's program exists and
    the test machine has no /opt/jisr (nor need it have Debian's programs at
    those paths). Any warning fails, not only errors."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (Debian: apt-get install systemd)",
                    pytrace=False)  # fmt: skip
    root = tmp_path / "root"
    shutil.copytree(DEBIAN_UNITS, root / DEBIAN_UNITS.relative_to("/"), symlinks=True)
    names = ["jisr.service", *(f"{name}.service" for name in DEBIAN)]
    units = [unit("jisr.service")]
    for name in DEBIAN:
        units += [debian_unit(name), unit(f"{name}.service.d/jisr.conf")]
    for installed, source in INSTALLED.items():
        if installed.startswith("/etc/systemd/"):
            target = root / installed.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DEPLOY / source, target)
    for program in {shlex_first(line) for u in units for key in ("ExecStart", "ExecReload")
                    for line in u.values(key)}:  # fmt: skip
        stand_in = root / program.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    done = subprocess.run([analyze, "verify", f"--root={root}", *names],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr


def shlex_first(line: str) -> str:
    return line.split()[0].lstrip("@-:+!")


def test_jisr_service_runs_a_hardened_node_from_the_virtual_environment():
    service = unit("jisr.service")
    assert service.exec_start()[:2] == ["/opt/jisr/.venv/bin/jisr", "serve"]
    assert service.value("EnvironmentFile") == "/etc/jisr/jisr.env"
    assert service.value("User") == "jisr" and service.value("Restart") == "on-failure"
    for key, value in {"NoNewPrivileges": "true", "ProtectSystem": "strict",
                       "PrivateTmp": "true"}.items():  # fmt: skip
        assert service.value(key) == value, key
    assert int(service.value("LimitNOFILE")) >= 65536
    # The data folders are the only ones it may write, and both nodes share them.
    settings = env_file()
    for key in ("JISR_RECORDINGS_DIR", "JISR_ATTACHMENTS_DIR"):
        folder = PurePosixPath(settings[key])
        for allowed in (service.values("ReadWritePaths"), service.values("RequiresMountsFor",
                                                                         "Unit")):  # fmt: skip
            assert any(folder.is_relative_to(p) for p in allowed), (key, allowed)


# -- Compose --------------------------------------------------------------------------


def test_each_compose_service_runs_its_units_command_as_its_user_with_its_settings():
    services = compose()["services"]
    assert set(services) == set(SERVICES)
    for name, service in services.items():
        drop_in = SERVICES[name]
        assert service["command"] == unit(drop_in).exec_start(), name
        assert service["user"] == effective(drop_in, "User"), name
        assert service["network_mode"] == "host", name  # the machine's addresses and ports
        assert service["restart"] == effective(drop_in, "Restart"), name
        assert service["ulimits"]["nofile"] == int(effective(drop_in, "LimitNOFILE")), name
        machines = [m for m, members in MACHINES.items() if name in members]
        assert service["profiles"] == machines, name
    assert services["caddy"]["environment"] == unit("caddy.service.d/jisr.conf").environment()


def test_the_compose_nodes_have_jisr_env_and_differ_only_per_node():
    services, settings = compose()["services"], env_file()
    for name in ("jisr-a", "jisr-b"):
        assert (DEPLOY / services[name]["env_file"]) == DEPLOY / INSTALLED[
            unit("jisr.service").value("EnvironmentFile")]  # fmt: skip
        assert sorted(services[name]["environment"]) == sorted(PER_NODE), name
    a, b = services["jisr-a"]["environment"], services["jisr-b"]["environment"]
    assert a == {key: settings[key] for key in PER_NODE}  # node a: jisr.env's own values
    assert all(a[key] != b[key] for key in PER_NODE), (a, b)
    # What deploy/README.md says differs per node (and jisr.env's head too).
    readme = (DEPLOY / "README.md").read_text()
    for key in PER_NODE:
        assert f"`{key}`" in readme, key
        assert key in (DEPLOY / "jisr.env").read_text().split("JISR_NODE_ID=a")[0], key


def test_every_file_the_units_and_compose_name_is_a_file_of_deploy():
    for source in INSTALLED.values():
        assert (DEPLOY / source).is_file(), source
    # The units' commands and settings files, and the files the configurations
    # include, name installed files only.
    named = set()
    for drop_in in set(SERVICES.values()):
        named |= {arg for arg in unit(drop_in).exec_start()[1:] if arg.startswith("/etc/")}
        named |= set(unit(drop_in).values("EnvironmentFile"))
    named |= {conf_value("redis/redis.conf", "aclfile"), conf_value("redis/redis.conf", "include")}
    assert named <= set(INSTALLED), named - set(INSTALLED)
    units = {path for path in INSTALLED if path.startswith("/etc/systemd/")}
    assert named | units == set(INSTALLED), set(INSTALLED) - named - units  # none unused

    # Compose mounts the same files where the commands look for them.
    services = compose()["services"]
    for name, service in services.items():
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
                mounts[target] = Path(source)
        for arg in service["command"][1:]:
            if arg.startswith("/etc/"):
                found = [PurePosixPath(source) / PurePosixPath(arg).relative_to(target)
                         for target, source in mounts.items()
                         if PurePosixPath(arg).is_relative_to(target)]  # fmt: skip
                assert [str(f) for f in found] == [INSTALLED[arg]], (name, arg, found)
        for build in [service["build"]]:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), (name, build)


def test_the_images_hold_the_programs_the_commands_run():
    services, settings = compose()["services"], env_file()
    # The project's Dockerfile: the virtual environment and web folder of jisr.service.
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1]
    web = re.search(r"^COPY web (\S+)$", dockerfile, re.M).group(1)
    assert str(PurePosixPath(workdir) / web) == settings["JISR_WEB_DIR"]
    venv = re.search(r"python -m venv (\S+)", dockerfile).group(1)
    assert services["jisr-a"]["command"][0] == f"{venv}/bin/jisr"
    # deploy/debian.Dockerfile: Debian's packages, whose programs the commands are.
    debian = (DEPLOY / "debian.Dockerfile").read_text()
    words = debian.split("apt-get install", 1)[1].split("&&", 1)[0].replace("\\", " ").split()
    installed = [word for word in words if not word.startswith("-")]
    if shutil.which("dpkg-query") is None:
        pytest.fail("dpkg-query is missing: the deployment is for Debian", pytrace=False)
    for name, service in services.items():
        if service["build"]["dockerfile"] != "debian.Dockerfile":
            continue
        program = service["command"][0]
        found = subprocess.run(["dpkg-query", "-S", program], capture_output=True, text=True)
        assert found.returncode == 0, f"{program}: no package (apt-get install {DEBIAN})"
        package = found.stdout.split(":")[0]
        assert package in installed, (name, program, package)


# -- jisr.env and the other files -------------------------------------------------


def test_jisr_env_reads_the_same_to_sh():
    """systemd and Compose read NAME=value lines as they are (env_file() checks the
    file holds nothing else); so does sh, here."""
    done = subprocess.run(["sh", "-c", 'set -a; . "$0"; env', str(DEPLOY / "jisr.env")],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          check=True)  # fmt: skip
    read = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("JISR_"))
    assert read == env_file()


def test_jisr_env_points_at_the_redis_sentinel_coturn_and_caddy_files():
    a, b = env_file(), node_b()
    edge = a["JISR_TRUSTED_PROXIES"]  # Caddy's machine
    machines = {a["JISR_INTERNAL_HOST"], b["JISR_INTERNAL_HOST"], edge}
    assert len(machines) == 3
    # Redis: the Sentinels on the three machines, watching the primary on machine a.
    sentinels = [item.rpartition(":") for item in a["JISR_REDIS_SENTINELS"].split(",")]
    assert {host for host, _, _ in sentinels} == machines
    assert {port for _, _, port in sentinels} == {conf_value("redis/sentinel.conf", "tls-port")}
    name, host, port, quorum = conf_value("redis/sentinel.conf", "sentinel monitor").split()
    assert (name, host, port) == (a["JISR_REDIS_SENTINEL_MASTER"],
                                  conf_value("redis/redis.conf", "bind"),
                                  conf_value("redis/redis.conf", "tls-port"))  # fmt: skip
    assert host == a["JISR_INTERNAL_HOST"] and quorum == "2"
    assert conf_value("redis/sentinel.conf", "bind") == a["JISR_INTERNAL_HOST"]  # machine a's
    assert re.search(rf"^user {a['JISR_REDIS_USERNAME']} on ",
                     (DEPLOY / "redis/users.acl").read_text(), re.M)  # fmt: skip
    # Caddy: both nodes, as each listens.
    upstreams = unit("caddy.service.d/jisr.conf").environment()["JISR_UPSTREAMS"].split()
    assert upstreams == [f"{n['JISR_HOST']}:{n['JISR_PORT']}" for n in (a, b)]
    # coturn: the URLs' ports and host, relaying to both nodes' media addresses.
    urls = re.findall(r"(turns?):([^:,?]+):(\d+)", a["JISR_TURN_URLS"])
    assert [(scheme, port) for scheme, _, port in urls] == [
        ("turn", conf_value("coturn/turnserver.conf", "listening-port")),
        ("turns", conf_value("coturn/turnserver.conf", "tls-listening-port"))]
    assert {host for _, host, _ in urls} == {conf_value("coturn/turnserver.conf", "realm")}
    low, _, high = conf_value("coturn/turnserver.conf", "allowed-peer-ip").partition("-")
    span = range(int(ipaddress.ip_address(low)), int(ipaddress.ip_address(high or low)) + 1)
    for node in (a, b):
        assert int(ipaddress.ip_address(node["JISR_ICE_ADDRESSES"])) in span
    # Compose: the nodes' files and folders are mounted.
    volumes = compose()["services"]["jisr-a"]["volumes"]
    targets = [PurePosixPath(volume.split(":")[1]) for volume in volumes]
    for key, value in a.items():
        if value.startswith("/etc/jisr/") or value.startswith("/srv/"):
            assert any(PurePosixPath(value).is_relative_to(t) for t in targets), key


# -- deploy/README.md -------------------------------------------------------------


def readme_table(heading: str) -> list[list[str]]:
    text = (DEPLOY / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_the_readme_firewall_table_lists_every_port_the_files_open():
    settings = env_file()
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    media = int(settings["JISR_MEDIA_UDP_PORT"])
    internal = int(settings["JISR_INTERNAL_PORT"])
    workers = unit("jisr.service").exec_start()
    count = int(workers[workers.index("--workers") + 1])
    turn = "coturn/turnserver.conf"
    expected = [
        (re.search(r"\{\$JISR_CADDY_HTTPS_PORT:(\d+)\}", caddyfile).group(1), "TCP"),
        (re.search(r"\{\$JISR_CADDY_HTTP_PORT:(\d+)\}", caddyfile).group(1), "TCP"),
        (settings["JISR_PORT"], "TCP"),
        (f"{media}–{media + count - 1}", "UDP"),
        (f"{internal}–{internal + count - 1}", "TCP"),
        (conf_value(turn, "listening-port"), "UDP"), (conf_value(turn, "listening-port"), "TCP"),
        (conf_value(turn, "tls-listening-port"), "TCP"),
        (f"{conf_value(turn, 'min-port')}–{conf_value(turn, 'max-port')}", "UDP"),
        (conf_value("redis/redis.conf", "tls-port"), "TCP"),
        (conf_value("redis/sentinel.conf", "tls-port"), "TCP"),
    ]  # fmt: skip
    rows = readme_table("## Firewall")
    for port, protocol in expected:
        assert any(row[0] == port and protocol in row[1] for row in rows), (port, protocol)


def test_the_readme_says_where_each_file_goes():
    rows = readme_table("### Where each file goes")
    listed = {row[1].strip("`"): row[0].strip("`").removeprefix("deploy/") for row in rows}
    assert listed == INSTALLED
