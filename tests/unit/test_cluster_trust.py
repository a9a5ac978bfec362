"""The cluster secret: node-map entries signed and checked, node-to-node requests
signed and checked (missing, bad, out of their window, replayed), requests that
say another node carried them refused unless signed, and the settings that go
with it."""

from __future__ import annotations

import io
import json

import pytest

from signaling.app import create_app
from signaling.cluster import FORWARDED, HEADER, ClusterAuthError, Trust
from signaling.cluster.trust import CLOCK_SKEW_S, REQUEST_WINDOW_S
from signaling.logs import configure_logging
from signaling.model import NodeInfo, to_json
from signaling.settings import SettingsError, load_settings
from tests.conftest import CLUSTER_SECRET, SECRET, make_settings

OTHER_SECRET = "another-cluster-" + "z" * 40


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def trust(node: str = "n_a", secret: str = CLUSTER_SECRET, clock: Clock | None = None) -> Trust:
    return Trust(secret, node, clock=clock or Clock())


def entry(node: str = "n_a", **fields) -> NodeInfo:
    return NodeInfo(node=node, internal_url="https://10.0.0.5:9000", sessions=3, capacity=200,
                    **fields)  # fmt: skip


# node-map entries -------------------------------------------------------------------


def test_a_signed_entry_holds_and_any_change_to_it_does_not():
    clock = Clock()
    signer, reader = trust("n_a", clock=clock), trust("n_b", clock=clock)
    stored = to_json(signer.sign(entry(), ttl_s=15))
    checked = reader.check_entry("n_a", stored)
    assert isinstance(checked, NodeInfo) and checked.internal_url == "https://10.0.0.5:9000"
    for field, value in (("internal_url", "http://attacker:1"), ("sessions", 0),
                         ("capacity", 10**6), ("expires", stored["expires"] + 60_000)):  # fmt: skip
        assert reader.check_entry("n_a", {**stored, field: value}) == "bad_signature", field
    assert reader.check_entry("n_a", {**stored, "signature": "0" * 64}) == "bad_signature"


def test_entries_not_signed_with_the_secret_are_refused():
    clock = Clock()
    reader = trust("n_b", clock=clock)
    forged = trust("n_evil", OTHER_SECRET, clock).sign(entry("n_evil"), ttl_s=15)
    assert reader.check_entry("n_evil", to_json(forged)) == "bad_signature"
    assert reader.check_entry("n_evil", to_json(entry("n_evil"))) == "unsigned"
    assert reader.check_entry("n_evil", {"node": "n_evil", "sessions": "none"}) == "malformed"
    assert reader.check_entry("n_evil", "not an entry") == "malformed"  # type: ignore[arg-type]


def test_an_entry_copied_under_another_id_is_refused():
    clock = Clock()
    genuine = to_json(trust("n_a", clock=clock).sign(entry("n_a"), ttl_s=15))
    assert trust("n_b", clock=clock).check_entry("n_copy", genuine) == "mismatched_id"


def test_an_expired_entry_written_again_is_refused():
    clock = Clock()
    stored = to_json(trust("n_a", clock=clock).sign(entry(), ttl_s=15))
    reader = trust("n_b", clock=clock)
    clock.now += 15 + CLOCK_SKEW_S - 0.5  # clocks may differ a little
    assert isinstance(reader.check_entry("n_a", stored), NodeInfo)
    clock.now += 1
    assert reader.check_entry("n_a", stored) == "expired"


def test_a_forged_entry_is_left_out_and_logged_once_without_the_secret():
    clock = Clock()
    reader = trust("n_b", clock=clock)
    genuine = to_json(trust("n_a", clock=clock).sign(entry("n_a"), ttl_s=15))
    forged = to_json(trust("n_evil", OTHER_SECRET, clock).sign(entry("n_evil"), ttl_s=15))
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        for _ in range(5):
            assert list(reader.trusted({"n_a": genuine, "n_evil": forged})) == ["n_a"]
    finally:
        configure_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["node"], line["reason"]) for line in lines] == [
        ("cluster.forged_entry", "n_evil", "bad_signature")
    ]
    assert CLUSTER_SECRET not in stream.getvalue() and OTHER_SECRET not in stream.getvalue()


# node-to-node requests ----------------------------------------------------------------


def test_a_signed_request_is_taken_once():
    clock = Clock()
    caller, host = trust("n_a", clock=clock), trust("n_b", clock=clock)
    header = caller.headers("GET", "/ws")[HEADER]
    assert host.check_request("GET", "/ws", header) == "n_a"
    with pytest.raises(ClusterAuthError) as caught:
        host.check_request("GET", "/ws", header)  # the same header again
    assert caught.value.reason == "replayed"


@pytest.mark.parametrize(
    "method, path, header, reason",
    [
        ("GET", "/ws", None, "missing"),
        ("GET", "/ws", "", "missing"),
        ("GET", "/ws", "v1;node=n_a;ts=soon;nonce=1;sig=2", "malformed"),
        ("GET", "/ws", "v2;node=n_a;ts=1;nonce=1;sig=2", "malformed"),
        ("GET", "/ws", "v1;node=n_a", "malformed"),
        ("POST", "/ws", "signed", "bad_signature"),  # signed for another method
        ("GET", "/api/sessions/s_1", "signed", "bad_signature"),  # for another path
    ],
)
def test_unsigned_or_misdirected_requests_are_refused(method, path, header, reason):
    clock = Clock()
    if header == "signed":
        header = trust("n_a", clock=clock).headers("GET", "/ws")[HEADER]
    with pytest.raises(ClusterAuthError) as caught:
        trust("n_b", clock=clock).check_request(method, path, header)
    assert caught.value.reason == reason


