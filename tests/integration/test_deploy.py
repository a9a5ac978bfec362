"""The two-node deployment of deploy/README.md, started from the files in deploy/
and driven through its front door:

- Redis primary, replica and three Sentinels: deploy/redis/ run with the commands
  of deploy/systemd/redis-server.service.d and redis-sentinel.service.d
  (tests/redis_secure.py);
- coturn: deploy/coturn/turnserver.conf with the command of
  deploy/systemd/coturn.service.d/jisr.conf;
- two Jisr nodes: the ExecStart of deploy/systemd/jisr.service (two workers each),
  with the settings of its EnvironmentFile, deploy/jisr.env, and nothing else of
  this process's environment; node b with the per-node settings of
  deploy/compose.yaml's jisr-b. Sign-in through a real OpenID provider
  (JISR_ISSUERS_FILE), recordings and case-packet files on one folder both share;
- Caddy: deploy/Caddyfile with the command and settings of
  deploy/systemd/caddy.service.d/jisr.conf, in front of both nodes.

Only this machine's values are put in: paths, loopback addresses, free ports, the
test's secrets and certificates, Caddy's own CA instead of ACME, and media on a
port the system picks (JISR_MEDIA_UDP_PORT=0: two nodes share this machine), and
internal listeners on free ports (JISR_INTERNAL_PORT). Then
a referrer creates a consult and a specialist accepts it over HTTPS through Caddy,
both join over wss:// through Caddy with real aiortc peers and each receives the
other's video; the TURN credentials Jisr hands out open allocations on coturn
over UDP and over TLS; a case-packet file sent through Caddy is read through
either node."""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest
from aioice.turn import create_turn_endpoint

from recordings.crypto import generate_key_file
from tests.conftest import CLUSTER_SECRET
from tests.integration.test_attachments import PDF
from tests.redis_secure import SentinelGroup, write_private
from tests.redis_server import free_port
from tests.support.deploy import (
    DEPLOY,
    INSTALLED,
    PER_NODE,
    command,
    compose,
    env_file,
    settings,
    unit,
)
from tests.support.failover import wait_registered
from tests.support.openid import OpenIdProvider
from tests.support.peers import JisrClient
from tests.support.processes import ROOT, caddy, stop, wait_for
from tests.support.tls import Pki, make_pki
from tests.support.turnserver import config_value, deploy_coturn
from tests.support.udp import free_tcp_ports

USERS = {
    "amal": {"password": "a-pass", "claims": {"name": "Dr Amal", "jisr_role": "referrer",
                                              "facility": "ward-7"}},
    "karim": {"password": "k-pass", "claims": {"name": "Dr Karim", "jisr_role": "specialist",
                                               "specialties": ["cardiology"]}},
}  # fmt: skip
NEW = {"specialty": "cardiology", "urgency": "critical", "summary": "tamponade?",
       "patient_ref": "P-31"}  # fmt: skip
WORKERS = ("0", "1")  # jisr.service's --workers 2: node a is a-0 and a-1


def jisr_program() -> str:
    """This checkout's `jisr` (the test environment's, importing from the checkout
    through PYTHONPATH), for /opt/jisr/.venv/bin/jisr."""
    program = Path(sys.executable).parent / "jisr"
    if not program.is_file():
        pytest.fail(f"{program} is missing: pip install -e '.[test]'", pytrace=False)
    return str(program)


def turn_urls(deployed: str, coturn) -> str:
    """deploy/jisr.env's TURN URLs, pointed at the test's coturn: each URL's port
    must be one of deploy/coturn/turnserver.conf's."""
    conf = (DEPLOY / "coturn/turnserver.conf").read_text()
    ports = {config_value(conf, "listening-port"): coturn.port,
             config_value(conf, "tls-listening-port"): coturn.tls_port}  # fmt: skip

    def point(match: re.Match) -> str:
        assert match[2] in ports, f"{match[0]}: coturn's file listens on {sorted(ports)}"
        return f"{match[1]}:127.0.0.1:{ports[match[2]]}"

    return re.sub(r"(turns?):[^:,?]+:(\d+)", point, deployed)


