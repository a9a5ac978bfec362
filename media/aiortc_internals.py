"""Every touch of aiortc/aioice (and pylibsrtp) internals lives here, guarded by
tests/unit/test_aiortc_internals.py, which fails loudly if an upgrade moves them.

aiortc stays in charge of what it does well (SDP, ICE, DTLS, SRTP keys); media
itself bypasses it: a datagram is SRTP-decrypted in aioice's datagram callback and
handed to the forwarder synchronously (no task hop, no parsing), and forwarded
packets are encrypted and written straight to the selected candidate pair's socket.
aiortc's own RTP senders and receivers are never started, so no codec is ever
created on the server.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import aioice.ice
import pylibsrtp
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.utils import random_string
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpTransceiver
from aiortc.codecs import CODECS, is_rtx
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS, RTCDtlsTransport, State
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import MediaDescription
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from ._wire import LinkCore, Srtp, dtls_names, sockaddr
from .rtp import RTP_FIRST_BYTES, is_rtcp

if TYPE_CHECKING:
    from .udp_mux import Address, SharedSocket, UdpMux

_default_host_addresses = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: list[str]) -> None:
    """Gather ICE host candidates on exactly these addresses (empty: aioice's default,
    every interface but loopback).

    aioice has no option for this, and leaves loopback out, so a server on one
    host or in an isolated namespace would offer no candidate at all. The
    addresses are a property of the host, so this is process-wide on purpose.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _default_host_addresses
        return
    parsed = [ipaddress.ip_address(a) for a in addresses]

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a) for a in parsed if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = configured


async def _not_started(*_args: object) -> None:
    """Stands in for RTCRtpSender.send / RTCRtpReceiver.receive."""


def keep_codecs_off(transceiver: RTCRtpTransceiver) -> None:
    """aiortc would start an encoder loop and RTCP for the sender, and a decoder
    thread for the receiver; the forwarder does all of that itself."""
    transceiver.sender.send = _not_started
    transceiver.receiver.receive = _not_started


@dataclass(frozen=True)
class Negotiated:
    """What one m-line agreed on, as aiortc recorded it."""

    mid: str | None
    kind: str
    codecs: list  # RTCRtpCodecParameters, in preference order
    header_extensions: dict[str, int]  # uri -> id
    send_ssrc: int
    send_rtx_ssrc: int


def mline_index(transceiver: RTCRtpTransceiver) -> int:
    """Which m-line of the session description the transceiver stands for."""
    return transceiver._get_mline_index()


def negotiated(transceiver: RTCRtpTransceiver) -> Negotiated:
    return Negotiated(
        mid=transceiver.mid,
        kind=transceiver.kind,
        codecs=list(transceiver._codecs),
        header_extensions={e.uri: e.id for e in transceiver._headerExtensions},
        send_ssrc=transceiver.sender._ssrc,
        send_rtx_ssrc=transceiver.sender._rtx_ssrc,
    )


# The hash functions aiortc checks a DTLS fingerprint with ("sha-256", ...).
FINGERPRINT_ALGORITHMS = tuple(X509_DIGEST_ALGORITHMS)


def answerable_codecs(media: MediaDescription) -> list[RTCRtpCodecParameters]:
    """The codecs aiortc would agree on for an offered m-line; with none, it refuses
    the whole offer."""
    return find_common_codecs(CODECS[media.kind], media.rtp.codecs)


def offerable_codec_names(kind: str) -> list[str]:
    """The codecs aiortc can answer for ``kind``, by name, without duplicates."""
    names = (c.mimeType.split("/", 1)[1] for c in CODECS[kind] if not is_rtx(c))
    return list(dict.fromkeys(names))


