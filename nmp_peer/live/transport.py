"""UDP on asyncio: one socket per peer, sending and receiving at once.

The socket layer knows nothing of audio: it moves datagrams and survives what UDP
throws at it (ICMP port-unreachable while the other peer is not up yet, a full send
buffer). Packetizing lives here too, as the sender's half of the wire format.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections import deque
from dataclasses import dataclass

from nmp_peer.proto.security import MAX_DATAGRAM_BYTES

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
        host, port = info[0][4][:2]
        return str(host), int(port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


RECEIVE_BUFFER_BYTES = 4 << 20
"""Asked for on bind. A flood of junk up to 64 KB a datagram fills Linux's default
(about 200 KB) in milliseconds, and the real stream's packets are dropped with it
(``nmp-peer bench --path flood``). Linux doubles what it grants and caps it at
``net.core.rmem_max`` unless the process may force it (CAP_NET_ADMIN);
``rcvbuf_bytes`` says what was granted."""
SEND_BUFFER_BYTES = 1 << 20
RECEIVE_BATCH = 256
"""Datagrams read per readiness event at most, so one flooded socket cannot hold the loop."""
MAX_QUEUED = 8192
"""Datagrams read but not yet taken; beyond this the socket stops reading and the
kernel's buffer (and its drop counter) takes over."""


class SocketClosed(ConnectionError):
    """Receiving on a socket that has been closed."""


class UdpSocket:
    """A bound datagram socket; errors from the network are counted, never raised.

    Reading is the event loop's reader callback on the socket: each time it is readable,
    it reads up to ``RECEIVE_BATCH`` datagrams until the kernel has none left, and
    ``receive_batch`` hands all of them to one wake-up of the receiving task (asyncio's
    own datagram transport reads one datagram per readiness event, and asyncio-dgram adds
    a queue and a task wake-up per datagram). Datagrams longer than ``max_datagram`` are
    read truncated to ``max_datagram + 1`` bytes: they still look oversized to the
    receive gate, and junk costs no 64 KB copy.
    """

    def __init__(self, sock: socket.socket, max_datagram: int) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._read_size = max_datagram + 1
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False
        self._closed = False
        self._drops_at_close: int | None = None
        self.send_errors = 0
        self.receive_errors = 0
        self.rcvbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        """The receive buffer the kernel granted (Linux reports twice what was asked)."""
        self.sndbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self._address: Address = sock.getsockname()[:2]
        self._resume_reading()

    @classmethod
    async def bind(
        cls,
        endpoint: Endpoint,
        *,
        rcvbuf: int = RECEIVE_BUFFER_BYTES,
        sndbuf: int = SEND_BUFFER_BYTES,
        max_datagram: int = MAX_DATAGRAM_BYTES,
    ) -> UdpSocket:
        addr = endpoint.resolve()
        sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _set_buffer(sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None), rcvbuf)
            _set_buffer(sock, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None), sndbuf)
            sock.setblocking(False)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise EndpointError(f"cannot listen on {endpoint}: {exc.strerror or exc}") from None
        return cls(sock, max_datagram)

    @property
    def address(self) -> Address:
        return self._address

    async def send(self, data: bytes, addr: Address) -> None:
        """Send, waiting for room in the send buffer if it is full."""
        try:
            self._sock.sendto(data, addr)
        except BlockingIOError:
            try:
                await self._loop.sock_sendto(self._sock, data, addr)
            except OSError:
                self.send_errors += 1
        except OSError:
            self.send_errors += 1

    def send_nowait(self, data: bytes, addr: Address) -> bool:
        """Send without a task or an await: UDP never blocks, and a full buffer drops (counted).
        True when the datagram went to the kernel."""
        try:
            self._sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1
            return False
        return True

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram; raises ``SocketClosed`` once closed."""
        while not self._queue:
            await self._wait()
        item = self._queue.popleft()
        if not self._reading and not self._closed:
            self._resume_reading()
        return item

    async def receive_batch(self) -> list[tuple[bytes, Address]]:
        """Every datagram read so far (at least one), oldest first; raises ``SocketClosed`` once closed."""
        while not self._queue:
            await self._wait()
        batch = list(self._queue)
        self._queue.clear()
        if not self._reading and not self._closed:
            self._resume_reading()
        return batch

    def take_ready(self) -> list[tuple[bytes, Address]]:
        """Every datagram already here, without waiting (maybe none): what was read and
        what the kernel holds now. An output ticker calls this before each block, so a
        tick that runs late (a busy machine) never plays past packets that have arrived."""
        if self._closed:
            return []
        if self._reading:
            self._read_ready()
        batch = list(self._queue)
        self._queue.clear()
        if not self._reading and not self._closed:
            self._resume_reading()
        return batch

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped because this socket's receive buffer was full
        (Linux's /proc/net/udp; None elsewhere). After ``close``: the count at closing."""
        if self._closed:
            return self._drops_at_close
        return _kernel_drops(self._sock)

    def close(self) -> None:
        if self._closed:
            return
        self._drops_at_close = _kernel_drops(self._sock)
        self._closed = True
        self._pause_reading()
        self._sock.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(SocketClosed("socket closed"))

    async def _wait(self) -> None:
        if self._closed:
            raise SocketClosed("socket closed")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _read_ready(self) -> None:
        recvfrom, size, queue = self._sock.recvfrom, self._read_size, self._queue
        for _ in range(RECEIVE_BATCH):
            try:
                data, addr = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. an ICMP error reported on the socket
                self.receive_errors += 1
                continue
            queue.append((data, addr[:2]))
        if len(queue) >= MAX_QUEUED:
            self._pause_reading()
        waiter = self._waiter
        if queue and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_reading(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._read_ready)
        self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False


def _set_buffer(sock: socket.socket, option: int, force: int | None, size: int) -> None:
    """Ask for ``size``; where the kernel grants less (its cap), force it if this process may."""
    sock.setsockopt(socket.SOL_SOCKET, option, size)
    if force is not None and sock.getsockopt(socket.SOL_SOCKET, option) < 2 * size:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:  # not privileged (CAP_NET_ADMIN): keep what was granted
            pass


def _kernel_drops(sock: socket.socket) -> int | None:
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for row in f:
                    fields = row.split()
                    if fields[9] == inode:
                        return int(fields[-1])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return None


async def sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until ``deadline`` (loop time); when it has passed, still yield once, so that a
    ticker catching up after a stall lets the datagrams waiting meanwhile be received
    between its ticks instead of playing every overdue tick before any of them."""
    await asyncio.sleep(max(0.0, deadline - loop.time()))
