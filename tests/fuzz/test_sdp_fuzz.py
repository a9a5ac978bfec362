"""Real browser offers (tests/fuzz/offers: Chromium's as captured, Firefox's in its
format), mutated line by line, through what an offer goes through on the server:
the offer checks and a real MediaNode. The result is an answer or a coded
MediaError, never another exception, never an exception left in a task or a
callback; every peer made is closed again."""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from media.aiortc_internals import restrict_host_addresses
from media.errors import MediaError
from media.node import MediaNode
from media.offer import parse_offer
from tests.fuzz.seed import SEED, count

OFFERS = {
    path.stem: path.read_text().splitlines()
    for path in (Path(__file__).parent / "offers").glob("*.sdp")
}
CODES = {"bad_sdp", "observer_cannot_send"}
KINDS = ["audio", "video", "application", "text", "", "audio video"]
PORTS = ["0", "9", "1", "65535", "65536", "-1", "99999999999", "x"]
NUMBERS = ["0", "1", "-1", "255", "256", "65535", "65536", "4294967295", "4294967296", "x"]
CANDIDATE_FIELDS = [  # (field index on the a=candidate line, values to try there)
    (1, NUMBERS),  # component
    (2, ["udp", "UDP", "tcp", "sctp", ""]),  # transport
    (3, NUMBERS),  # priority
    (4, ["127.0.0.1", "::1", "256.1.1.1", "0.0.0.0", "x.local", "example.org", "", "-"]),
    (5, NUMBERS),  # port
    (5, NUMBERS),
    (7, ["host", "srflx", "prflx", "relay", "bogus", ""]),  # type
    (9, NUMBERS),  # raddr or generation's value
]
JUNK_LINES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["a=", "a=:", "m=", "c=", "a=fingerprint:", "a=candidate:", "a=ssrc:",
                     "a=group:BUNDLE", "a=rtpmap:", "a=fmtp:96", "a=extmap:", "=", "a=setup:x"]),
    st.text(max_size=30).map(lambda text: "a=" + text),
)  # fmt: skip


@st.composite
def mutated_offer(draw) -> tuple[str, str]:
    """(which offer, its text mutated one to four times), with CRLF line ends."""
    name = draw(st.sampled_from(sorted(OFFERS)))
    lines = list(OFFERS[name])
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "drop-all", "duplicate", "swap", "value", "digits",
                                    "candidate", "candidate", "m-line", "junk"]))  # fmt: skip
        if how == "drop":
            del lines[i]
        elif how == "drop-all":  # every line of that kind, say every fingerprint
            prefix = lines[i].split(":", 1)[0]
            lines = [line for line in lines if not line.startswith(prefix)]
        elif how == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif how == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif how == "value":  # the attribute's value corrupted
            head, sep, value = lines[i].partition(":")
            lines[i] = head + (sep or ":") + draw(st.text(max_size=20) | st.just(value[::-1]))
        elif how == "digits":  # a number in the line: a port, a payload type, an id, a length
            numbers = list(re.finditer(r"\d+", lines[i]))
            if numbers:
                m = draw(st.sampled_from(numbers))
                new = str(draw(st.sampled_from([0, 1, 127, 128, 255, 256, 65535, 65536, 2**32])
                               | st.integers(-5, 300)))  # fmt: skip
                lines[i] = lines[i][: m.start()] + new + lines[i][m.end() :]
        elif how == "candidate":  # one field of an ICE candidate, the riskiest attribute
            found = [k for k, line in enumerate(lines) if line.startswith("a=candidate:")]
            k = draw(st.sampled_from(found)) if found else i
            fields = lines[k].split(" ")
            field, values = draw(st.sampled_from(CANDIDATE_FIELDS))
            if field < len(fields):
                fields[field] = draw(st.sampled_from(values) | st.text(max_size=8))
            lines[k] = " ".join(fields)
        elif how == "m-line":
            m_lines = [k for k, line in enumerate(lines) if line.startswith("m=")]
            k = draw(st.sampled_from(m_lines)) if m_lines else i
            fields = lines[k][2:].split(" ")
            field = draw(st.integers(0, max(0, len(fields) - 1)))
            fields[field] = draw(st.sampled_from(KINDS if field == 0 else PORTS + ["96", "300"]))
            if draw(st.booleans()):
                fields.append(str(draw(st.integers(0, 300))))
            lines[k] = "m=" + " ".join(fields)
        else:
            lines.insert(i, draw(JUNK_LINES))
    return name, "".join(line + "\r\n" for line in lines)


class Loop:
    """A MediaNode in an event loop the synchronous Hypothesis test drives, which
    records every exception that reaches the loop (a task's or a callback's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.escaped: list[dict] = []
        self.loop.set_exception_handler(lambda _, context: self.escaped.append(context))
        self.node = MediaNode()
        self.peers = itertools.count()

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def close(self) -> None:
        self.run(self.node.close())
        self.loop.close()


@pytest.fixture(scope="module")
def media():
    restrict_host_addresses(["127.0.0.1"])
    loop = Loop()
    yield loop
    loop.close()
    restrict_host_addresses([])


async def offer_once(node: MediaNode, name: str, sdp: str, peer_id: str) -> str | MediaError:
    observer = "observer" in name
    try:
        answer = await node.connect(
            "fuzz", peer_id, publish=None if observer else "referrer",
            receive=["referrer", "specialist"] if observer else ["specialist"], offer_sdp=sdp,
        )  # fmt: skip
    except MediaError as exc:
        return exc
    await asyncio.sleep(0.01)  # ICE checks start toward the offer's candidates
    await node.disconnect(peer_id)
    await asyncio.sleep(0)
    return answer


@seed(SEED)
@hypothesis_settings(max_examples=400)
@given(offer=mutated_offer())
def test_mutated_browser_offers(media, offer):
    count("mutated sdp offers")
    name, sdp = offer
    result = media.run(offer_once(media.node, name, sdp, f"p{next(media.peers)}"))
    gc.collect(1)  # most tasks dropped by this example are young: reported now
    escaped, media.escaped[:] = list(media.escaped), []
    assert escaped == [], escaped
    assert media.node.stats() == {"sessions": 0, "peers": 0}
    if isinstance(result, MediaError):
        assert result.code in CODES and result.message
    else:
        answer = parse_offer(result)  # an answer passes the checks an offer must
        assert len(answer.media) == len(parse_offer(sdp).media)


def test_the_offers_are_answered_as_they_are(media):
    for name, lines in OFFERS.items():
        result = media.run(offer_once(media.node, name, "\r\n".join(lines) + "\r\n", name))
        assert isinstance(result, str) and result.startswith("v=0"), (name, result)
