"""The floor: the least a Python media middle can cost per stream, one of the
forwarding benchmark's baselines. ``python -m bench.floor --port P``.

One UDP socket on uvloop serves every stream: an SRTP packet from a publisher is
decrypted (one inbound SRTP session for all of them) and encrypted again for each
subscriber of its SSRC (an outbound session per subscriber), then sent. No ICE,
no DTLS (fixed keys, below), no RTCP, no header rewriting, no loss
repair: what every WebRTC middle pays at the least. A subscriber asks for a
stream with a datagram ``SUB <ssrc>``, and again every second.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import pylibsrtp
import uvloop

# The SRTP profile aiortc (so Jisr) picks first with every client that offers it,
# browsers included: the floor pays for the same cipher.
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
KEY_BYTES = 32 + 12  # master key and salt
FLOOR_UP_KEY = bytes(range(KEY_BYTES))  # publishers -> relay (the relay's inbound key)
FLOOR_DOWN_KEY = bytes(range(KEY_BYTES, 2 * KEY_BYTES))  # relay -> subscribers
FLOOR_SSRC_BASE = 0x4A000000


def floor_ssrc(stream: int) -> int:
    return FLOOR_SSRC_BASE + stream


def srtp_session(key: bytes, inbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=PROFILE))


class Relay(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.inbound = srtp_session(FLOOR_UP_KEY, inbound=True)
        # ssrc -> {subscriber address: its outbound SRTP session}
        self.subscribers: dict[int, dict[tuple, pylibsrtp.Session]] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if data[:4] == b"SUB ":
            ssrc = int(data[4:])
            wanted = self.subscribers.setdefault(ssrc, {})
            if addr not in wanted:
                wanted[addr] = srtp_session(FLOOR_DOWN_KEY, inbound=False)
            return
        try:
            packet = self.inbound.unprotect(data)
        except pylibsrtp.Error:
            return
        targets = self.subscribers.get(int.from_bytes(packet[8:12], "big"))
        if targets:
            sendto = self.transport.sendto
            for address, session in targets.items():
                sendto(session.protect(packet), address)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Relay, local_addr=("127.0.0.1", port))
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    print("ready", flush=True)
    await stopped.wait()
    transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