def node_settings(tmp: Path, pki: Pki, group: SentinelGroup, coturn, issuers: Path,
                  node_b: bool, internal_port: int,
                  records_url: str) -> dict[str, str]:  # fmt: skip
    service = unit("jisr.service")
    base = env_file(DEPLOY / INSTALLED[service.value("EnvironmentFile")])
    if node_b:  # jisr-b of compose.yaml: node b's own values
        per_node = compose()["services"]["jisr-b"]["environment"]
        assert sorted(per_node) == sorted(PER_NODE)
        base = settings(base, per_node)
    redis = group.jisr_env()
    shared = tmp / "srv"  # the filesystem both nodes mount
    return settings(base, {
        "JISR_HOST": "127.0.0.1", "JISR_PORT": str(free_port()),
        "JISR_INTERNAL_HOST": "127.0.0.1", "JISR_INTERNAL_PORT": str(internal_port),
        "JISR_INTERNAL_TLS_CERT_FILE": str(pki.server_cert),
        "JISR_INTERNAL_TLS_KEY_FILE": str(pki.server_key), "JISR_INTERNAL_CA_FILE": str(pki.ca),
        "JISR_TRUSTED_PROXIES": "127.0.0.1",  # Caddy connects from there
        "JISR_WEB_DIR": str(ROOT / "web"),
        "JISR_ICE_ADDRESSES": "127.0.0.1", "JISR_MEDIA_UDP_PORT": "0",
        "JISR_TURN_URLS": turn_urls(base["JISR_TURN_URLS"], coturn),
        "JISR_TURN_SECRET": coturn.secret,
        **{key: redis[key] for key in (
            "JISR_REDIS_SENTINELS", "JISR_REDIS_SENTINEL_PASSWORD_FILE",
            "JISR_REDIS_PASSWORD_FILE", "JISR_REDIS_CA_FILE", "JISR_REDIS_CERT_FILE",
            "JISR_REDIS_KEY_FILE")},
        "JISR_CLUSTER_SECRET_FILE": str(tmp / "cluster.secret"),
        "JISR_ISSUERS_FILE": str(issuers),
        "JISR_RECORDING_KEY": str(tmp / "recording.key"),
        "JISR_RECORDINGS_DIR": str(shared / "recordings"),
        "JISR_ATTACHMENTS_DIR": str(shared / "attachments"),
        "JISR_RECORDS_URL": records_url,  # the tests' PostgreSQL (trust: any password)
        "JISR_RECORDS_PASSWORD_FILE": str(records_password(tmp)),
        "JISR_DATA_DIR": str(tmp / ("data-b" if node_b else "data-a")),  # each node's own
    })  # fmt: skip


def records_password(tmp: Path) -> Path:
    path = tmp / "records.password"
    path.write_text("not-checked-by-the-tests-postgres\n")
    return path


def start_node(stack: ExitStack, env: dict[str, str], log: Path):
    """jisr.service's command, with only its settings (and PATH, for the program,
    and PYTHONPATH, for this checkout) in its environment, as systemd gives."""
    argv = command(unit("jisr.service").exec_start(),
                   {"/opt/jisr/.venv/bin/jisr": jisr_program()})  # fmt: skip
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **env}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=clean, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(stop, process)
    return process


def caddy_settings(site: str, upstreams: list[str]) -> dict[str, str]:
    dropin = unit("caddy.service.d/jisr.conf").environment()
    assert len(dropin["JISR_UPSTREAMS"].split()) == len(upstreams)  # both nodes
    env = settings(dropin, {"JISR_SITE": site, "JISR_UPSTREAMS": " ".join(upstreams),
                            "JISR_CADDY_TLS": "internal"})  # Caddy's own CA, not ACME
    # Defaults the Caddyfile keeps (admin on localhost:2019, HTTP on 80): not here.
    return {**env, "JISR_CADDY_ADMIN": "off", "JISR_CADDY_HTTP_PORT": str(free_port())}


async def allocate(server: dict, context: ssl.SSLContext) -> list[str]:
    """A TURN allocation on each URL of Jisr's ICE server, with its credentials."""
    opened = []
    for url in server["urls"]:
        scheme, host, port = re.match(r"(turns?):([^:]+):(\d+)", url).groups()
        transport = "tcp" if scheme == "turns" else "udp"
        relay, _ = await asyncio.wait_for(create_turn_endpoint(
            asyncio.DatagramProtocol, (host, int(port)), server["username"],
            server["credential"], ssl=context if scheme == "turns" else None,
            transport=transport), 10)  # fmt: skip
        opened.append(f"{scheme} {relay.get_extra_info('sockname')[0]}")
        relay.close()
    return opened


