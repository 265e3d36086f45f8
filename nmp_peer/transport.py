"""UDP with asyncio-dgram: one socket per peer, sending and receiving at once.

The socket layer knows nothing of audio: it moves datagrams and survives what UDP
throws at it (ICMP port-unreachable while the other peer is not up yet, a full send
buffer). Packetizing lives here too, as the sender's half of the wire format.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from dataclasses import dataclass

import asyncio_dgram
import numpy as np

from nmp_peer import BLOCK_FRAMES
from nmp_peer.codec import Codec
from nmp_peer.wire import SEQ_MODULUS, Packet

Address = tuple[str, int]


class EndpointError(ValueError):
    """A HOST:PORT that cannot be used."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces).

        An IPv6 address must be in brackets: ``::1:5000`` could be the address ``::1:5000``
        or ``::1`` port 5000 (both are valid IPv6), so it is refused with the bracketed form
        as the hint, whatever the host part looks like.
        """
        def is_ipv6(address: str) -> bool:
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                return False
            return True

        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise EndpointError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:50000 or [::1]:50000)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if not is_ipv6(host):
                raise EndpointError(f"{text!r}: only an IPv6 address goes in brackets, e.g. [::1]:50000")
        elif ":" in host or "[" in host or "]" in host:
            example = f"[{host}]:{port}" if ":" in host and is_ipv6(host) else "[::1]:50000"
            raise EndpointError(f"{text!r}: IPv6 addresses go in brackets, e.g. {example}")
        return cls(host or "0.0.0.0", int(port))

    def resolve(self) -> Address:
        try:
            info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise EndpointError(f"cannot resolve {self.host!r}: {exc.strerror}") from None
        return info[0][4][:2]

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class UdpSocket:
    """A bound datagram socket; errors from the network are counted, never raised."""

    def __init__(self, stream: asyncio_dgram.aio.DatagramServer) -> None:
        self._stream = stream
        self.send_errors = 0
        self.receive_errors = 0

    @classmethod
    async def bind(cls, endpoint: Endpoint) -> UdpSocket:
        try:
            stream = await asyncio_dgram.bind(endpoint.resolve())
        except OSError as exc:
            raise EndpointError(f"cannot listen on {endpoint}: {exc.strerror or exc}") from None
        return cls(stream)

    @property
    def address(self) -> Address:
        return self._stream.sockname[:2]

    async def send(self, data: bytes, addr: Address) -> None:
        try:
            await self._stream.send(data, addr)
        except OSError:
            self.send_errors += 1

    def send_nowait(self, data: bytes, addr: Address) -> None:
        """Send without a task or an await: UDP never blocks, and a full buffer drops (counted)."""
        try:
            self._stream._transport.sendto(data, addr)  # asyncio-dgram exposes no synchronous send
        except OSError:
            self.send_errors += 1

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram; raises ``asyncio_dgram.TransportClosed`` once closed."""
        while True:
            try:
                data, addr = await self._stream.recv()
                return data, addr[:2]
            except OSError:
                self.receive_errors += 1

    def close(self) -> None:
        self._stream.close()


class Packetizer:
    """Turns captured blocks into packets: random stream id, sequence and timestamp origins."""

    def __init__(self, codec: Codec, channels: int, *, first_seq: int | None = None) -> None:
        self.codec = codec
        self.channels = channels
        self.stream_id = secrets.randbits(32)
        self.seq = secrets.randbits(32) if first_seq is None else first_seq % SEQ_MODULUS
        self.timestamp = secrets.randbits(31)
        """Sample clock origin; 31 bits so that float64 arithmetic on it stays exact for years."""

    def packetize(self, block: np.ndarray) -> Packet:
        if block.shape != (BLOCK_FRAMES, self.channels):
            raise ValueError(f"block shape {block.shape} != {(BLOCK_FRAMES, self.channels)}")
        packet = Packet(self.codec.payload_type, self.channels, self.stream_id, self.seq, self.timestamp, self.codec.encode(block))
        self.seq = (self.seq + 1) % SEQ_MODULUS
        self.timestamp += BLOCK_FRAMES
        return packet


async def sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