def test_a_request_signed_with_another_secret_or_for_another_node_is_refused():
    clock = Clock()
    host = trust("n_b", clock=clock)
    header = trust("n_a", OTHER_SECRET, clock).headers("GET", "/ws")[HEADER]
    with pytest.raises(ClusterAuthError, match="bad_signature"):
        host.check_request("GET", "/ws", header)
    genuine = trust("n_a", clock=clock).headers("GET", "/ws")[HEADER]
    with pytest.raises(ClusterAuthError, match="bad_signature"):
        host.check_request("GET", "/ws", genuine.replace("node=n_a", "node=n_evil"))


@pytest.mark.parametrize("offset", [REQUEST_WINDOW_S + 1, -(REQUEST_WINDOW_S + 1)])
def test_a_request_outside_its_time_window_is_refused(offset):
    """A header captured and replayed later (or dated ahead) is refused, even once."""
    caller_clock, host_clock = Clock(), Clock()
    header = trust("n_a", clock=caller_clock).headers("GET", "/ws")[HEADER]
    host_clock.now += offset
    with pytest.raises(ClusterAuthError) as caught:
        trust("n_b", clock=host_clock).check_request("GET", "/ws", header)
    assert caught.value.reason == "expired"
    host_clock.now -= offset - (REQUEST_WINDOW_S - 1 if offset > 0 else 1 - REQUEST_WINDOW_S)
    assert trust("n_b", clock=host_clock).check_request("GET", "/ws", header) == "n_a"


async def test_a_request_said_to_be_carried_by_a_node_must_be_signed(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings()))
    plain = await client.get("/healthz")
    assert plain.status == 200
    for headers in ({FORWARDED: "1"}, {HEADER: "v1;node=n_a;ts=1;nonce=1;sig=00"}):
        refused = await client.get("/healthz", headers=headers)
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "cluster_auth"
    signed = Trust(CLUSTER_SECRET, "n_other").headers("GET", "/healthz")
    assert (await client.get("/healthz", headers={FORWARDED: "1", **signed})).status == 200


async def test_a_node_without_a_secret_takes_no_node_requests(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(cluster_secret=None)))
    signed = Trust(CLUSTER_SECRET, "n_other").headers("GET", "/healthz")
    refused = await client.get("/healthz", headers=signed)
    assert (await refused.json())["error"]["code"] == "cluster_auth"


# settings ------------------------------------------------------------------------------


def test_redis_needs_a_cluster_secret_of_32_characters(tmp_path):
    base = {"jwt_secret": SECRET}
    for redis in ({"redis_url": "redis://127.0.0.1:6379/0"},
                  {"redis_sentinels": "127.0.0.1:26379,127.0.0.1:26380"}):  # fmt: skip
        with pytest.raises(SettingsError, match="JISR_CLUSTER_SECRET_FILE"):
            load_settings(**base, **redis)
    with pytest.raises(SettingsError, match="at least 32"):
        load_settings(**base, cluster_secret="short", redis_url="redis://h:1/0")
    secret_file = tmp_path / "cluster.secret"
    secret_file.write_text(CLUSTER_SECRET + "\n")
    settings = load_settings(**base, cluster_secret_file=secret_file, redis_url="redis://h:1/0")
    assert settings.cluster_secret_value() == CLUSTER_SECRET
    with pytest.raises(SettingsError, match="not both"):
        load_settings(**base, cluster_secret=CLUSTER_SECRET, cluster_secret_file=secret_file)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        load_settings(**base, cluster_secret_file=tmp_path / "empty")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"redis_url": "redis://h:1/0", "redis_sentinels": "h:26379"}, "not both"),
        ({"redis_sentinels": "h"}, "is not host:port"),
        ({"redis_sentinels": "h:99999"}, "is not host:port"),
        ({"redis_url": "redis://h:1/0", "redis_tls": True}, "rediss://"),
        ({"redis_url": "redis://h:1/0", "redis_ca_file": "FILE"}, "need TLS"),
        ({"redis_url": "rediss://h:1/0", "redis_cert_file": "FILE"}, "go together"),
        ({"redis_url": "redis://:pw@h:1/0", "redis_password_file": "FILE"}, "give one"),
        ({"redis_url": "redis://u@h:1/0", "redis_username": "jisr"}, "give one"),
        ({"redis_url": "redis://h:1/0", "redis_ca_file": "/nonexistent"}, "no such file"),
        ({"internal_tls_cert_file": "FILE"}, "go together"),
    ],
)
def test_redis_and_internal_tls_settings_that_do_not_fit(tmp_path, values, message):
    file = tmp_path / "file"
    file.write_text("x" * 40)
    values = {k: str(file) if v == "FILE" else v for k, v in values.items()}
    with pytest.raises(SettingsError, match=message):
        load_settings(jwt_secret=SECRET, cluster_secret=CLUSTER_SECRET, **values)


def test_a_redis_password_never_shows_in_the_settings():
    settings = load_settings(jwt_secret=SECRET, cluster_secret=CLUSTER_SECRET,
                             redis_url="redis://jisr:hunter2-redis@h:1/0")  # fmt: skip
    assert "hunter2-redis" not in repr(settings) and CLUSTER_SECRET not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        load_settings(jwt_secret=SECRET, redis_url="redis://jisr:hunter2-redis@h:1/0",
                      redis_password_file="/nonexistent")  # fmt: skip
    assert "hunter2-redis" not in str(caught.value)
