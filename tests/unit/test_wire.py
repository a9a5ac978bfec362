"""The media path's C part (media/_wire.c) against the Python it stands in for: the
same packets, in the same order, give the same bytes and leave the same state."""

from __future__ import annotations

import random
import struct
import time

import pytest

from media.rtp import StreamRewriter
from tests.support.srtp import srtp_pair
from tests.unit.test_forwarding_rtcp import RTX, VP8, negotiated, vp8_packet

STATE = ("ssrc", "_pending", "_started", "_in_ssrc", "_max_in", "_ext", "_seq_off",
         "_ts_off", "_last_seq", "_last_ts", "_steps", "_gap_ticks", "_seq_gap")  # fmt: skip


class PythonOnly(StreamRewriter):
    """The rewriter with every packet through the Python logic."""

    __slots__ = ()

    def rewrite(self, packet):
        return self._rewrite_other(packet)


def extension_block(rng: random.Random) -> bytes:
    """One-byte or two-byte form elements, or another profile; sometimes cut short."""
    form = rng.choice(["one", "one", "two", "other"])
    body = bytearray()
    for _ in range(rng.randint(0, 4)):
        if form == "one":
            size = rng.randint(1, 4)
            body += bytes([(rng.randint(1, 15) << 4) | (size - 1)]) + rng.randbytes(size)
        else:
            size = rng.randint(0, 4)
            body += bytes([rng.randint(1, 40), size]) + rng.randbytes(size)
        body += bytes(rng.choice([0, 0, 1]))  # padding between elements
    body += bytes(-len(body) % 4)
    profile = {"one": 0xBEDE, "two": 0x1000 | rng.randint(0, 15), "other": 0x1234}[form]
    words = len(body) // 4 + rng.choice([0, 0, 0, 0, 1])  # now and then longer than sent
    return struct.pack("!HH", profile, words) + bytes(body)


