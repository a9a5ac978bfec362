"""A consult from a site whose firewall lets no UDP through: the pages reach Jisr's
media only through TURN over TLS (``turns:``), with ``JISR_ICE_TRANSPORT_POLICY=relay``.

Topology (tests/support/sites.py)::

    browser site (10.88.0.2)                    server site (10.88.0.1)
    referrer + specialist Chromium  --veth-->   coturn, deploy/coturn/turnserver.conf:
    nftables: every UDP packet in or out          TLS on 5349, UDP relay on 10.88.0.1
              is dropped (counted)              jisr serve, ICE host candidates on 10.88.0.1

The pages get ``turn:10.88.0.1:3478?transport=udp`` and
``turns:10.88.0.1:5349?transport=tcp``: Chromium tries the UDP one (its datagrams are
dropped, which the counters show) and allocates through the TLS one; coturn relays
over UDP, inside the server site, to the host candidate of Jisr's aiortc peer.

What Chromium (156) does with the TURN server's certificate, measured here with the
same page and two relay-only peer connections:
- it verifies it like an HTTPS server's: an unknown authority fails the TLS
  connection (network error -202, ERR_CERT_AUTHORITY_INVALID) and a certificate for
  another address fails too (-200, ERR_CERT_COMMON_NAME_INVALID, with its authority
  trusted); the page sees only ``icecandidateerror`` 701 "Failed to establish
  connection" and no relay candidate. So ``turns:`` needs a certificate valid for the
  URL's host name (or IP address, as a subjectAltName), from an authority the
  browser trusts.
- an authority added to the NSS database in ``$HOME/.pki/nssdb`` (Debian's
  ``libnss3-tools``, ``certutil -A -t C,,``) is trusted for TURN as for pages: the
  e2e fixtures do this, so the name check stays on.
- ``--ignore-certificate-errors-spki-list=<base64 SHA-256 of the SubjectPublicKeyInfo>``
  is honoured for TURN too, with the server's or the authority's key, but it then
  also accepts a certificate issued for another address: it hides name errors, so
  the tests do not use it.
- the host resolver rules apply to IP literals: without ``EXCLUDE 10.88.0.1`` in
  ``--host-resolver-rules``, TURN over TCP or TLS to 10.88.0.1 fails with -105
  (ERR_NAME_NOT_RESOLVED), while TURN over UDP does not go through the resolver.

Needs Debian's coturn, iproute2, nftables, util-linux, libnss3-tools, chromium and
chromium-driver; the test fails, naming them, without them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_consult_flow import frames_advance, live_video, open_page, state, wait_until
from tests.e2e.test_recording_playback import create_and_accept
from tests.support.sites import SERVER_ADDRESS
from tests.support.turnserver import TlsCoturn, tls_coturn

pytestmark = pytest.mark.e2e

TURN_UDP = f"turn:{SERVER_ADDRESS}:3478?transport=udp"


@pytest.fixture
def turns(sites, site_cert) -> Iterator[TlsCoturn]:
    """coturn from deploy/coturn/turnserver.conf in the server site (TLS on 5349)."""
    try:
        with tls_coturn(sites, site_cert, SERVER_ADDRESS, peer=SERVER_ADDRESS) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(f"{exc}: this test needs a real coturn "
                    "(apt-get install -y --no-install-recommends coturn)")  # fmt: skip


@pytest.fixture
def jisr_server_env(turns) -> dict[str, str]:
    return {
        "JISR_TURN_URLS": f"{TURN_UDP},{turns.url}",
        "JISR_TURN_SECRET": turns.secret,
        "JISR_ICE_TRANSPORT_POLICY": "relay",
    }


def test_consult_through_turns_from_a_site_without_udp(sites, turns, site_server, site_browsers):
    sites.firewall(
        output=["meta l4proto udp counter drop"], input=["meta l4proto udp counter drop"]
    )
    # Pages from http://10.88.0.1 are no secure context (no camera); HTTPS is
    # test_two_sites.py's subject, so here Chromium is told to treat it as one.
    secure = f"--unsafely-treat-insecure-origin-as-secure={site_server.base}"
    referrer, specialist = site_browsers(secure), site_browsers(secure)
    open_page(specialist, site_server, "specialist", site_server.tokens.specialist)
    open_page(referrer, site_server, "referrer", site_server.tokens.referrer)
    create_and_accept(referrer, specialist)

    pages = {"referrer": referrer, "specialist": specialist}
    try:
        wait_until(
            lambda: all(live_video(state(d)) for d in pages.values()),
            30,
            "remote video on both participant pages",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_connection(pages)}\ncoturn: {turns.log()}") from None
    frames_advance(pages)

    for name, driver in pages.items():
        pair = state(driver)["candidatePair"]
        assert pair is not None and pair["state"] == "succeeded", (name, pair)
        # Ours: a relayed address on coturn, reached over TLS; theirs: Jisr's host candidate.
        assert pair["local"]["type"] == "relay", (name, pair)
        assert pair["local"]["relayProtocol"] == "tls", (name, pair)
        assert pair["local"]["address"] == SERVER_ADDRESS, (name, pair)
        assert (pair["remote"]["type"], pair["remote"]["address"]) == ("host", SERVER_ADDRESS)
        assert state(driver)["lastError"] is None, name

    dropped_out, dropped_in = sites.counters()
    assert dropped_out > 0, "the pages sent no UDP at all: the block was not put to the test"
    print(f"\nUDP packets dropped at the site: {dropped_out} out, {dropped_in} in")


def _connection(pages: dict) -> dict:
    keys = ("pcState", "connectionState", "iceGatheringState", "candidatePair", "lastError")
    return {name: {k: state(d).get(k) for k in keys} for name, d in pages.items()}
