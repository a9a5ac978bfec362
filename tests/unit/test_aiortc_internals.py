"""Guards on the aiortc/aioice internals Jisr relies on: an upgrade that moves them
must fail here, loudly, not in a call."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aioice.ice
import pylibsrtp
import pytest

from media.aiortc_internals import restrict_host_addresses
from tests.support.srtp import srtp_pair


def test_pinned_versions():
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"
    assert version("pylibsrtp") == "1.0.0"


def test_host_address_hook_still_used_by_gathering():
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source
    assert list(inspect.signature(aioice.ice.get_host_addresses).parameters) == [
        "use_ipv4",
        "use_ipv6",
    ]


def test_restrict_host_addresses_filters_by_family():
    original = aioice.ice.get_host_addresses
    try:
        restrict_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        restrict_host_addresses([])
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    finally:
        aioice.ice.get_host_addresses = original


def test_private_attributes_the_forwarder_uses_still_exist():
    from aiortc import RTCPeerConnection, RTCRtpTransceiver
    from aiortc.rtcdtlstransport import RTCDtlsTransport, State
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from aiortc.rtcrtpsender import RTCRtpSender

    source = inspect.getsource
    assert "self._rx_srtp" in source(RTCDtlsTransport) and "self._tx_srtp" in source(
        RTCDtlsTransport
    )
    assert "self._state" in source(RTCDtlsTransport) and State.CONNECTED
    assert "self.receiver.data_received(" in source(aioice.ice.StunProtocol.datagram_received)
    assert "self._nominated" in source(aioice.ice.Connection)
    assert "active_pair.protocol.send_data(data, active_pair.remote_addr)" in source(
        aioice.ice.Connection.sendto
    )
    assert "self.transport.sendto(data, addr)" in source(aioice.ice.StunProtocol.send_data)
    for name in ("_ssrc", "_rtx_ssrc", "_stream_id", "__encoder", "__rtp_task"):
        assert f"self.{name}" in source(RTCRtpSender.__init__), name
    assert "self.__decoder_thread" in source(RTCRtpReceiver.__init__)
    assert {"send", "stop"} <= set(vars(RTCRtpSender)) and "receive" in vars(RTCRtpReceiver)
    assert "self._codecs" in source(RTCRtpTransceiver.__init__)
    assert "self._headerExtensions" in source(RTCRtpTransceiver.__init__)
    assert hasattr(RTCRtpTransceiver, "_get_mline_index")
    # aiortc only starts senders and receivers through these calls.
    connect = source(RTCPeerConnection._RTCPeerConnection__connect)
    assert "transceiver.sender.send(" in connect and "transceiver.receiver.receive(" in connect
    # guard_connection_task: aiortc starts ICE and DTLS in this task, through the
    # mangled attribute an instance attribute overrides.
    for method in (RTCPeerConnection.setRemoteDescription, RTCPeerConnection.setLocalDescription):
        assert "asyncio.ensure_future(self.__connect())" in source(method)


PACKET = bytes([0x80, 96, 0, 1, 0, 0, 0, 90, 0, 0, 4, 210]) + b"picture" * 100


def test_what_the_srtp_calls_borrow_from_pylibsrtp():
    import gc

    from media.aiortc_internals import srtp_call

    # A session's context is the first cell of its _srtp, freed with the session.
    assert "self._srtp = ffi.gc(" in inspect.getsource(pylibsrtp.Session.__init__)
    sender, receiver = srtp_pair()
    protect = srtp_call(sender, "srtp_protect")
    unprotect = srtp_call(receiver, "srtp_unprotect")
    del sender, receiver
    gc.collect()  # the calls keep their sessions, so their contexts, alive
    assert protect.session is not None and unprotect.session is not None
    protected = protect(PACKET)
    assert protected is not None and protected != PACKET
    assert unprotect.session.unprotect(protected) == PACKET  # what pylibsrtp itself reads
    again = protect(PACKET[:2] + bytes([0, 2]) + PACKET[4:])
    assert unprotect(again) == PACKET[:2] + bytes([0, 2]) + PACKET[4:]
    assert unprotect(again) is None  # replayed
    assert unprotect(again[:-1] + bytes([again[-1] ^ 1])) is None  # damaged
    assert unprotect(b"\x80") is None  # cut short
    assert protect(PACKET[:12] + b"x" * 1500) is None  # longer than any datagram we take
    with pytest.raises(TypeError):
        protect("text")  # type: ignore[arg-type]


def test_a_packet_is_protected_and_sent_in_one_call():
    import socket

    from media.aiortc_internals import sockaddr, srtp_call

    sender, receiver = srtp_pair()
    protect = srtp_call(sender, "srtp_protect")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as into:  # fmt: skip
        into.bind(("127.0.0.1", 0))
        into.settimeout(5)
        address = sockaddr(*into.getsockname())
        sent = protect.send(out.fileno(), address, PACKET)
        data, _ = into.recvfrom(2048)
        assert sent == len(data) > len(PACKET)
        assert receiver.unprotect(data) == PACKET
        # Nothing goes out, and nothing raises, for what cannot be sent.
        assert protect.send(-1, address, PACKET) == 0  # a closed route's descriptor
        assert protect.send(out.fileno(), address, PACKET[:12] + b"x" * 1500) == 0
        with pytest.raises(ValueError):
            protect.send(out.fileno(), b"short", PACKET)
        with pytest.raises(TypeError):
            protect.send(out.fileno(), address)


def test_sockaddr_packs_what_the_kernel_takes():
    import socket
    import struct

    from media.aiortc_internals import sockaddr

    v4 = sockaddr("192.0.2.7", 7882)
    assert struct.unpack("=H", v4[:2])[0] == socket.AF_INET
    assert v4[2:4] == (7882).to_bytes(2, "big") and v4[4:8] == socket.inet_aton("192.0.2.7")
    v6 = sockaddr("fe80::1", 7882, 0, 3)
    assert len(v6) == 28 and struct.unpack("=H", v6[:2])[0] == socket.AF_INET6
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "fe80::1")
    assert struct.unpack("=I", v6[24:28])[0] == 3  # the scope a link-local address needs
    for host, port in (("example.org", 1), ("192.0.2.7", 70000)):
        with pytest.raises(ValueError):
            sockaddr(host, port)


def test_what_offer_checks_borrow_from_aiortc():
    from aiortc.rtcpeerconnection import RTCPeerConnection, find_common_codecs
    from aiortc.sdp import SessionDescription

    from media.aiortc_internals import FINGERPRINT_ALGORITHMS

    assert list(inspect.signature(find_common_codecs).parameters) == [
        "local_codecs",
        "remote_codecs",
    ]
    assert "find_common_codecs(CODECS[media.kind], media.rtp.codecs)" in inspect.getsource(
        RTCPeerConnection.setRemoteDescription
    )
    assert FINGERPRINT_ALGORITHMS == ("sha-256", "sha-384", "sha-512")
    # The offer checks read a missing a=setup as dtls None, a missing a=mid as "".
    parsed = SessionDescription.parse("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n")
    assert parsed.media[0].dtls is None and parsed.media[0].rtp.muxId == ""


async def test_tap_carries_rtp_and_rtcp_between_real_peers():
    import asyncio

    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

    from media.aiortc_internals import Tap, codecs_started, keep_codecs_off
    from media.rtp import build_pli

    restrict_host_addresses(["127.0.0.1"])
    try:
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        a, b = RTCPeerConnection(config), RTCPeerConnection(config)
        a.addTransceiver("video", direction="sendrecv")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        for pc in (a, b):
            for transceiver in pc.getTransceivers():
                keep_codecs_off(transceiver)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        got_rtp: asyncio.Queue = asyncio.Queue()
        got_rtcp: asyncio.Queue = asyncio.Queue()
        tap_a = Tap(a, lambda p: None, lambda p: None)
        Tap(b, got_rtp.put_nowait, got_rtcp.put_nowait)  # installs itself on b

        async def until_ready() -> None:
            while not tap_a.ready:
                await asyncio.sleep(0.01)  # polling the transport's state, bounded below

        await asyncio.wait_for(until_ready(), 10)
        packet = bytes([0x80, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 42]) + b"payload"
        assert tap_a.send(packet)
        assert await asyncio.wait_for(got_rtp.get(), 5) == packet
        pli = build_pli(1, 42)
        assert tap_a.send(pli, rtcp=True)
        assert await asyncio.wait_for(got_rtcp.get(), 5) == pli
        assert not codecs_started(a) and not codecs_started(b)
        await a.close()
        await b.close()
    finally:
        restrict_host_addresses([])


def test_what_the_shared_port_replaces_in_aioice():
    """media.udp_mux: a peer's ICE gathers on the node's shared sockets through an
    instance attribute standing in for get_component_candidates, with a
    StunProtocol whose transport is a route on the shared socket."""
    from aiortc import RTCPeerConnection
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

    source = inspect.getsource
    Connection, StunProtocol = aioice.ice.Connection, aioice.ice.StunProtocol
    # aiortc gathers on the transports in this set, each with its gatherer's connection,
    # one component (RTP and RTCP muxed).
    assert "self.__iceTransports" in source(RTCPeerConnection.__init__)
    assert "t.iceGatherer.gather()" in source(RTCPeerConnection._RTCPeerConnection__gather)
    assert "self.__iceTransports" in source(RTCPeerConnection._RTCPeerConnection__gather)
    assert "self._connection = gatherer._connection" in source(RTCIceTransport.__init__)
    assert "components" not in source(RTCIceGatherer.__init__)
    assert inspect.signature(Connection).parameters["components"].default == 1
    # gather_candidates asks for each component's candidates through the instance.
    assert "self.get_component_candidates(component=component, addresses=addresses)" in source(
        Connection.gather_candidates
    )
    assert list(inspect.signature(Connection.get_component_candidates).parameters) == [
        "self", "component", "addresses", "timeout",
    ]  # fmt: skip
    # What the stand-in fills in and how aioice then uses it.
    assert "self._local_username = local_username" in source(Connection.__init__)
    assert "return self._local_username" in source(Connection.local_username.fget)
    assert "self._protocols: list[StunProtocol] = []" in source(Connection.__init__)
    assert "for protocol in self._protocols:" in source(Connection._pair_remote_candidate)
    assert "await protocol.close()" in source(Connection.close)
    assert "self.transport = cast(asyncio.DatagramTransport, transport)" in source(
        StunProtocol.connection_made
    )
    assert "self.transport.close()" in source(StunProtocol.close)
    assert "self.receiver.protocol_lost(self)" in source(StunProtocol.connection_lost)
    assert "self.transport.sendto(bytes(message), addr)" in source(StunProtocol.send_stun)
    assert "self.receiver.request_received(message, addr, self)" in source(
        StunProtocol.datagram_received
    )
    assert "message.check_message_integrity(self.local_password" in source(
        Connection.request_received
    )


async def test_shared_port_carries_a_real_peer_connection():
    import asyncio

    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection
    from aiortc.sdp import SessionDescription

    from media.aiortc_internals import Tap, gather_on_shared_port, keep_codecs_off
    from media.udp_mux import UdpMux

    restrict_host_addresses(["127.0.0.1"])
    mux = UdpMux(0)
    try:
        await mux.listen(["127.0.0.1"])
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        client, server = RTCPeerConnection(config), RTCPeerConnection(config)
        client.addTransceiver("audio", direction="sendrecv")
        client.addTransceiver("video", direction="sendrecv")
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        gather_on_shared_port(server, mux)
        for pc in (client, server):
            for transceiver in pc.getTransceivers():
                keep_codecs_off(transceiver)
        await server.setLocalDescription(await server.createAnswer())
        answer = SessionDescription.parse(server.localDescription.sdp)
        ports = {c.port for m in answer.media for c in m.ice_candidates}
        assert ports == {mux.ports()["127.0.0.1"]}
        await client.setRemoteDescription(server.localDescription)
        got: asyncio.Queue = asyncio.Queue()
        tap_client = Tap(client, got.put_nowait, lambda p: None)
        tap_server = Tap(server, got.put_nowait, lambda p: None)
        # the shared socket's routes hand datagrams to the server's tap directly
        assert tap_server._routes and all(
            r.data_received == tap_server.receive for r in tap_server._routes
        )

        async def until_ready() -> None:
            while not (tap_client.ready and tap_server.ready):
                await asyncio.sleep(0.01)  # polling the transport's state, bounded below

        await asyncio.wait_for(until_ready(), 10)
        packet = bytes([0x80, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 42]) + b"payload"
        assert tap_client.send(packet) and await asyncio.wait_for(got.get(), 5) == packet
        assert tap_server.send(packet) and await asyncio.wait_for(got.get(), 5) == packet
        assert mux.stats()["peers"] == 1
        await client.close()
        await server.close()
        assert mux.stats()["peers"] == 0 and mux.stats()["addresses"] == 0
    finally:
        mux.close()
        restrict_host_addresses([])
