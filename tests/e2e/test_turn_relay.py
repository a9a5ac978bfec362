"""TURN REST credentials (signaling/turn.py) against a real coturn on loopback:
aioice (the server side's ICE library) allocates with valid credentials and is
refused with a wrong or expired one, and headless Chromium connects two peers
through the relay with ``iceTransportPolicy: "relay"``.

Needs Debian's ``coturn`` package (``turnserver``); the test fails without it.
"""

from __future__ import annotations

import asyncio
import http.server
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from signaling.turn import ice_servers, turn_credentials
from tests.support.turnserver import Coturn
from tests.support.turnserver import coturn as start_coturn

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    """A real coturn on loopback with TURN REST credentials (tests/support/turnserver.py)."""
    try:
        with start_coturn() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(f"{exc}: the TURN tests need a real coturn "
                    "(apt-get install -y --no-install-recommends coturn)")  # fmt: skip


# -- aioice: allocate, relay, refuse -------------------------------------------------


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


async def test_valid_credentials_allocate_and_relay(coturn):
    username, password = turn_credentials(coturn.secret, "dr-amal", 600, time.time())
    relay, client = await asyncio.wait_for(
        create_turn_endpoint(Inbox, ("127.0.0.1", coturn.port), username, password), 10
    )
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    try:
        relayed = relay.get_extra_info("sockname")
        assert relayed is not None and relayed[0] == "127.0.0.1"
        peer_addr = peer_transport.get_extra_info("sockname")
        # Client → relay → peer (the TURN client binds a channel on the way).
        relay.sendto(b"hello through the relay", peer_addr)
        data, source = await asyncio.wait_for(peer.received.get(), 5)
        assert data == b"hello through the relay"
        assert source == relayed  # the peer sees the relayed address, not the client's
        # Peer → relayed address → client.
        peer_transport.sendto(b"and back", relayed)
        data, source = await asyncio.wait_for(client.received.get(), 5)
        assert (data, source) == (b"and back", peer_addr)
    finally:
        peer_transport.close()
        relay.close()  # deletes the allocation, then calls connection_lost
        await asyncio.wait_for(client.closed, 5)


async def _allocation_error(coturn: Coturn, username: str, password: str) -> int:
    with pytest.raises(stun.TransactionFailed) as refused:
        relay, _ = await asyncio.wait_for(
            create_turn_endpoint(Inbox, ("127.0.0.1", coturn.port), username, password), 10
        )
        relay.close()  # pragma: no cover - only reached when the test is about to fail
    return refused.value.response.attributes["ERROR-CODE"][0]


async def test_wrong_password_is_refused(coturn):
    username, _ = turn_credentials(coturn.secret, "dr-amal", 600, time.time())
    _, wrong = turn_credentials("not-" + coturn.secret, "dr-amal", 600, time.time())
    assert await _allocation_error(coturn, username, wrong) in (401, 438)


async def test_expired_credentials_are_refused(coturn):
    # Issued two hours ago for one hour: correctly signed, but past its expiry.
    username, password = turn_credentials(coturn.secret, "dr-amal", 3600, time.time() - 7200)
    assert await _allocation_error(coturn, username, password) in (401, 438)


async def test_tampered_username_is_refused(coturn):
    # Moving the expiry forward without the secret breaks the signature.
    username, password = turn_credentials(coturn.secret, "dr-amal", 60, time.time())
    expiry, _, user = username.partition(":")
    forged = f"{int(expiry) + 86_400}:{user}"
    assert await _allocation_error(coturn, forged, password) in (401, 438)


