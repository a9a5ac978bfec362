"""Guards on the aiortc/aioice internals Jisr relies on: an upgrade that moves them
must fail here, loudly, not in a call."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aioice.ice

from media.aiortc_internals import restrict_host_addresses


def test_pinned_versions():
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"


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