def guard_connection_task(pc: RTCPeerConnection, on_failure: Callable[[Exception], None]) -> None:
    """aiortc starts ICE and DTLS in a task nobody awaits (``__connect``); a failure
    there would die unseen and leave the peer "connecting" for ever. Its calls go
    through the mangled attribute, so an instance attribute of that name takes them."""
    connect = pc._RTCPeerConnection__connect

    async def guarded() -> None:
        try:
            await connect()
        except Exception as exc:  # noqa: BLE001 - whatever it was, the peer is unusable
            on_failure(exc)

    pc._RTCPeerConnection__connect = guarded


def srtp_call(session: pylibsrtp.Session, call: str) -> Srtp:
    """libsrtp's ``call`` (srtp_protect or srtp_unprotect) on one pylibsrtp Session,
    made from C (media/_wire.c): pylibsrtp's methods are two Python calls, a type
    check, a length cell and two copies per packet, and the media path makes one call
    each way per packet. The Srtp keeps the session, and so its context, alive."""
    function = srtp_ffi.cast("uintptr_t", getattr(srtp_lib, call))
    context = srtp_ffi.cast("uintptr_t", session._srtp[0])
    trailer = pylibsrtp.SRTP_MAX_TRAILER_LEN if call == "srtp_protect" else 0
    return Srtp(session, int(function), int(context), trailer)


# Where RTCDtlsTransport keeps its SRTP sessions and state, and the state in which
# packets may go out, for Tap's C part to read.
dtls_names("_rx_srtp", "_tx_srtp", "_state", State.CONNECTED)