# -- Chromium: two peers through the relay -------------------------------------------

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>relay</title>
<script>
// Two RTCPeerConnections in one page, relay candidates only. Resolves with what
// connected and which candidate pair carried it.
window.relayTest = async function (iceServers, timeoutMs) {
  const config = {iceServers, iceTransportPolicy: "relay"};
  const a = new RTCPeerConnection(config), b = new RTCPeerConnection(config);
  const gathered = {a: [], b: []}, errors = [];
  for (const [pc, other, name] of [[a, b, "a"], [b, a, "b"]]) {
    pc.onicecandidate = (e) => {
      if (e.candidate) {
        gathered[name].push(e.candidate.type);
        other.addIceCandidate(e.candidate).catch((err) => errors.push(String(err)));
      }
    };
    pc.onicecandidateerror = (e) => errors.push({code: e.errorCode, text: e.errorText});
  }
  const channel = a.createDataChannel("probe");
  const echoed = new Promise((resolve) => {
    b.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send("echo:" + m.data); };
    channel.onopen = () => channel.send("ping");
    channel.onmessage = (m) => resolve(m.data);
  });
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), timeoutMs));
  // Refused credentials: both sides finish gathering with nothing to try.
  const nothing = Promise.all([a, b].map((pc) => new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  }))).then(() => (gathered.a.length || gathered.b.length) ? echoed : null);
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  const reply = await Promise.race([echoed, timeout, nothing]);
  let pair = null;
  const stats = await a.getStats();
  stats.forEach((report) => {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      const selected = stats.get(report.selectedCandidatePairId);
      const local = stats.get(selected.localCandidateId);
      const remote = stats.get(selected.remoteCandidateId);
      pair = {state: selected.state, local: local.candidateType, remote: remote.candidateType,
              localAddress: local.address, relayProtocol: local.relayProtocol || null};
    }
  });
  const result = {reply, pair, gathered, errors,
                  iceState: a.iceConnectionState, gatheringState: a.iceGatheringState};
  a.close(); b.close();
  return result;
};
</script>
"""

RUN_JS = (
    "const done = arguments[arguments.length - 1];"
    "window.relayTest(arguments[0], arguments[1]).then(done, (e) => done({jsError: String(e)}));"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log in the test output
        pass


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """The page, from http://127.0.0.1 (a secure context, unlike data: URLs)."""
    with tempfile.TemporaryDirectory(prefix="jisr-relay-page-") as folder:
        Path(folder, "relay.html").write_text(PAGE)

        def handler(*args, **kwargs):
            return _QuietHandler(*args, directory=folder, **kwargs)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/relay.html"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _run(driver, servers: list[dict], timeout_ms: int) -> dict:
    result = driver.execute_async_script(RUN_JS, servers, timeout_ms)
    assert "jsError" not in result, result
    return result


def test_browser_peers_connect_through_the_relay(coturn, browsers, page_url):
    driver = browsers()
    driver.get(page_url)
    servers = ice_servers([coturn.url], coturn.secret, "dr-amal", 600, time.time())
    assert servers[0]["username"].endswith(":dr-amal")

    result = _run(driver, servers, 15_000)
    assert result["reply"] == "echo:ping", (result, coturn.log())
    pair = result["pair"]
    assert pair is not None, result
    assert (pair["local"], pair["remote"]) == ("relay", "relay"), result
    assert pair["localAddress"] == "127.0.0.1" and pair["relayProtocol"] == "udp", result
    assert set(result["gathered"]["a"]) == {"relay"}, result


@pytest.mark.parametrize("which", ["wrong_password", "expired"])
def test_browser_refused_credentials_gather_no_relay(coturn, browsers, page_url, which):
    driver = browsers()
    driver.get(page_url)
    if which == "wrong_password":
        servers = ice_servers([coturn.url], "not-" + coturn.secret, "dr-amal", 600, time.time())
    else:
        servers = ice_servers([coturn.url], coturn.secret, "dr-amal", 3600, time.time() - 7200)

    result = _run(driver, servers, 10_000)
    assert result["reply"] is None, result
    assert result["gathered"] == {"a": [], "b": []}, result
    assert result["iceState"] != "connected" and result["iceState"] != "completed", result
    # Chromium reports the TURN server's refusal (not an unreachable server, 701)
    # as an icecandidateerror.
    codes = {e["code"] for e in result["errors"] if isinstance(e, dict)}
    assert codes and codes <= {401, 438}, result