async def test_the_two_node_deployment_from_deploy(tmp_path, postgres_url):
    pki = make_pki(tmp_path / "pki")
    group = SentinelGroup(tmp_path / "redis", pki)
    caddy_port = free_port()
    site = f"https://127.0.0.1:{caddy_port}"
    provider = OpenIdProvider(tmp_path, "org-a", USERS, [f"{site}/auth/callback"],
                              [f"{site}/signin.html"])  # fmt: skip
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuer": [provider.issuer_entry()]}))
    write_private(tmp_path / "cluster.secret", CLUSTER_SECRET + "\n")
    generate_key_file(tmp_path / "recording.key")
    with ExitStack() as stack:
        group.start()
        stack.callback(group.stop)
        provider.start()
        stack.callback(provider.stop)
        coturn = stack.enter_context(deploy_coturn(pki.server_cert, pki.server_key, pki.ca))
        internal = free_tcp_ports(2 * len(WORKERS))  # each node's workers: their own
        envs = {name: node_settings(tmp_path, pki, group, coturn, issuers, name == "b",
                                    internal + i * len(WORKERS), postgres_url)
                for i, name in enumerate("ab")}  # fmt: skip
        nodes = {name: start_node(stack, env, tmp_path / f"jisr-{name}.log")
                 for name, env in envs.items()}  # fmt: skip
        direct = {name: f"http://127.0.0.1:{env['JISR_PORT']}" for name, env in envs.items()}
        upstreams = [f"127.0.0.1:{env['JISR_PORT']}" for env in envs.values()]
        proxy = stack.enter_context(caddy(tmp_path, DEPLOY / "Caddyfile",
                                          caddy_settings(site, upstreams)))  # fmt: skip
        for name, base in direct.items():
            wait_for(f"{base}/healthz", nodes[name], tmp_path / f"jisr-{name}.log", timeout=60)
        wait_for(f"{site}/healthz", proxy, tmp_path / "caddy.log",
                 ssl._create_unverified_context())  # only to know Caddy is up  # fmt: skip
        await wait_registered(group, {f"{n}-{w}" for n in "ab" for w in WORKERS}, nodes)
        root = tmp_path / "data/caddy/pki/authorities/local/root.crt"  # Caddy's own CA
        await consult_through_caddy(site, direct, provider, ssl.create_default_context(
            cafile=str(root)), ssl.create_default_context(cafile=str(pki.ca)))  # fmt: skip
    logs = "".join((tmp_path / f"jisr-{n}.log").read_text(errors="replace") for n in "ab")
    assert CLUSTER_SECRET not in logs and coturn.secret not in logs
    assert "Traceback" not in logs, logs[-3000:]
    for name in "ab":  # each node took one of the two WebSockets from Caddy
        log = (tmp_path / f"jisr-{name}.log").read_text(errors="replace")
        assert '"path":"/ws","status":101' in log, f"node {name} took no WebSocket"


async def consult_through_caddy(site: str, direct: dict[str, str], provider: OpenIdProvider,
                                context: ssl.SSLContext, turn_context: ssl.SSLContext) -> None:
    tokens = {login: (await provider.tokens(login))["access_token"] for login in USERS}
    bearer = {login: {"Authorization": f"Bearer {token}"} for login, token in tokens.items()}
    connector = aiohttp.TCPConnector(ssl=context)
    clients: list[JisrClient] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            async with http.get(f"{site}/api/config", headers=bearer["amal"]) as answer:
                assert answer.status == 200, await answer.text()
                assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
                servers = (await answer.json())["ice_servers"]
            turn = [s for s in servers if "username" in s]
            assert len(turn) == 1 and await allocate(turn[0], turn_context) == [
                "turn 127.0.0.1", "turns 127.0.0.1"]  # fmt: skip

            async with http.post(f"{site}/api/consults", json=NEW,
                                 headers=bearer["amal"]) as created:  # fmt: skip
                assert created.status == 201, await created.text()
                consult_id = (await created.json())["id"]
            async with http.post(f"{site}/api/consults/{consult_id}/attachments", data=PDF,
                                 headers={**bearer["amal"], "Content-Type": "application/pdf",
                                          "X-Filename": "ecg.pdf"}) as sent:  # fmt: skip
                assert sent.status == 201, await sent.text()
                attachment_id = (await sent.json())["id"]
            async with http.post(f"{site}/api/consults/{consult_id}/accept",
                                 headers=bearer["karim"]) as accepted:  # fmt: skip
                assert accepted.status == 200, await accepted.text()
                session = (await accepted.json())["session"]
            assert session["node"] in {f"{n}-{w}" for n in "ab" for w in WORKERS}

            # Straight to each node: both see the session, and both open the file
            # (one folder, one master key).
            for base in direct.values():
                async with http.get(f"{base}/api/sessions/{session['id']}",
                                    headers=bearer["amal"]) as view:  # fmt: skip
                    assert view.status == 200 and (await view.json())["node"] == session["node"]
                async with http.get(f"{base}/api/consults/{consult_id}/attachments/"
                                    f"{attachment_id}", headers=bearer["karim"]) as shown:
                    assert shown.status == 200 and await shown.read() == PDF

            # Both over wss:// through Caddy (least_conn: the second WebSocket goes to
            # the node the first did not), each peer publishing and receiving.
            for login in ("amal", "karim"):
                client = JisrClient(http, site, tokens[login])
                clients.append(client)
                assert (await client.connect())["type"] == "welcome"
                joined = await client.join(session["id"])
                assert joined["type"] == "joined", joined
                assert (await client.start_media(publish=True))["type"] == "answer"
            for client in clients:
                await asyncio.wait_for(client.by_kind("video")[0].first.wait(), 20)
        finally:
            for client in clients:
                await client.close()