class Tap(LinkCore):
    """Synchronous RTP/RTCP in and out of one peer connection's bundled transport.

    ``send(packet, rtcp=False) -> bool`` is LinkCore's (media/_wire.c): an RTP packet
    goes out there, checked against what ``_send_other`` last found (the same SRTP
    session, DTLS connected, the same nominated pair on a shared socket); RTCP, and
    anything else, takes ``_send_other``. ``receive(data)``, LinkCore's too, is where
    a shared socket's route hands each datagram: an SRTP packet of the current
    session is unprotected there and goes on to the leg (``Leg.on_rtp``'s common case,
    also in C); anything else takes ``_data_received``."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        on_rtp: Callable[[bytes], None],
        on_rtcp: Callable[[bytes], None],
    ) -> None:
        transceivers = pc.getTransceivers()
        if not transceivers:
            raise ValueError("a tap needs at least one negotiated transceiver")
        self._dtls: RTCDtlsTransport = transceivers[0].receiver.transport
        self._ice = self._dtls.transport._connection
        self._nominated = self._ice._nominated  # component -> pair, kept by aioice
        self._on_rtp = on_rtp
        self._leg = getattr(on_rtp, "__self__", None)  # receive() knows a Leg's on_rtp
        self._on_rtcp = on_rtcp
        self._original = self._ice.data_received
        self._ice.data_received = self._data_received
        # A shared port's routes hand datagrams straight to receive() (C, which takes
        # the next steps itself, and hands anything else to _data_received).
        self._routes = [p.transport for p in self._ice._protocols
                        if isinstance(p.transport, SharedPortRoute)]  # fmt: skip
        for route in self._routes:
            route.data_received = self.receive
        self.sent_packets = 0
        # RTP's SRTP calls, for the DTLS transport's current sessions (a new
        # handshake replaces them), and the nominated pair's address.
        self._unprotect: Srtp | None = None
        self._protect: Srtp | None = None
        self._pair: aioice.ice.CandidatePair | None = None
        self._pair_address: tuple[str, int] | None = None
        self._pair_transport: asyncio.DatagramTransport | None = None  # its protocol's
        # On a shared socket a packet is protected and sent in one C call: the
        # socket's route and the pair's address as the kernel takes it.
        self._route: SharedPortRoute | None = None
        self._pair_sockaddr = b""

    def _data_received(self, data: bytes, component: int) -> None:
        if not data:
            return  # anyone can send an empty datagram; aiortc's DTLS loop dies reading it
        rx = self._dtls._rx_srtp
        # RTP and RTCP go to the forwarder; everything else (DTLS) takes aiortc's path.
        if rx is None or data[0] not in RTP_FIRST_BYTES:
            self._original(data, component)
            return
        if is_rtcp(data):
            try:
                self._on_rtcp(rx.unprotect_rtcp(data))
            except pylibsrtp.Error:
                pass  # forged, replayed or damaged: dropped, as aiortc would
            return
        unprotect = self._unprotect
        if unprotect is None or unprotect.session is not rx:
            unprotect = self._unprotect = srtp_call(rx, "srtp_unprotect")
        packet = unprotect(data)
        if packet is not None:  # else forged, replayed or damaged: dropped
            self._on_rtp(packet)

    @property
    def ready(self) -> bool:
        """Whether packets can go out: DTLS done, SRTP keyed, a pair selected."""
        dtls = self._dtls
        return (
            dtls._tx_srtp is not None
            and dtls._state == State.CONNECTED
            and self._nominated.get(1) is not None
        )

    def _send_other(self, packet: bytes, rtcp: bool = False) -> bool:
        """send() for any packet: encrypt and send at once; False while the transport
        is not up."""
        dtls = self._dtls
        tx = dtls._tx_srtp
        if tx is None or dtls._state != State.CONNECTED:
            return False
        pair = self._nominated.get(1)  # looked up per packet: follows pair changes
        if pair is None:
            return False
        if pair is not self._pair:
            self._take_pair(pair)
        if rtcp:
            try:
                data = tx.protect_rtcp(packet)
            except pylibsrtp.Error:
                return False
        else:
            protect = self._protect
            if protect is None or protect.session is not tx:
                protect = self._protect = srtp_call(tx, "srtp_protect")
            route = self._route
            if route is not None:
                if not protect.send(route.fd, self._pair_sockaddr, packet):
                    return False
                self.sent_packets += 1
                return True
            data = protect(packet)
            if data is None:
                return False
        self._pair_transport.sendto(data, self._pair_address)
        self.sent_packets += 1
        return True

    def _take_pair(self, pair: aioice.ice.CandidatePair) -> None:
        self._pair, self._pair_address = pair, pair.remote_addr
        self._pair_transport = pair.protocol.transport
        route = self._pair_transport
        self._route = route if isinstance(route, SharedPortRoute) else None
        if self._route is not None:
            self._pair_sockaddr = sockaddr(*pair.remote_addr)

    def close(self) -> None:
        if self._ice.data_received == self._data_received:
            self._ice.data_received = self._original
        for route in self._routes:
            route.__dict__.pop("data_received", None)  # the route's own again


def label_sender(transceiver: RTCRtpTransceiver, stream_id: str) -> None:
    """The msid stream id the answer announces for this m-line, so a browser groups
    each participant's audio and video into one MediaStream."""
    transceiver.sender._stream_id = stream_id


def codecs_started(pc: RTCPeerConnection) -> bool:
    """Whether aiortc created an encoder or decoder (or their loops) for ``pc``."""
    for transceiver in pc.getTransceivers():
        sender, receiver = transceiver.sender, transceiver.receiver
        if sender._RTCRtpSender__encoder is not None or sender._RTCRtpSender__rtp_task:
            return True
        if receiver._RTCRtpReceiver__decoder_thread is not None:
            return True
    return False


# -- one UDP port for every peer (media.udp_mux) ----------------------------------------


@dataclass(frozen=True, slots=True)
class StunView:
    request: bool
    ufrag: str | None  # of a binding request: the USERNAME part naming its receiver
    message: stun.Message


def read_stun(data: bytes) -> StunView | None:
    """A STUN message as the shared socket needs it; None for anything else."""
    try:
        message = stun.parse_message(data)
    except Exception:  # noqa: BLE001 - aioice raises ValueError, struct.error... on junk
        return None
    request = message.message_class == stun.Class.REQUEST
    username = message.attributes.get("USERNAME")
    ufrag = None
    if request and message.message_method == stun.Method.BINDING and isinstance(username, str):
        ufrag = username.partition(":")[0]
    return StunView(request, ufrag, message)


