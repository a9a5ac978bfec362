"""A consult between two real sites: the browsers' site reaches Jisr on a
non-loopback address, over HTTPS, and may send UDP to Jisr on one port only.

Topology (tests/support/sites.py)::

    browser site (10.88.0.2)                      server site (10.88.0.1)
    referrer + specialist Chromium   --veth-->    jisr serve: HTTPS on 443
    (the test's authority trusted in NSS)          (JISR_TLS_CERT_FILE / _KEY_FILE),
    nftables: UDP to 10.88.0.1 is dropped          every peer's media on UDP 7882
              unless it is for port 7882            (JISR_MEDIA_UDP_PORT)

The pages must be a secure context for the camera: served over HTTPS with a
certificate for 10.88.0.1 that Chromium trusts (no flag making an insecure origin
secure, unlike test_turns_relay.py). All media to the server goes to the one UDP
port a site's firewall would open for Jisr.

Needs JISR_TLS_CERT_FILE / JISR_TLS_KEY_FILE (``jisr serve`` over HTTPS) and
JISR_MEDIA_UDP_PORT (one UDP port shared by every peer of a node). Also Debian's
iproute2, nftables, util-linux, libnss3-tools, chromium and chromium-driver.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_consult_flow import frames_advance, live_video, open_page, state, wait_until
from tests.e2e.test_recording_playback import create_and_accept
from tests.support.sites import SERVER_ADDRESS, SITE_ADDRESS

pytestmark = pytest.mark.e2e

MEDIA_PORT = 7882


@pytest.fixture
def jisr_server_env(site_cert) -> dict[str, str]:
    return {
        "JISR_PORT": "443",
        "JISR_TLS_CERT_FILE": str(site_cert.cert_file),
        "JISR_TLS_KEY_FILE": str(site_cert.key_file),
        "JISR_MEDIA_UDP_PORT": str(MEDIA_PORT),
    }


def test_consult_over_https_with_one_media_port(sites, site_server, site_browsers):
    assert site_server.base == f"https://{SERVER_ADDRESS}:443"
    sites.firewall(output=[
        f"ip daddr {SERVER_ADDRESS} udp dport != {MEDIA_PORT} counter drop",
        f"ip daddr {SERVER_ADDRESS} udp dport {MEDIA_PORT} counter accept",
    ])  # fmt: skip
    referrer, specialist = site_browsers(), site_browsers()
    pages = {"referrer": referrer, "specialist": specialist}
    open_page(specialist, site_server, "specialist", site_server.tokens.specialist)
    open_page(referrer, site_server, "referrer", site_server.tokens.referrer)
    for name, driver in pages.items():
        assert driver.execute_script("return window.isSecureContext") is True, name
    create_and_accept(referrer, specialist)

    wait_until(
        lambda: all(live_video(state(d)) for d in pages.values()),
        30,
        "remote video on both participant pages",
    )
    frames_advance(pages)

    for name, driver in pages.items():
        page = state(driver)
        assert page["local"]["video"] and page["local"]["videoWidth"] > 0, (name, page["local"])
        assert page["lastError"] is None, (name, page["lastError"])
        pair = page["candidatePair"]
        assert pair is not None and pair["state"] == "succeeded", (name, pair)
        # Straight from the site to Jisr's one media port, no relay.
        assert (pair["local"]["type"], pair["local"]["address"]) == ("host", SITE_ADDRESS), pair
        assert pair["local"]["protocol"] == "udp", (name, pair)
        remote = pair["remote"]
        assert (remote["address"], remote["port"]) == (SERVER_ADDRESS, MEDIA_PORT), (name, pair)

    dropped, passed = sites.counters()
    assert passed > 0, "no UDP reached the media port"
    assert dropped == 0, f"{dropped} UDP packets to the server were not for port {MEDIA_PORT}"
