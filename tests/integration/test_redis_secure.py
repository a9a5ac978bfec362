"""Redis as deploy/redis/ sets it up (TLS only, ACL users, client certificates),
and nodes that prove themselves: the store, its events and the rate limits all go
through TLS as the Jisr user; a wrong password stops a node with a clear code and
no password in its log; a node-map entry written straight into Redis without the
cluster secret is never placed on, located or proxied to; and a node's internal
listener answers nothing unsigned, not even from loopback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import ClientSession, WSServerHandshakeError, web

from signaling.app import create_app
from signaling.cluster import FORWARDED, Trust
from signaling.keys import CLUSTER
from signaling.logs import configure_logging
from signaling.model import NodeInfo, to_json
from signaling.store import RedisConfig, RedisStore, StoreRefused, StoreUnavailable
from tests.conftest import CLUSTER_SECRET, SECRET, make_settings
from tests.integration.test_node_loss import start_node
from tests.redis_secure import DataNode, Passwords, jisr_tls_env, write_private
from tests.redis_server import free_port
from tests.support.peers import JisrClient
from tests.support.tls import Pki, make_pki

NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "valve", "patient_ref": "P-9"}
OTHER_SECRET = "not-the-cluster-secret-" + "q" * 30


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[tuple[DataNode, Pki, Path]]:
    """One TLS-only data node with deploy/redis/users.acl, for the module."""
    workdir = tmp_path_factory.mktemp("secure-redis")
    pki = make_pki(workdir / "pki")
    node = DataNode("primary", workdir, pki, Passwords())
    node.start_node()
    try:
        yield node, pki, workdir
    finally:
        node.stop()


@pytest.fixture
def redis(secure) -> DataNode:
    node = secure[0]
    admin = node.admin()
    admin.flushall()
    admin.close()
    return node


def node_env(secure) -> dict[str, str]:
    node, pki, workdir = secure
    return {"JISR_REDIS_URL": node.url, **jisr_tls_env(workdir, pki, node.passwords)}


def node_settings(secure, **overrides):
    values = {k.removeprefix("JISR_").lower(): v for k, v in node_env(secure).items()}
    return make_settings(**values, node_heartbeat_s=1, **overrides)


async def test_store_events_and_rate_limits_go_through_tls_as_the_jisr_user(
    aiohttp_client, secure, redis, tokens
):
    client = await aiohttp_client(create_app(node_settings(secure), node_id="n_a"))
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": tokens.specialist, "ref": "a"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    created = await client.post("/api/consults", json=NEW, headers=tokens.header(tokens.referrer))
    assert created.status == 201, await created.text()
    consult = await created.json()
    pushed = await ws.receive_json(timeout=5)  # through the events' own TLS connection
    assert pushed["type"] == "consult.updated" and pushed["consult"]["id"] == consult["id"]

    admin = redis.admin()
    try:
        assert admin.keys("jisr:limits:*")  # the shared rate limits, counted in Redis
        users = {c["user"] for c in admin.client_list()}
        assert users == {"jisr", "admin"}, users  # store, events, limits: the Jisr user
        admin.script_flush()  # as after a failover: the new primary knows no script
    finally:
        admin.close()
    accepted = await client.post(
        f"/api/consults/{consult['id']}/accept", headers=tokens.header(tokens.specialist)
    )
    assert accepted.status == 200, await accepted.text()  # NOSCRIPT: loaded again
    await ws.close()


async def test_without_a_client_certificate_or_with_another_ca_redis_is_unavailable(
    secure, redis, tmp_path
):
    node, pki, _ = secure
    stranger = make_pki(tmp_path / "other-pki")
    base = RedisConfig(url=node.url, password=node.passwords.jisr, tls=True)
    for config in (
        replace(base, ca_file=str(pki.ca)),  # no client certificate
        replace(base, ca_file=str(stranger.ca), cert_file=str(pki.client_cert),
                key_file=str(pki.client_key)),
    ):  # fmt: skip
        store = RedisStore(config, connect_timeout=2)
        with pytest.raises(StoreUnavailable) as caught:
            await store.start()
        assert type(caught.value) is StoreUnavailable and caught.value.code == "store_unavailable"
        await store.close()
    wrong = replace(base, password="wrong", ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                    key_file=str(pki.client_key))  # fmt: skip
    store = RedisStore(wrong)
    with pytest.raises(StoreRefused) as refused:
        await store.start()
    assert refused.value.code == "store_auth_failed"
    await store.close()


async def run_serve(env: dict[str, str], workers: int = 1) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling.cli", "serve", "--workers", str(workers),
        env={**os.environ, "JISR_JWT_SECRET": SECRET, "JISR_CLUSTER_SECRET": CLUSTER_SECRET,
             "JISR_PORT": str(free_port()), "JISR_ICE_ADDRESSES": "127.0.0.1", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(errors="replace")


async def test_a_wrong_password_stops_the_node_with_a_clear_code_and_no_password_logged(
    secure, redis, tmp_path
):
    node = secure[0]
    env = node_env(secure)
    wrong = "wrong-" + node.passwords.jisr[::-1]
    in_file = {**env, "JISR_REDIS_PASSWORD_FILE": str(write_private(tmp_path / "pw", wrong))}
    in_url = {k: v for k, v in env.items() if k != "JISR_REDIS_PASSWORD_FILE"}
    in_url["JISR_REDIS_URL"] = node.url.replace("jisr@", f"jisr:{wrong}@")
    for code, output in await asyncio.gather(run_serve(in_file), run_serve(in_url)):
        assert code == 1, output
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        failed = [line for line in lines if line["event"] == "node.start_failed"]
        assert [line["reason"] for line in failed] == ["store_auth_failed"], output
        assert wrong not in output and node.passwords.jisr not in output
        assert "Traceback" not in output
    # with workers: they are not restarted in a loop; the whole server stops
    code, output = await run_serve(in_file, workers=2)
    assert code == 1, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert "node.workers_stopped" in [line["event"] for line in lines], output
    assert "node.worker_restarted" not in output


async def attacker_listener(aiohttp_server) -> tuple[str, list[str]]:
    """A listener at the attacker's URL that notes every request reaching it."""
    reached: list[str] = []

    async def note(request: web.Request) -> web.Response:
        reached.append(f"{request.method} {request.path}")
        return web.json_response({"type": "welcome"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", note)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), reached


def forge(admin, node: str, internal_url: str, secret: str | None) -> None:
    """A node-map entry written straight into Redis: no load, all the capacity."""
    info = NodeInfo(node=node, internal_url=internal_url, sessions=0, capacity=10**6)
    if secret is not None:
        info = Trust(secret, node).sign(info, ttl_s=3600)
    admin.set(f"jisr:node:{node}", json.dumps(to_json(info)), px=3_600_000)
    admin.sadd("jisr:nodes", node)


async def accept_one(http: ClientSession, base: str, tokens) -> dict:
    created = await http.post(f"{base}/api/consults", json=NEW,
                              headers=tokens.header(tokens.referrer))  # fmt: skip
    assert created.status == 201, await created.text()
    consult = await created.json()
    accepted = await http.post(f"{base}/api/consults/{consult['id']}/accept",
                               headers=tokens.header(tokens.specialist))  # fmt: skip
    assert accepted.status == 200, await accepted.text()
    return (await accepted.json())["session"]


async def test_a_forged_node_entry_is_never_placed_on_located_or_proxied_to(
    aiohttp_server, secure, redis, tokens
):
    attacker, reached = await attacker_listener(aiohttp_server)
    app = create_app(node_settings(secure), node_id="n_a")
    base = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    admin = redis.admin()
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        await app[CLUSTER].heartbeat()
        forge(admin, "n_evil", attacker, OTHER_SECRET)  # signed, with another secret
        forge(admin, "n_bare", attacker, None)  # not signed at all
        async with ClientSession() as http:
            placed = [(await accept_one(http, base, tokens)) for _ in range(12)]
            assert {s["node"] for s in placed} == {"n_a"}  # though n_a is the busiest

            # A session pointed at the forged node: it is neither asked about the
            # session nor sent the user's token; this node takes the session over.
            session_id = placed[0]["id"]
            admin.hset(f"jisr:session:{session_id}", "node", json.dumps("n_evil"))
            view = await http.get(f"{base}/api/sessions/{session_id}",
                                  headers=tokens.header(tokens.referrer))  # fmt: skip
            assert view.status == 200, await view.text()
            client = JisrClient(http, base, tokens.referrer)
            await client.connect()
            joined = await client.join(session_id)
            await client.close()
            assert joined["type"] == "joined", joined
            assert json.loads(admin.hget(f"jisr:session:{session_id}", "node")) == "n_a"

            # The control: the same entry signed with the cluster secret is a node.
            forge(admin, "n_evil", attacker, CLUSTER_SECRET)
            assert (await accept_one(http, base, tokens))["node"] == "n_evil"
    finally:
        configure_logging()
        admin.close()
    assert reached == []  # not one request reached the attacker's listener
    forged = [json.loads(line) for line in stream.getvalue().splitlines()
              if '"cluster.forged_entry"' in line]  # fmt: skip
    assert sorted((line["node"], line["reason"]) for line in forged) == [
        ("n_bare", "unsigned"), ("n_evil", "bad_signature")
    ]  # each once, however many placements read the node map
    assert CLUSTER_SECRET not in stream.getvalue() and OTHER_SECRET not in stream.getvalue()


async def test_the_internal_listener_answers_only_signed_requests(secure, redis, tokens, tmp_path):
    node, pki, _ = secure
    port = free_port()
    process = start_node(
        "n_a", port, None, tmp_path / "n_a.log", **node_env(secure),
        JISR_INTERNAL_TLS_CERT_FILE=str(pki.server_cert),
        JISR_INTERNAL_TLS_KEY_FILE=str(pki.server_key),
    )  # fmt: skip
    admin = node.admin()
    try:
        internal = await internal_url_of(admin, "n_a", process)
        assert internal.startswith("https://127.0.0.1:")
        async with ClientSession() as http:
            await refused_unsigned(http, internal, f"http://127.0.0.1:{port}", pki, tokens)
    finally:
        admin.close()
        process.terminate()
        process.wait(20)


async def internal_url_of(admin, name: str, process: subprocess.Popen) -> str:
    async with asyncio.timeout(30):
        while (entry := admin.get(f"jisr:node:{name}")) is None:
            assert process.poll() is None, "the node exited"
            await asyncio.sleep(0.1)  # polling the node map, bounded by the timeout
    return json.loads(entry)["internal_url"]


async def refused_unsigned(http, internal: str, public: str, pki: Pki, tokens) -> None:
    import ssl

    tls = ssl.create_default_context(cafile=str(pki.ca))
    bearer = tokens.header(tokens.referrer)
    signed = Trust(CLUSTER_SECRET, "n_b").headers
    wrong = Trust(OTHER_SECRET, "n_b").headers
    attempts = [
        (internal + "/healthz", {}),  # from loopback, no signature
        (internal + "/api/sessions/s_x", {FORWARDED: "1", **bearer}),  # ask_host, unsigned
        (internal + "/api/sessions/s_x", {FORWARDED: "1", **bearer,
                                          **wrong("GET", "/api/sessions/s_x")}),
        (internal + "/healthz", signed("GET", "/other")),  # signed for another path
        (public + "/api/sessions/s_x", {FORWARDED: "1", **bearer}),  # via the public port
    ]  # fmt: skip
    for url, headers in attempts:
        async with http.get(url, headers=headers, ssl=tls) as response:
            assert response.status == 403, url
            assert (await response.json())["error"]["code"] == "cluster_auth"
    wss = internal.replace("https", "wss", 1) + "/ws"
    for headers in ({}, wrong("GET", "/ws")):  # the signaling proxy, unsigned
        with pytest.raises(WSServerHandshakeError) as caught:
            await http.ws_connect(wss, headers=headers, ssl=tls)
        assert caught.value.status == 403
    async with http.get(internal + "/healthz", headers=signed("GET", "/healthz"), ssl=tls) as ok:
        assert ok.status == 200
    ws = await http.ws_connect(wss, headers=signed("GET", "/ws"), ssl=tls)
    await ws.send_json({"type": "auth", "token": tokens.referrer})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    await ws.close()