def host_addresses() -> list[str]:
    """The addresses aioice gathers host candidates on (see restrict_host_addresses)."""
    return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)


def gather_on_shared_port(pc: RTCPeerConnection, mux: UdpMux) -> None:
    """Make ``pc``'s ICE gather its host candidates on the node's shared sockets.

    Call it after setRemoteDescription (which creates the ICE transports; with
    max-bundle the extra ones are dropped there) and before setLocalDescription
    (which gathers). aioice gathers through ``Connection.get_component_candidates``;
    an instance attribute of that name takes the call.
    """
    for transport in pc._RTCPeerConnection__iceTransports:
        share_port(transport._connection, mux)


def share_port(connection: aioice.ice.Connection, mux: UdpMux) -> None:
    """One aioice connection, before it gathers, onto the shared sockets."""
    connection.get_component_candidates = partial(_shared_candidates, connection, mux)


async def _shared_candidates(
    connection: aioice.ice.Connection, mux: UdpMux, component: int, addresses: list[str],
    timeout: int = 5,
) -> list[Candidate]:  # fmt: skip
    """Stands in for Connection.get_component_candidates: a host candidate on each
    address's shared socket. Nothing server-reflexive or relayed: the node offers
    host candidates only (JISR_ICE_ADDRESSES names its public ones)."""
    if component != 1:
        raise ValueError("a shared port needs RTP and RTCP on one component (rtcp-mux)")
    sockets = [s for s in [await mux.socket_for(a) for a in addresses] if s is not None]
    # The mux routes new addresses by ufrag: another peer's must not be repeated.
    while mux.ufrag_taken(connection.local_username):
        connection._local_username = random_string(8)
    candidates = []
    for shared in sockets:
        protocol = aioice.ice.StunProtocol(connection)
        route = SharedPortRoute(shared, protocol)
        protocol.connection_made(route)
        host, port = shared.sockname
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component,
            transport="udp", priority=candidate_priority(component, "host"), host=host,
            port=port, type="host",
        )  # fmt: skip
        shared.add(route)
        connection._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    return candidates


def _closed(data: bytes, addr: object) -> None:
    """Sending through a route whose connection has closed: nothing goes out."""


class SharedPortRoute:
    """One ICE connection on one shared socket: what its aioice StunProtocol takes
    for its transport, and where the socket hands what arrives for it."""

    def __init__(self, shared: SharedSocket, protocol: aioice.ice.StunProtocol) -> None:
        self._shared = shared
        self._protocol = protocol
        self._connection = protocol.receiver
        self.ufrag: str = self._connection.local_username
        self.addresses: dict[Address, None] = {}
        # The shared socket's own sendto, unwrapped: Tap.send goes through here, or
        # straight to the socket's descriptor (-1 once this route or the socket closed).
        self.sendto = shared.transport.sendto
        self.fd = shared.fd

    # asyncio.DatagramTransport, as much of it as aioice uses

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._shared.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.sendto is _closed

    def close(self) -> None:
        """The connection closes its protocols: only this route goes, not the socket."""
        if self.sendto is _closed:
            return
        self.sendto = _closed
        self.fd = -1
        self._shared.remove(self)
        self._protocol.connection_lost(None)

    # what the shared socket hands over

    def data_received(self, data: bytes) -> None:
        self._connection.data_received(data, 1)  # Tap's hook, once a Tap is installed

    def stun_received(self, data: bytes, addr: Address) -> None:
        self._protocol.datagram_received(data, addr)

    def authenticates(self, message: stun.Message) -> bool:
        return message.check_message_integrity(self._connection.local_password.encode("utf8"))
