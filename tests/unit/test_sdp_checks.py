"""Offers and trickled candidates refused with a coded error, saying what is wrong,
before aiortc is handed them; real browser offers pass."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from media.aiortc_internals import restrict_host_addresses
from media.errors import MediaError
from media.node import MediaNode
from media.offer import parse_offer, publisher_ssrcs
from media.sdp_checks import parse_candidate

OFFERS = Path(__file__).parents[1] / "fuzz" / "offers"


def offer(name: str) -> str:
    return "\r\n".join((OFFERS / f"{name}.sdp").read_text().splitlines()) + "\r\n"


CHROMIUM = offer("chromium_participant")
FIREFOX = offer("firefox_participant")


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(True) if not line.startswith(prefix))


def refused(sdp: str) -> str:
    with pytest.raises(MediaError) as caught:
        parse_offer(sdp)
    assert caught.value.code == "bad_sdp"
    return caught.value.message


@pytest.mark.parametrize(
    "name", ["chromium_participant", "chromium_observer", "firefox_participant"]
)
def test_real_browser_offers_pass(name):
    parsed = parse_offer(offer(name))
    assert [m.kind for m in parsed.media][:2] == ["audio", "video"]


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda s: without(s, "a=fingerprint"), "no DTLS fingerprint (a=fingerprint)"),
        (lambda s: re.sub("a=fingerprint:sha-256", "a=fingerprint:md5", s), "sha-256"),
        (lambda s: re.sub(r"(a=fingerprint:sha-256) \S+", r"\1 zz", s), "sha-256"),
        (lambda s: without(s, "a=setup"), "no DTLS role (a=setup)"),
        (lambda s: without(s, "a=ice-ufrag"), "no ICE username fragment (a=ice-ufrag)"),
        (lambda s: without(s, "a=ice-pwd"), "no ICE password (a=ice-pwd)"),
        (lambda s: re.sub("a=ice-ufrag:.*", "a=ice-ufrag:ab", s), "a=ice-ufrag) that is not"),
        (lambda s: re.sub("a=ice-pwd:.*", "a=ice-pwd:short", s), "a=ice-pwd) that is not"),
        (lambda s: without(s, "a=mid"), "has no a=mid"),
        (lambda s: without(s, "a=sendrecv"), "states no direction"),
        (lambda s: without(s, "a=rtcp-mux"), "(a=rtcp-mux)"),
        (lambda s: re.sub(r"(m=\w+) \d+", r"\1 0", s), "every m-line of the offer is disabled"),
        (
            lambda s: s.replace(
                "m=audio 56620 UDP/TLS/RTP/SAVPF 111", "m=audio 9 UDP/TLS/RTP/SAVPF 200"
            ),
            "lists a payload type above 127",
        ),
        (
            lambda s: s.replace("a=rtpmap:111 opus", "a=rtpmap:112 opus").replace(
                "fmtp:111", "fmtp:112"
            ),
            "maps payload type 112, which",
        ),
        (
            lambda s: s.replace("a=rtpmap:9 G722/8000", "a=rtpmap:111 G722/8000"),
            "maps payload type 111 twice",
        ),
        (lambda s: s.replace("a=ssrc:1752961853 cname", "a=ssrc:4294967296 cname"), "SSRC outside"),
        (
            lambda s: s.replace(
                "a=ssrc-group:FID 455958277 3317260150", "a=ssrc-group:FID 455958277"
            ),
            "a=ssrc-group:FID",
        ),
        (lambda s: s.replace("a=extmap:14 ", "a=extmap:0 "), "header extension id 0"),
        (lambda s: s.replace("a=extmap:14 ", "a=extmap:2 "), "maps header extension id 2 twice"),
        (
            lambda s: s.replace("127.0.0.1 56620 typ host", "127.0.0.1 70000 typ host"),
            "holds an ICE candidate that has a port outside 0 to 65535",
        ),
        (
            lambda s: s.replace("127.0.0.1 56620 typ host", "example.org 56620 typ host"),
            "neither an IP address nor an mDNS name",
        ),
        (lambda s: without(s, "a=group:BUNDLE"), "does not bundle its m-lines"),
        (lambda s: s.replace("BUNDLE 0 1", "BUNDLE 1 0"), "does not start with the first m-line"),
        (lambda s: s.replace("BUNDLE 0 1", "BUNDLE 0 0 1"), "names one m-line twice"),
        (lambda s: s.replace("BUNDLE 0 1", "BUNDLE x 0 1"), "names mid 'x', which no m-line has"),
        (lambda s: s.replace("BUNDLE 0 1", "BUNDLE 0"), "leaves out some of the offer's m-lines"),
        (
            lambda s: s.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1\r\na=group:BUNDLE 0"),
            "more than one BUNDLE group",
        ),
        (lambda s: s.replace("a=mid:1", "a=mid:0"), "share one a=mid"),
    ],
)
def test_unusable_chromium_offers_say_what_is_wrong(mutate, says):
    assert says in refused(mutate(CHROMIUM))


def test_video_without_a_codec_we_answer():
    unknown = CHROMIUM.replace(" VP8/90000", " VP7/90000").replace(" H264/90000", " H263/90000")
    assert refused(unknown).startswith("m-line 1 (video) offers no codec")
    assert "(VP8, H264)" in refused(unknown)


def test_firefox_fingerprint_at_session_level_counts_for_every_m_line():
    assert parse_offer(FIREFOX)
    assert "no DTLS fingerprint" in refused(without(FIREFOX, "a=fingerprint"))
    assert "m-line 0 (audio)" in refused(without(FIREFOX, "a=ice-ufrag"))


def test_one_m_line_needs_no_bundle_group():
    audio_only = CHROMIUM[: CHROMIUM.index("m=video")].replace("BUNDLE 0 1", "BUNDLE 0")
    assert parse_offer(without(audio_only, "a=group:BUNDLE"))
    assert parse_offer(audio_only)


def test_publisher_ssrcs_tolerates_a_lone_fid_ssrc():
    media = parse_offer(CHROMIUM).media[1]
    media.ssrc_group[0].items = media.ssrc_group[0].items[:1]
    assert publisher_ssrcs(media) == (455958277, set())


# --- trickled candidates ---------------------------------------------------------------

LINE = "candidate:2235355868 1 udp 2122194687 127.0.0.1 56620 typ host generation 0 network-id 3"
MIDS = ["0", "1"]


def bad_candidate(candidate: dict) -> str:
    with pytest.raises(MediaError) as caught:
        parse_candidate(candidate, MIDS)
    assert caught.value.code == "bad_candidate"
    return caught.value.message


def test_a_candidate_must_name_an_m_line():
    assert "names no m-line" in bad_candidate({"candidate": LINE})
    assert "names no m-line" in bad_candidate(
        {"candidate": LINE, "sdpMid": "", "sdpMLineIndex": None}
    )
    assert "sdpMid '7' names no m-line" in bad_candidate({"candidate": LINE, "sdpMid": "7"})
    assert "sdpMid '7'" in bad_candidate({"candidate": LINE, "sdpMid": "7", "sdpMLineIndex": 0})
    assert "sdpMLineIndex 2 names no m-line" in bad_candidate(
        {"candidate": LINE, "sdpMLineIndex": 2}
    )


def test_a_candidate_naming_its_m_line_is_parsed():
    by_mid = parse_candidate({"candidate": LINE, "sdpMid": "1", "sdpMLineIndex": 5}, MIDS)
    assert (by_mid.sdpMid, by_mid.ip, by_mid.port, by_mid.type) == ("1", "127.0.0.1", 56620, "host")
    by_index = parse_candidate({"candidate": LINE, "sdpMid": "", "sdpMLineIndex": 0}, MIDS)
    assert (by_index.sdpMid, by_index.sdpMLineIndex) == (None, 0)
    mdns = LINE.replace("127.0.0.1", "3a1c6e1e-6e5a-4c1e-9f0e-2f1e8d8c7b6a.local")
    assert parse_candidate({"candidate": mdns, "sdpMid": "0"}, MIDS).ip.endswith(".local")
    relay = "candidate:9 1 udp 41885439 198.51.100.7 3478 typ relay raddr 0.0.0.0 rport 0"
    assert parse_candidate({"candidate": relay, "sdpMid": "0"}, MIDS).type == "relay"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("candidate:", "cannot be parsed"),
        ("garbage", "cannot be parsed"),
        (LINE.replace(" 2122194687 ", " high "), "cannot be parsed"),
        (LINE.replace(" 56620 ", " 70000 "), "port outside 0 to 65535"),
        (LINE.replace(" 56620 ", " -1 "), "port outside 0 to 65535"),
        (LINE.replace(" 1 udp ", " 0 udp "), "component outside 1 to 256"),
        (LINE.replace(" udp ", " sctp "), "transport other than UDP or TCP"),
        (LINE.replace(" 2122194687 ", " 4294967296 "), "priority outside"),
        (LINE.replace("127.0.0.1", "not-an-address"), "neither an IP address nor an mDNS name"),
        (LINE.replace("typ host", "typ weird"), "type other than host"),
        (LINE.replace("2235355868", "a:b"), "foundation"),
        (LINE + " raddr 0.0.0.0 rport 99999", "related port outside"),
    ],
)
def test_garbled_candidates(line, says):
    assert says in bad_candidate({"candidate": line, "sdpMid": "0"})


# --- through a media node ---------------------------------------------------------------


@pytest.fixture
async def node():
    restrict_host_addresses(["127.0.0.1"])
    media = MediaNode()
    yield media
    await media.close()
    restrict_host_addresses([])


async def test_a_refused_offer_leaves_nothing_behind(node):
    tasks = asyncio.all_tasks()
    with pytest.raises(MediaError) as caught:
        await node.connect(
            "s1", "p1", publish="referrer", receive=["specialist"],
            offer_sdp=without(CHROMIUM, "a=fingerprint"),
        )  # fmt: skip
    assert caught.value.code == "bad_sdp"
    assert node.stats() == {"sessions": 0, "peers": 0}
    assert asyncio.all_tasks() == tasks  # no report loop, no connection task


async def test_a_refused_offer_keeps_the_connection_that_was_there(node):
    answer = await node.connect(
        "s1", "p1", publish="referrer", receive=["specialist"], offer_sdp=CHROMIUM
    )
    assert answer.startswith("v=0")
    pc = node.peer_connection("p1")
    with pytest.raises(MediaError):
        await node.connect(
            "s1", "p1", publish="referrer", receive=["specialist"],
            offer_sdp=without(CHROMIUM, "a=ice-pwd"),
        )  # fmt: skip
    assert node.peer_connection("p1") is pc and pc.connectionState != "closed"


async def test_candidates_checked_against_the_peers_m_lines(node):
    await node.connect("s1", "p1", publish="referrer", receive=["specialist"], offer_sdp=FIREFOX)
    await node.add_candidate("p1", {"candidate": LINE, "sdpMid": "0", "sdpMLineIndex": 0})
    for candidate in ({"candidate": LINE}, {"candidate": LINE, "sdpMid": "2"},
                      {"candidate": "candidate:x", "sdpMid": "0"}):  # fmt: skip
        with pytest.raises(MediaError) as caught:
            await node.add_candidate("p1", candidate)
        assert caught.value.code == "bad_candidate"
    await node.add_candidate("p1", None)  # end of candidates