def random_packet(rng: random.Random, seq: int, ts: int, ssrc: int) -> bytes:
    csrcs = rng.choice([0, 0, 0, 2])
    extension = extension_block(rng) if rng.random() < 0.8 else b""
    b0 = 0x80 | (0x10 if extension else 0) | csrcs | (0x20 if rng.random() < 0.05 else 0)
    if rng.random() < 0.02:
        b0 = rng.randrange(256)  # not RTP version 2
    b1 = rng.choice([96, 96, 96, 97, 100]) | (0x80 if rng.random() < 0.3 else 0)
    head = struct.pack("!BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    packet = head + rng.randbytes(4 * csrcs) + extension + rng.randbytes(rng.randint(0, 40))
    return packet[: rng.randint(0, 11)] if rng.random() < 0.02 else packet  # cut short


@pytest.mark.parametrize("seed", range(40))
def test_the_c_rewrite_matches_the_python_logic(seed):
    rng = random.Random(seed)
    ext_map = rng.choice([None, {1: 4, 3: 3, 20: 30}, {2: 7}, {5: 14, 6: 1}])
    made = {"ssrc": 0xCAFE, "pt_map": {96: 102, 100: 100}, "ext_map": ext_map,
            "seq_start": rng.randrange(65536), "ts_start": rng.randrange(1 << 32)}  # fmt: skip
    c_side, python_side = StreamRewriter(**made), PythonOnly(**made)
    seq, ts, ssrc = rng.randrange(65536), rng.randrange(1 << 32), 1111
    for _ in range(400):
        roll = rng.random()
        if roll < 0.02:
            gap = rng.choice([None, 0, 3000, 90000])
            seq_gap = rng.choice([0, 0, 600])
            c_side.switch_source(gap, seq_gap), python_side.switch_source(gap, seq_gap)
            continue
        if roll < 0.03:
            ext_map = rng.choice([None, {1: 2}, {1: 4, 3: 3, 20: 30}])
            c_side.ext_map = python_side.ext_map = ext_map
            continue
        if roll < 0.05:
            ssrc = rng.choice([1111, 2222])
        step = rng.choice([1, 1, 1, 1, 1, 2, 3, 0, -1, -2, -5, 41, 3000, 40000])
        seq += step
        ts += 3000 * max(step, 0)
        packet = random_packet(rng, seq, ts, ssrc)
        if rng.random() < 0.05:
            c_side.skip(packet), python_side.skip(packet)
            continue
        kind = rng.choice([bytes, bytes, bytes, bytearray])
        assert c_side.rewrite(kind(packet)) == python_side.rewrite(kind(packet))
        for name in STATE:
            assert getattr(c_side, name) == getattr(python_side, name), name


def test_the_c_rewrite_leaves_bad_input_to_python():
    rewriter = StreamRewriter(0xCAFE, {96: 102}, seq_start=10, ts_start=0)
    good = struct.pack("!BBHII", 0x80, 96, 500, 9000, 1111) + b"payload"
    assert rewriter.rewrite(good)[2:4] == (10).to_bytes(2, "big")
    for bad in (b"", b"\x80", good[:11], memoryview(good)):
        rewriter.rewrite(bad)  # dropped or taken as Python takes it; never a crash
    with pytest.raises(TypeError):
        rewriter.rewrite(12345)  # type: ignore[arg-type]
    rewriter.pt_map = None  # a state the rewriter is never put in: Python's error, not C's
    with pytest.raises(AttributeError):
        rewriter.rewrite(good)


# -- a subscriber's packets, forwarded in C and in Python ------------------------------


class PacketsTap:
    """The Python side's tap: keeps what it is given, and what libsrtp would let out
    (it refuses to protect a sequence number twice) when given a session."""

    ready = True

    def __init__(self, session=None) -> None:
        from media.aiortc_internals import srtp_call

        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self._protect = srtp_call(session, "srtp_protect") if session else None

    def send(self, packet: bytes, rtcp: bool = False) -> bool:
        if not rtcp and self._protect is not None and self._protect(packet) is None:
            return False
        (self.rtcp if rtcp else self.rtp).append(packet)
        return True


def socket_tap(sender, into):
    """A real Tap's sending half over a real socket, with aiortc's and aioice's parts
    (the DTLS transport, the nominated pair, the shared socket's route) standing in."""
    import socket
    from types import SimpleNamespace

    from aiortc.rtcdtlstransport import State

    from media.aiortc_internals import SharedPortRoute, Tap

    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    route = SharedPortRoute.__new__(SharedPortRoute)
    route.fd = out.fileno()
    route.sendto = out.sendto
    protocol = SimpleNamespace(transport=route)
    pair = SimpleNamespace(remote_addr=into.getsockname(), protocol=protocol)
    tap = Tap.__new__(Tap)
    tap._dtls = SimpleNamespace(_tx_srtp=sender, _state=State.CONNECTED)
    tap._nominated = {1: pair}
    tap._ice = SimpleNamespace(_nominated=tap._nominated)
    tap._protect = tap._pair = tap._route = tap._pair_transport = tap._pair_address = None
    tap._pair_sockaddr = b""
    tap.sent_packets = 0
    return tap, out


def counting(instance, name: str) -> list:
    """Calls of the Python method ``name`` on ``instance``, counted."""
    calls = []
    method = getattr(instance, name)

    def counted(*args):
        calls.append(args)
        return method(*args)

    setattr(instance, name, counted)
    return calls


def published(ext_ids: dict | None = None):
    """A publisher's leg with one VP8 stream, SSRC 1000, and where its feedback goes."""
    from media.codecs import codecs_of
    from media.inbound import InStream
    from media.leg import Leg

    leg = Leg("pub", None)
    leg.tap = PacketsTap()
    stream = InStream(leg, "referrer", "video", 1000, codecs_of(negotiated(5)), 5, ext_ids or {})
    leg.inbound[1000] = stream
    return leg, stream


def test_a_subscriber_gets_the_same_packets_from_c_as_from_python():
    import socket

    from media.leg import Leg
    from media.outbound import OutStream

    sender, receiver = srtp_pair()
    publisher, source = published()
    in_c, in_python = Leg("c", None), Leg("python", None)
    in_python.tap = PacketsTap(srtp_pair()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as into:
        into.bind(("127.0.0.1", 0))
        into.settimeout(5)
        in_c.tap, sending = socket_tap(sender, into)
        with sending:
            c_out, python_out = (OutStream(leg, "referrer", negotiated(7000))
                                 for leg in (in_c, in_python))  # fmt: skip
            for out in (c_out, python_out):
                out.bind(source, now=0.0)
            python_out.rewriter._last_seq = c_out.rewriter._last_seq  # the same random start
            python_out.rewriter._last_ts = c_out.rewriter._last_ts
            in_python.outbound[7000], in_c.outbound[7000] = python_out, c_out
            in_c.heard(0.0), in_python.heard(0.0)  # both talk: silence will mean a dead path
            in_python_calls = counting(c_out, "_forward_other")
            send_other_calls = counting(in_c.tap, "_send_other")
            rng = random.Random(7)
            seq, now = 100, 0.0
            for n in range(300):
                now += 1 / 30
                step = rng.choice([1] * 12 + [2, 0, -1])
                seq += step
                if n == 150:
                    now += 20  # the subscribers are silent: their paths count as down
                if n == 160:
                    in_c.heard(now), in_python.heard(now)
                key = n in (0, 165) or rng.random() < 0.02
                source.on_packet(vp8_packet(seq, seq * 3000, key=key), now)
                assert (c_out.packets, c_out.octets, c_out.last_ts, c_out.last_sent_at) == (
                    python_out.packets, python_out.octets, python_out.last_ts,
                    python_out.last_sent_at)  # fmt: skip
            got = [receiver.unprotect(into.recvfrom(2048)[0]) for _ in range(c_out.packets)]
    assert got == in_python.tap.rtp and len(got) > 200
    assert c_out.history._packets == python_out.history._packets
    assert in_c.tap.sent_packets == len(got)
    # The C path carried the steady stream: Python had the keyframe waits, the silent
    # subscriber, and the first send (which primes the tap).
    assert len(in_python_calls) < 40 and len(send_other_calls) <= 2


def test_the_tap_hands_python_whatever_changed():
    import socket

    from aiortc.rtcdtlstransport import State

    sender, receiver = srtp_pair()
    packet = struct.pack("!BBHII", 0x80, 96, 1, 0, 7000) + b"payload"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as into:
        into.bind(("127.0.0.1", 0))
        into.settimeout(5)
        tap, sending = socket_tap(sender, into)
        with sending:
            python_calls = counting(tap, "_send_other")
            assert tap.send(packet) is True  # primes it, through Python
            assert tap.send(packet[:3] + b"\x02" + packet[4:]) is True  # in C
            assert len(python_calls) == 1 and tap.sent_packets == 2
            assert receiver.unprotect(into.recvfrom(2048)[0]) == packet
            assert tap.send(b"rtcp", rtcp=True) is False  # RTCP: Python's (not RTCP here)
            assert len(python_calls) == 2
            tap._dtls._state = State.CLOSED
            assert tap.send(packet) is False and len(python_calls) == 3
            tap._dtls._state = State.CONNECTED
            tap._dtls._tx_srtp = srtp_pair()[0]  # a new handshake's keys
            assert tap.send(packet[:3] + b"\x03" + packet[4:]) is True
            assert len(python_calls) == 4 and tap._protect.session is tap._dtls._tx_srtp
            tap._nominated[1] = None  # the pair went
            assert tap.send(packet) is False and len(python_calls) == 5
            with pytest.raises(TypeError):
                tap.send()
        tap._nominated[1] = tap._pair
        tap._route.fd = -1  # the route closed
        assert tap.send(packet) is False and len(python_calls) == 5


# -- a published stream's packets, taken in C and in Python ------------------------------


IN_STATE = ("base_seq", "max_seq", "cycles", "received", "octets", "last_arrival",
            "first_arrival", "jitter", "transit", "last_packet", "missing", "spare",
            "nacked_at", "keyframes_asked")  # fmt: skip


def test_a_published_stream_takes_packets_in_c_as_in_python():
    from media.codecs import codecs_of
    from media.inbound import InStream
    from media.leg import Leg
    from media.outbound import OutStream

    class PythonOnlyIn(InStream):
        def on_packet(self, packet, now):
            return self._on_packet_other(packet, now)

    sides = []
    for kind in (InStream, PythonOnlyIn):
        publisher, subscriber = Leg("pub", None), Leg("sub", None)
        publisher.tap, subscriber.tap = PacketsTap(), PacketsTap()
        stream = kind(publisher, "referrer", "video", 1000, codecs_of(negotiated(5)), 5, {})
        out = OutStream(subscriber, "referrer", negotiated(7000))
        out.bind(stream, now=0.0)
        out.rewriter._last_seq, out.rewriter._last_ts = 1, 2  # the same start on both sides
        sides.append((stream, publisher.tap, subscriber.tap))
    python_calls = counting(sides[0][0], "_on_packet_other")
    rng = random.Random(3)
    seq, ts, now = 65500, 0, 0.0  # wraps around 65535
    for n in range(600):
        now += rng.choice([0.0, 0.01, 0.03, 0.6])
        step = rng.choice([1] * 80 + [2, 3, 0, -1, -4, 45])
        seq, ts = (seq + step) & 0xFFFF, ts + 3000 * step
        packet = vp8_packet(seq, ts & 0xFFFFFFFF, key=n == 0 or rng.random() < 0.03)
        for stream, _, _ in sides:
            stream.on_packet(packet, now)
        (c, c_pub, c_sub), (python, py_pub, py_sub) = sides
        for name in IN_STATE:
            assert getattr(c, name) == getattr(python, name), (n, name)
        assert (c_pub.rtcp, c_sub.rtp) == (py_pub.rtcp, py_sub.rtp), n  # NACKs, PLIs, media
    assert len(python_calls) < 300  # most packets (the next in sequence) were taken in C
    assert sides[0][0].cycles == 65536 and len(sides[0][2].rtp) > 300


def test_a_datagram_goes_from_the_route_to_its_stream_in_c():
    from types import SimpleNamespace

    from media.aiortc_internals import Tap
    from media.leg import PUBLISHER_STALL_SECONDS, STALL_SECONDS

    sender, receiver = srtp_pair()
    leg, stream = published()
    tap = Tap.__new__(Tap)
    tap._dtls = SimpleNamespace(_rx_srtp=receiver)
    tap._unprotect = None
    tap._on_rtp, tap._leg = leg.on_rtp, leg
    rtcp, other = [], []
    tap._on_rtcp = rtcp.append
    tap._original = lambda data, component: other.append(data)
    rtp_calls, python_calls = counting(leg, "on_rtp"), counting(tap, "_data_received")
    tap._on_rtp = leg.on_rtp  # counted
    datagrams = [sender.protect(vp8_packet(seq, seq * 3000, key=seq == 1)) for seq in range(1, 21)]
    for datagram in datagrams:
        tap.receive(datagram)
    assert stream.received == 20 and stream.max_seq == 20
    assert leg.stall_after == PUBLISHER_STALL_SECONDS != STALL_SECONDS
    # Python took the first (no unprotect yet for this session) and the leg's first
    # (heard() looks at a new peer); C the rest.
    assert len(python_calls) == 1 and len(rtp_calls) <= 2
    tap.receive(datagrams[-1])  # replayed
    tap.receive(b"\x80\x60" + bytes(30))  # forged
    assert stream.received == 20
    tap.receive(sender.protect_rtcp(bytes([0x80, 201, 0, 1, 0, 0, 0, 9])))  # an RR
    tap.receive(bytes([22, 254, 253]) + bytes(20))  # DTLS
    tap.receive(b"")
    assert rtcp == [bytes([0x80, 201, 0, 1, 0, 0, 0, 9])] and len(other) == 1
    tap._dtls._rx_srtp = srtp_pair()[1]  # a new handshake's session: Python makes the call
    tap.receive(sender.protect(vp8_packet(21, 63000, key=False)))
    assert tap._unprotect.session is tap._dtls._rx_srtp and stream.received == 21
    assert len(python_calls) == 5  # the first, the RTCP, the DTLS, the empty, the new session
    leg.inbound.clear()  # a stream the leg does not know: Leg.on_rtp decides
    tap.receive(sender.protect(vp8_packet(22, 66000, key=False)))
    assert rtp_calls[-1][0][8:12] == (1000).to_bytes(4, "big") and stream.received == 21


def test_damaged_packets_through_the_c_path_harm_nothing():
    """Random damage to the packets of a stream (header bits, CSRC counts and header
    extensions that overrun, cut-short packets), each validly protected, through the
    whole C path from the route to a subscriber's socket: nothing raises, and what
    reaches the subscriber is an RTP packet of ours."""
    import socket
    from types import SimpleNamespace

    import pylibsrtp

    from media.aiortc_internals import Negotiated, Tap
    from media.leg import Leg
    from media.outbound import OutStream

    up_sender, up_receiver = srtp_pair()
    down_sender, down_receiver = srtp_pair()
    publisher, stream = published({"urn:ietf:params:rtp-hdrext:sdes:mid": 1, "urn:x": 2})
    subscriber = Leg("sub", None)
    tap = Tap.__new__(Tap)
    tap._dtls = SimpleNamespace(_rx_srtp=up_receiver)
    tap._unprotect = None
    tap._on_rtp, tap._leg = publisher.on_rtp, publisher
    tap._on_rtcp, tap._original = (lambda data: None), (lambda data, component: None)
    rng = random.Random(11)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as into:
        into.bind(("127.0.0.1", 0))
        into.setblocking(False)
        subscriber.tap, sending = socket_tap(down_sender, into)
        with sending:
            theirs = Negotiated("1", "video", [VP8, RTX], {"urn:x": 3}, 7000, 7001)
            out = OutStream(subscriber, "referrer", theirs)  # the extension under id 3
            out.bind(stream, now=0.0)
            subscriber.outbound[7000] = out
            subscriber.heard(time.monotonic())
            arrived, seq = [], 1
            for _ in range(3000):
                packet = bytearray(vp8_packet(seq, seq * 3000, key=seq % 100 == 1))
                if rng.random() < 0.5:
                    extension = extension_block(rng)
                    packet = bytearray(packet[:12]) + extension + packet[12:]
                    packet[0] |= 0x10
                for _ in range(rng.choice([0] * 4 + [1, 3])):  # not the seq, not the SSRC
                    packet[rng.choice([0, 1, *range(4, 8), *range(12, len(packet))])] ^= 1 << (
                        rng.randrange(8))  # fmt: skip
                if rng.random() < 0.03:
                    packet[0] = 0x80 | rng.randrange(16)  # CSRCs that may overrun
                if rng.random() < 0.02:
                    packet = packet[: rng.randint(12, 20)]
                packet[0] = 0x80 | (packet[0] & 0x3F)  # still version 2
                try:
                    datagram = up_sender.protect(bytes(packet))
                except pylibsrtp.Error:
                    continue  # libsrtp refuses to protect it at all: the seq is used again
                seq += 1
                tap.receive(datagram)
                try:
                    while True:
                        arrived.append(into.recv(4096))
                except BlockingIOError:
                    pass
    assert stream.received > 1500 and len(arrived) > 1000
    for data in arrived:
        packet = down_receiver.unprotect(data)
        assert packet[0] >> 6 == 2 and int.from_bytes(packet[8:12], "big") == 7000


def test_the_c_parts_refuse_wrong_arguments_with_a_clear_error():
    from media._wire import HistoryCore, Srtp, dtls_names, leg_kind

    from media.outbound import OutStream

    sender, _ = srtp_pair()
    for call, context, trailer in ((0, 1, 0), (1, 0, 0), (1, 1, -1), (1, 1, 100000)):
        with pytest.raises(ValueError, match="SRTP call"):
            Srtp(sender, call, context, trailer)
    with pytest.raises(TypeError):
        Srtp(sender, "call", 1, 0)
    history = HistoryCore()  # no slots set up: an error, not a crash
    with pytest.raises(TypeError, match="not set up"):
        history.add(1, b"x")
    with pytest.raises(TypeError):
        history.add(1)
    _, stream = published()
    out = OutStream(stream.leg, "referrer", negotiated(7000))
    out.bind(stream, now=0.0)
    for args, kwargs in (((b"x",), {}), ((b"x", 1.0, 2), {}), ((b"x",), {"when": 1.0}),
                         ((b"x", 1.0), {"now": 1.0})):  # fmt: skip
        with pytest.raises(TypeError, match=r"takes \(packet, now\)"):
            out.forward(*args, **kwargs)
        with pytest.raises(TypeError, match=r"takes \(packet, now\)"):
            stream.on_packet(*args, **kwargs)
    stream.on_packet(packet=vp8_packet(1, 0, key=True), now=1.0)  # by name is fine
    out.forward(packet=vp8_packet(2, 0, key=False), now=1.0)
    assert stream.received == 1 and out.packets == 2  # the keyframe through the stream, then one
    with pytest.raises(TypeError):
        dtls_names("_rx_srtp", "_tx_srtp", 3, None)
    with pytest.raises(TypeError):
        leg_kind("Leg", 1.5, 0.1)
