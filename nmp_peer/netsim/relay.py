"""A UDP impairment relay: the netem of machines that lack netem.

```
side A ──► listen ─┬─ a2b: outage ─► rate limit ─► Impairment ─► timers ─► forward (side B)
        ◄──────────┴─ b2a: outage ─► rate limit ─► Impairment ─► timers ◄── forward
```

Both sides talk to the relay's one socket. The first address other than ``forward``
that sends to it becomes side A; from then on datagrams from side A go to ``forward``
and datagrams from ``forward`` go to side A. Nothing is ever sent anywhere else:
datagrams from ``forward`` before side A is known are counted ``no-peer``, those from
any third address ``foreign``, and both are dropped.

Per direction, in this order, for every routed datagram:

1. it takes the next decision of the direction's ``Impairment`` (index = arrival
   order in that direction), whatever happens to it next, so the decisions depend only
   on the packet order, and with the same seed the A→B decisions are exactly those of
   ``nmp-peer loopback`` and the offline lab;
2. an outage window drops it (``outage``);
3. the rate limit, a token bucket at ``rate_kbps`` with a queue of ``queue_ms`` worth
   of bits, delays it by its queueing time or drops it when the queue is full
   (``rate-drop``); sizes count the IPv4 packet (payload + 28 bytes of UDP/IP headers);
4. the impairment's decision drops, delays, duplicates or holds it back (reorder).

Every datagram leaves one ground-truth record (JSON lines, or CSV for a ``.csv``
path): arrival time, direction, index, sequence number and stream id (-1 for a
datagram that is not an nmp-peer packet; it is relayed all the same), size, action and
each copy's delay in ms. ``Relay.run`` returns the counters.

``DirectionLink`` and ``TokenBucket`` (``nmp_peer.netsim.link``) are sans-IO and clock-free
(time is passed in), as is the log (``nmp_peer.netsim.relaylog``); ``Relay`` owns the socket
(``nmp_peer.live.transport.UdpSocket``, the peers' own), the timers and the signals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import Any

from nmp_peer.live.transport import Address, Endpoint, EndpointError, SocketClosed, UdpSocket
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.link import RATE_QUEUE_MS, DirectionLink, TokenBucket
from nmp_peer.netsim.relaylog import Record, _LogWriter, packet_ids

RECEIVE_BUFFER_BYTES = 1 << 21
MAX_DATAGRAM_BYTES = 65535
"""Read whole: the relay forwards any datagram as it is, whatever its size."""


def _listen_family(endpoint: Endpoint) -> int:
    """The address family of the listening socket, as ``UdpSocket.bind`` will choose it."""
    return socket.AF_INET6 if ":" in endpoint.resolve()[0] else socket.AF_INET


def _forward_address(endpoint: Endpoint, family: int) -> Address:
    try:
        info = socket.getaddrinfo(endpoint.host, endpoint.port, family=family, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise EndpointError(
            f"cannot resolve forward address {endpoint.host!r} for the listening socket's "
            f"address family: {exc.strerror}"
        ) from None
    addr = (str(info[0][4][0]), int(info[0][4][1]))
    if addr[0] in ("0.0.0.0", "::"):
        raise EndpointError(f"forward address {endpoint} must name a host, not all interfaces")
    if addr[1] == 0:
        raise EndpointError(f"forward address {endpoint} needs a port")
    return addr


class Relay:
    """Relays datagrams between side A (learned) and ``forward`` (side B) with impairments."""

    def __init__(
        self,
        listen: Endpoint,
        forward: Endpoint,
        impairment_a_to_b: Impairment | None,
        impairment_b_to_a: Impairment | None = None,
        rate_kbps: float | None = None,
        outage: tuple[float, float] | None = None,
        log: str | os.PathLike[str] | None = None,
        *,
        queue_ms: float = RATE_QUEUE_MS,
        burst_bytes: int | None = None,
    ) -> None:
        if outage is not None:
            start, seconds = outage
            if start < 0 or seconds < 0:
                raise ValueError(f"outage start and length must be non-negative, got {start}:{seconds}")
            outage = (float(start), float(seconds))
        self.listen = listen
        self.forward = forward
        self.rate_kbps = rate_kbps
        self.outage = outage
        self.log_path = log

        def bucket() -> TokenBucket | None:
            return None if rate_kbps is None else TokenBucket(rate_kbps, queue_ms, burst_bytes)

        self.links = {
            "a2b": DirectionLink("a2b", impairment_a_to_b, bucket(), outage),
            "b2a": DirectionLink("b2a", impairment_b_to_a, bucket(), outage),
        }
        self.side_a: Address | None = None
        self.no_peer = 0
        self.foreign = 0
        self._family = _listen_family(listen)
        self._forward = _forward_address(forward, self._family)
        self._udp: UdpSocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log: _LogWriter | None = None
        self._t0 = 0.0
        self._first: float | None = None
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._next_id = 0
        self._stop: asyncio.Event | None = None
        self._started_wall = 0.0
        self._cpu0 = 0.0
        self._closed: tuple[float, float, int] | None = None
        """(wall seconds, CPU seconds, delayed copies discarded) once closed."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> Address:
        """The bound listening address (its real port when ``listen`` asked for port 0)."""
        if self._udp is None:
            raise RuntimeError("relay not started")
        return self._udp.address

    async def start(self) -> None:
        """Bind the socket and open the log; datagrams are relayed from now on."""
        loop = asyncio.get_running_loop()
        udp = await UdpSocket.bind(self.listen, rcvbuf=RECEIVE_BUFFER_BYTES, max_datagram=MAX_DATAGRAM_BYTES)
        if self.log_path is not None:
            try:
                self._log = _LogWriter(self.log_path)
            except ValueError:
                udp.close()
                raise
        self._loop = loop
        self._stop = asyncio.Event()
        self._t0 = loop.time()
        self._started_wall = time.monotonic()
        self._cpu0 = time.process_time()
        self._udp = udp
        self._reader = loop.create_task(self._receive())

    async def _receive(self) -> None:
        assert self._udp is not None
        while self._closed is None:
            try:
                batch = await self._udp.receive_batch()
            except SocketClosed:
                return
            for data, addr in batch:
                if self._closed is not None:
                    return
                self._on_datagram(data, addr)

    @property
    def send_errors(self) -> int:
        """Copies the socket could not send (a full buffer), and errors (ICMP) it reported while receiving."""
        return 0 if self._udp is None else self._udp.send_errors + self._udp.receive_errors

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Relay until ``stop()``, SIGINT/SIGTERM or ``duration_s``; return the counters."""
        if self._udp is None:
            await self.start()
        loop = asyncio.get_running_loop()
        assert self._stop is not None
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            await asyncio.wait_for(self._stop.wait(), duration_s)
        except TimeoutError:
            pass
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            self.close()
        return self.summary()

    def close(self) -> None:
        """Stop relaying: pending delayed copies are discarded (and counted), the log is flushed."""
        if self._closed is not None:
            return
        discarded = len(self._pending)
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        if self._reader is not None:
            self._reader.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._closed = (time.monotonic() - self._started_wall, time.process_time() - self._cpu0, discarded)

    def summary(self) -> dict[str, Any]:
        routed = sum(link.counters.received for link in self.links.values())
        if self._closed is not None:
            wall_s, cpu_s, discarded = self._closed
        else:
            wall_s, cpu_s = time.monotonic() - self._started_wall, time.process_time() - self._cpu0
            discarded = len(self._pending)
        return {
            "listen": str(self.listen),
            "forward": str(self.forward),
            "side_a": None if self.side_a is None else f"{self.side_a[0]}:{self.side_a[1]}",
            "a2b": self.links["a2b"].counters.to_dict(),
            "b2a": self.links["b2a"].counters.to_dict(),
            "no_peer": self.no_peer,
            "foreign": self.foreign,
            "send_errors": self.send_errors,
            "pending_discarded": discarded,
            "first_packet_ms": None if self._first is None else round(1000.0 * (self._first - self._t0), 3),
            "wall_s": round(wall_s, 3),
            "cpu_s": round(cpu_s, 3),
            "cpu_us_per_datagram": round(1e6 * cpu_s / routed, 1) if routed else None,
            "rate_kbps": self.rate_kbps,
            "outage": list(self.outage) if self.outage else None,
            "impairment_a2b": repr(self.links["a2b"].impairment),
            "impairment_b2a": repr(self.links["b2a"].impairment),
        }

    # ------------------------------------------------------------------ datagrams
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        assert self._loop is not None
        now = self._loop.time()
        t_s = now - self._t0
        if addr == self._forward:
            if self.side_a is None:
                self.no_peer += 1
                self._write(Record(round(1000.0 * t_s, 3), "b2a", -1, *packet_ids(data), len(data), "no-peer"))
                return
            link, dest = self.links["b2a"], self.side_a
        elif self.side_a is None or addr == self.side_a:
            self.side_a = addr
            link, dest = self.links["a2b"], self._forward
        else:
            self.foreign += 1
            self._write(Record(round(1000.0 * t_s, 3), "foreign", -1, *packet_ids(data), len(data), "foreign"))
            return
        if self._first is None:
            self._first = now
        record = link.decide(data, t_s, now - self._first)
        self._write(record)
        for delay_ms in record.delays_ms:
            if delay_ms <= 0.0:
                self._send(link, data, dest)
            else:  # due at arrival + delay exactly as logged, whatever this took
                key = self._next_id
                self._next_id += 1
                due = self._t0 + (record.t_ms + delay_ms) / 1000.0
                self._pending[key] = self._loop.call_at(due, self._send_later, key, link, data, dest)

    def _send_later(self, key: int, link: DirectionLink, data: bytes, dest: Address) -> None:
        self._pending.pop(key, None)
        self._send(link, data, dest)

    def _send(self, link: DirectionLink, data: bytes, dest: Address) -> None:
        # Straight to the socket, never queued: a full send buffer drops (counted), as a
        # router's queue would; an empty datagram is sent as it is.
        if self._udp is None or self._closed is not None:
            return
        if self._udp.send_nowait(data, dest):
            link.counters.copies_sent += 1

    def _write(self, record: Record) -> None:
        if self._log is not None:
            self._log.write(record)
