"""One peer of a session: capture → packets → UDP to every remote, and UDP → playout → mix → output.

A duo's ``jam`` has one remote; a band (``nmp-peer band``) has up to seven, the same
code: each remote is a :class:`~nmp_peer.live.remote.RemoteStream` (its gate, keyed
session, playout engine and counters), all read at the one output clock and summed by
the :class:`~nmp_peer.receiver.mixer.Mixer` (a duo's mix is an exact copy of its one
stream). One socket sends our stream to every remote and receives theirs; datagrams
go to the remote whose address they come from.

The capture side is a WAV file read at real time or a sound card's input stream; the
output side is a sound card's output stream (its callback pulls one ready block from
the playout engine and never waits) or a WAV file written on a real-time tick.

Sound-card streams are opened and started before the socket is bound: PortAudio takes
60-140 ms to open a stream under JACK, and the peer's packets must not pile up meanwhile.
A stream that stops during the jam ends it with a ``DeviceFailure`` (``live.devices``).
Between the cards and the streams is the device edge (``live.devices.DeviceEdge``): any
period re-blocked to 512, any rate resampled, one duplex stream for one device, and the
output device as the clock every remote's stream is read at (a duo's and a band's alike).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, PACKET_S, SAMPLE_RATE
from nmp_peer.audio_io import AudioFileError, WavWriter, read_audio
from nmp_peer.conceal import make_concealer
from nmp_peer.conceal.worker import ConcealThread
from nmp_peer.live.devices import POLL_S, DeviceEdge, DeviceFailure, DeviceSettings, DeviceStreams
from nmp_peer.live.memory import freeze_heap
from nmp_peer.live.monitor import Monitor, MonitorConfig, SnapshotBoard, publish_every
from nmp_peer.live.remote import RemoteSpec, RemoteStream
from nmp_peer.live.transport import Address, Endpoint, UdpSocket, sleep_until
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.session import Session
from nmp_peer.proto.wire import HEADER_BYTES
from nmp_peer.receiver.gate import REPIN_AFTER_S, PinMode
from nmp_peer.receiver.mixer import Mixer
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine
from nmp_peer.receiver.snapshot import LevelMeter, make_snapshot, peer_snapshot, self_snapshot
from nmp_peer.receiver.stats import Stats

MAX_REMOTES = 7
"""A band is at most 8 peers: each sends to and receives from the 7 others."""


def is_audio_file(spec: str | None) -> bool:
    return spec is not None and Path(spec).suffix.lower() in (".wav", ".flac", ".ogg")


@dataclass
class JamOptions:
    listen: Endpoint
    peer: Endpoint | None
    """A duo's other peer (``jam``); a band names its remotes in ``remotes`` instead."""
    input: str | None
    output: str | None
    concealer: str
    playout: PlayoutConfig
    duration_s: float | None = None
    status: Callable[[str], None] | None = None
    key: bytes | None = None
    """Pre-shared key: a handshake per session, AEAD on every packet, only authenticated ones accepted."""
    encrypt: bool = True
    """With a key: encrypt the payloads too (else only authenticate them)."""
    pin: PinMode = "peer"
    """Without a key: follow the stream from the peer's exact address (``peer``) or any port of its host."""
    repin_after_s: float = REPIN_AFTER_S
    codec: Any = None
    """The sender's codec (PCM16 when None); the receiver decodes whatever its peer sends."""
    devices: DeviceSettings = DeviceSettings()
    """Sound devices: period, rate and latency (config ``[device]``)."""
    remotes: list[RemoteSpec] = field(default_factory=list)
    """A band's other peers (each with its mix settings); empty: the one ``peer``."""
    out_channels: int | None = None
    """Channels of the mix (the output): None plays what the streams carry (a duo's exact copy)."""
    monitor: MonitorConfig | None = None
    """Serve the live web monitor (``live.monitor``) and publish snapshots for it."""

    def remote_specs(self) -> list[RemoteSpec]:
        if self.remotes:
            return list(self.remotes)
        if self.peer is None:
            raise ValueError("a session needs at least one remote")  # a bug: the CLI checks this
        return [RemoteSpec("peer", self.peer)]


class Peer:
    def __init__(self, options: JamOptions) -> None:
        self.options = options
        channels = options.playout.channels
        specs = options.remote_specs()
        if not 1 <= len(specs) <= MAX_REMOTES:
            raise ValueError(f"a session has 1..{MAX_REMOTES} remotes, not {len(specs)}")  # the CLI checks this
        self.concealer = make_concealer(options.concealer)
        self.conceal_thread = ConcealThread()
        """One thread computes the concealments of every remote's stream."""
        self.remotes = [
            RemoteStream(
                spec,
                spec.endpoint.resolve(),
                self.concealer,
                options.playout,
                self.conceal_thread,
                key=options.key,
                encrypt=options.encrypt,
                pin=options.pin,
                repin_after_s=options.repin_after_s,
            )
            for spec in specs
        ]
        self.stats = self.remotes[0].stats if len(self.remotes) == 1 else Stats()
        """This peer's own counters (devices, capture): a duo's are its one stream's, as ever."""
        out_channels = options.out_channels or channels
        self.mixer = Mixer([spec.strip() for spec in specs], out_channels)
        self._exact = len(self.remotes) == 1 and out_channels == channels and self.mixer.unit(0)
        self.packetizer = Packetizer(options.codec or Pcm16Codec(), channels)
        self._t0 = time.monotonic()
        self._stop = asyncio.Event()
        self._ended = False
        """This peer's stream has been ended with end-of-stream notices."""
        self._drain: Callable[[], None] | None = None
        """Takes in the datagrams already here (set once receiving runs)."""
        self.output_ticks_late = 0
        """Ticks of the real-time output clock (a file, or no output) that ran a whole packet
        or more after their time: where a sound card's callback with one packet of buffer
        would have missed its deadline. A sound card's own misses are its underflows."""
        self.output_late_max_s = -1.0
        """The latest such tick ran this long after its time (-1: the tick never ran)."""
        self.input_level = LevelMeter()
        """The level of what this peer sends (its input)."""
        self.devices = DeviceStreams(self.stats)
        self._captured: asyncio.Queue[np.ndarray] | None = None
        """Blocks from the input device, for the sender (None without one)."""
        self._capturing = False
        """The sender takes captured blocks (before, the input callback drops them: no stream yet)."""
        self.failure: DeviceFailure | None = None
        """Why the jam ended early: a device stream stopped (the summary says it too)."""
        self.board = SnapshotBoard()
        """With a monitor: the latest snapshot (``receiver.snapshot``), replaced ``SNAPSHOT_HZ`` times a second."""
        self.source: np.ndarray | None = None
        if options.input is not None and is_audio_file(options.input):
            self.source, _ = read_audio(options.input, channels=channels)
        elif options.input is not None and Path(options.input).suffix:
            raise AudioFileError(f"cannot read audio file {options.input}: unsupported extension")

    @property
    def engine(self) -> PlayoutEngine:
        """A duo's one playout engine."""
        return self.remotes[0].engine

    @property
    def session(self) -> Session | None:
        """A duo's keyed session with its partner."""
        return self.remotes[0].session

    def now(self) -> float:
        return (time.monotonic() - self._t0) * SAMPLE_RATE

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        if self._stop.is_set():  # a second Ctrl-C (both may come through the loop)
            _exit_now(signum, None)
        self.stop()
        _exit_on_next_signal()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        signals = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                signals.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        wake = asyncio.Event()

        def wake_up() -> None:  # from PortAudio's thread
            loop.call_soon_threadsafe(wake.set)

        self.devices.wake = wake_up
        closers: list[Callable[[], None]] = []
        sock: UdpSocket | None = None
        monitor = None if self.options.monitor is None else Monitor(self.options.monitor, self.board)
        try:
            if monitor is not None:
                await monitor.start()
                print(f"nmp-peer jam: {monitor.announcement}", file=sys.stderr, flush=True)
            freeze_heap()  # before the streams start: its full collection would stall their callbacks
            self._open_devices(loop)
            sock = await UdpSocket.bind(self.options.listen)
            freeze_heap()  # the streams' and the socket's objects too: a short collection, the rest is frozen
            tasks = [loop.create_task(self._receive(sock)), loop.create_task(self._status())]
            tasks.append(loop.create_task(self._handshake(sock)))
            if self.devices.opened:
                tasks.append(loop.create_task(self._watch_devices(wake)))
            if monitor is not None:
                tasks.append(loop.create_task(publish_every(self.board, self.snapshot)))
            try:
                tasks.append(loop.create_task(self._capture(sock)))
                tasks.append(loop.create_task(self._playout(closers)))
                await self._wait(tasks)
            except DeviceFailure as exc:
                self.failure = exc
            finally:
                _exit_on_next_signal()  # the jam is ending: a Ctrl-C now exits at once
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if not self._ended:  # stopped while sending: say so, so the peers count no loss
                    for data, addr in self._end_packets():
                        sock.send_nowait(data, addr)
        finally:
            self.devices.close()  # before the engines: the output callback reads from them
            for close in closers:
                close()
            if sock is not None:
                sock.close()
            if monitor is not None:
                await monitor.close()
            for remote in self.remotes:
                remote.engine.close()
            self.conceal_thread.close()
            for sig in signals:
                loop.remove_signal_handler(sig)
        summary = self._totals()
        summary["device_failure"] = None if self.failure is None else str(self.failure)
        if self.devices.close_s is not None:
            summary["device_close_s"] = round(self.devices.close_s, 3)
        summary["send_errors"] = sock.send_errors
        summary["receive_errors"] = sock.receive_errors
        summary["receive_buffer_bytes"] = sock.rcvbuf_bytes
        summary["kernel_drops"] = sock.kernel_drops()
        if self.options.key is None:
            summary["repin_after_s"] = self.options.repin_after_s
        elif self.session is not None and len(self.remotes) == 1:
            out = self.session.outbound
            summary["handshakes"] = out.handshakes
            summary["handshake_ms"] = None if out.last_handshake_s is None else round(1000 * out.last_handshake_s, 2)
            summary["encrypted"] = out.encrypt
        else:
            summary["encrypted"] = self.options.encrypt
        summary["clipped_samples"] = self.mixer.clipped_samples
        if self.output_late_max_s >= 0.0:  # the real-time tick played (a file or no output)
            summary["output_ticks_late"] = self.output_ticks_late
            summary["output_late_max_ms"] = round(1000 * self.output_late_max_s, 2)
        summary["concealer_batched_calls"] = self.conceal_thread.batched_calls
        summary["concealer_shared_rounds"] = self.conceal_thread.shared_rounds
        summary["peers"] = self.peer_summaries()
        return summary

    def peer_summaries(self) -> list[dict[str, Any]]:
        """Per remote: its name, address, counters, gauges (latency, round trip, level) and mix settings."""
        out = []
        for remote, strip in zip(self.remotes, self.mixer.strips, strict=True):
            d = remote.summary()
            d["gain_db"], d["pan"], d["mute"] = strip.gain_db, strip.pan, strip.mute
            out.append(d)
        return out

    def _totals(self) -> dict[str, Any]:
        """The summary's top level: a duo's one stream as ever; a band's counters summed over its
        remotes (the gauges are per remote only, in ``peers``) with this peer's own."""
        if len(self.remotes) == 1:
            return self.stats.to_dict()
        d = self.stats.to_dict()
        per = [r.stats.to_dict() for r in self.remotes]
        own = {"device_", "capture_queue_drops"}
        gauges = {"latency_samples", "target_latency_samples"}  # integers, but no sum means anything
        for key, value in list(d.items()):
            if any(key.startswith(o) for o in own):
                continue
            if key in gauges:
                del d[key]
                continue
            if isinstance(value, int) and not isinstance(value, bool) and all(isinstance(p.get(key), int) for p in per):
                d[key] = value + sum(p[key] for p in per)  # ours: datagrams no remote's address sent
            else:
                del d[key]
        d["remotes"] = len(self.remotes)
        return d

    async def _wait(self, tasks: list[asyncio.Task[None]]) -> None:
        """Until stopped or the duration is over; a task that fails (a device error) ends the jam with its error."""
        loop = asyncio.get_running_loop()
        deadline = None if self.options.duration_s is None else loop.time() + self.options.duration_s
        waiter = loop.create_task(self._stop.wait())
        running = set(tasks)
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait({waiter, *running}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done or waiter in done:
                    return
                for task in done:
                    running.discard(task)
                    task.result()  # re-raises a failure
        finally:
            waiter.cancel()

    async def _receive(self, sock: UdpSocket) -> None:
        """Every datagram the socket has read, per wake-up: under a flood that is hundreds at once."""
        handle = self._handler(sock)
        self._drain = lambda: handle(sock.take_ready())
        while True:
            handle(await sock.receive_batch())

    def _router(self) -> Callable[[bytes, Address], RemoteStream | None]:
        """Which remote a datagram is for: a duo's one; in a band the remote at its address, else
        the one whose stream it carries (a keyed peer that roamed), else the only remote on
        its host (``pin = "host"``, behind a NAT); else none (counted foreign)."""
        remotes = self.remotes
        if len(remotes) == 1:
            only = remotes[0]
            return lambda data, addr: only
        by_addr = {r.addr: r for r in remotes}
        by_host: dict[str, list[RemoteStream]] = {}
        for r in remotes:
            by_host.setdefault(r.addr[0], []).append(r)

        def route(data: bytes, addr: Address) -> RemoteStream | None:
            remote = by_addr.get(addr)
            if remote is not None:
                return remote
            if len(data) >= HEADER_BYTES:
                stream_id = int.from_bytes(data[6:10], "big")
                for r in remotes:
                    if r.gate.pinned_stream == stream_id and r.session is not None:
                        return r
            hosts = by_host.get(addr[0], [])
            if len(hosts) == 1 and self.options.pin == "host":
                return hosts[0]
            return None

        return route

    def _handler(self, sock: UdpSocket) -> Callable[[list[tuple[bytes, Address]]], None]:
        route, now, remotes, stats = self._router(), self.now, self.remotes, self.stats

        def handle(batch: list[tuple[bytes, Address]]) -> None:
            t = time.monotonic()
            for data, addr in batch:
                remote = route(data, addr)
                if remote is None:
                    stats.packets_foreign += 1
                    continue
                gate = remote.gate
                packet = gate.admit(data, addr, t)
                if packet is not None:
                    remote.engine.push(packet, now(), follow=gate.new_stream)
            for remote in remotes:
                outbox = remote.gate.outbox
                if not outbox:
                    continue
                for reply in outbox:  # handshake and probe answers: only ever to that remote's address
                    sock.send_nowait(reply, remote.addr)
                outbox.clear()
                if remote.session is not None and not self._ended:
                    # A restarted peer's HELLO may call for our own new session: open it now,
                    # not at the next poll, so its audio starts a round trip later.
                    for hello in remote.session.outbound.poll(t, self.packetizer.stream_id):
                        sock.send_nowait(hello, remote.addr)

        return handle

    async def _handshake(self, sock: UdpSocket) -> None:
        """Opens (and renews) each remote's session for this peer's stream (HELLO until answered),
        and sends each remote its round-trip PINGs."""
        while not self._ended:  # after our end notices there is nothing more to seal
            t = time.monotonic()
            for remote in self.remotes:
                if remote.session is not None:
                    for hello in remote.session.outbound.poll(t, self.packetizer.stream_id):
                        sock.send_nowait(hello, remote.addr)
                ping = remote.gate.ping(t, self.packetizer.stream_id)
                if ping is not None:
                    sock.send_nowait(ping, remote.addr)
            await asyncio.sleep(0.05)

    async def _send(self, sock: UdpSocket, block: np.ndarray) -> None:
        """One block to every remote (sealed for each under its own session, with a key)."""
        packet = self.packetizer.packetize(block)
        plain = packet.serialize() if self.options.key is None else None
        for remote in self.remotes:
            data = plain if plain is not None else remote.seal(packet)
            if data is None:  # no session yet (or the peer restarted): nobody could open it
                remote.stats.packets_unsent += 1
                continue
            sock.send_nowait(data, remote.addr)
            remote.stats.packets_sent += 1
        self.input_level.update(block)

    def _end_packets(self) -> list[tuple[bytes, Address]]:
        """The end-of-stream notices, for every remote (the first copies first)."""
        self._ended = True
        out = []
        for p in self.packetizer.end_packets():
            for remote in self.remotes:
                data = remote.seal(p)
                if data is not None:
                    out.append((data, remote.addr))
        return out

    def _mix(self, now: float) -> np.ndarray:
        """The output block at ``now``: every remote's stream read at this one clock, mixed."""
        if self._exact and self.mixer.unit(0):  # a duo: its one stream, as it was played
            block = self.remotes[0].engine.next_block(now)
            self.remotes[0].played(block)
            return block
        blocks = []
        for remote in self.remotes:
            block = remote.engine.next_block(now)
            remote.played(block)
            blocks.append(block)
        return self.mixer.mix(blocks)

    def _open_devices(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open and start the sound-card streams (before the socket exists, so nothing piles up).

        Until the stream starts the output callback plays silence, and captured blocks are
        dropped until the sender runs (``_capturing``). Re-blocking, resampling and the
        device clock are the device edge's (``live.devices.DeviceEdge``)."""
        o, channels = self.options, self.packetizer.channels
        wants_input = o.input is not None and self.source is None
        wants_output = o.output is not None and not is_audio_file(o.output)
        if not (wants_input or wants_output):
            return
        deliver = None
        if wants_input:
            self._captured = asyncio.Queue(maxsize=64)
            deliver = self._deliver(loop, self._captured)
        edge = DeviceEdge(
            self.devices,
            o.devices,
            channels,
            lambda t: (t - self._t0) * SAMPLE_RATE,
            out_channels=self.mixer.out_channels,
            latency_stats=[] if len(self.remotes) == 1 else [r.stats for r in self.remotes],
        )
        edge.open(
            o.input if wants_input else None,
            o.output if wants_output else None,
            self._mix if wants_output else None,
            self._skip_stall,
            deliver,
        )

    def _skip_stall(self, now: float) -> int:
        """The output device jumped ahead (an xrun, a stalled server): every remote's stream
        keeps only its newest packets up to its depth (``PlayoutEngine.skip_stall``)."""
        return sum(remote.engine.skip_stall(now) for remote in self.remotes)

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[np.ndarray]
    ) -> Callable[[np.ndarray], None]:
        """Hands each captured block to the sender (called from PortAudio's thread)."""
        stats = self.stats

        def deliver(block: np.ndarray) -> None:
            if not self._capturing:
                return

            def put() -> None:
                if queue.full():  # the sender fell 64 blocks behind: this one is not sent
                    stats.capture_queue_drops += 1
                else:
                    queue.put_nowait(block)

            loop.call_soon_threadsafe(put)

        return deliver

    async def _watch_devices(self, wake: asyncio.Event) -> None:
        """Ends the jam with a DeviceFailure once a stream stopped: woken by its finished callback,
        or seen at a poll (a dead JACK server calls none)."""
        while True:
            failure = self.devices.failure()
            if failure is not None:
                raise DeviceFailure(f"sound device failed: {failure}")
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), POLL_S)
            except TimeoutError:
                pass

    def _heard_by_all(self) -> bool:
        return all(remote.ready for remote in self.remotes)

    async def _capture(self, sock: UdpSocket) -> None:
        loop = asyncio.get_running_loop()
        if self.source is not None:
            # Like JackTrip waiting for its peer: send silence until every remote is heard
            # (and, with a key, our session to it is open), so the file starts when they
            # all listen; then the file, paced by the wall clock.
            source = self.source
            silence = np.zeros((BLOCK_FRAMES, source.shape[1]), np.float32)
            start = loop.time()
            k = 0
            while not self._heard_by_all():
                await sleep_until(loop, start + k * PACKET_S)
                await self._send(sock, silence)
                k += 1
            n_blocks = -(-len(source) // BLOCK_FRAMES)  # the last one padded with silence
            for i in range(n_blocks):
                await sleep_until(loop, start + (k + i) * PACKET_S)
                block = source[i * BLOCK_FRAMES : (i + 1) * BLOCK_FRAMES]
                if len(block) < BLOCK_FRAMES:
                    block = np.concatenate([block, silence[: BLOCK_FRAMES - len(block)]])
                await self._send(sock, block)
            # The file is over: say so, one notice a block apart (the first at once, so a
            # stop in between cannot leave the stream unended).
            ends = self._end_packets()
            per_copy = max(1, len(self.remotes))
            for j in range(0, len(ends), per_copy):
                if j:
                    await sleep_until(loop, start + (k + n_blocks + j // per_copy) * PACKET_S)
                for data, addr in ends[j : j + per_copy]:
                    sock.send_nowait(data, addr)
            return
        if self._captured is None:
            return
        self._capturing = True
        while True:
            await self._send(sock, await self._captured.get())

    async def _playout(self, closers: list[Callable[[], None]]) -> None:
        out = self.options.output
        channels = self.mixer.out_channels
        if out is not None and not is_audio_file(out):
            return  # the output device's callback plays (opened in _open_devices)
        writer = WavWriter(out, channels) if out is not None else None
        if writer is not None:
            closers.append(writer.close)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            due = start + tick * PACKET_S
            await sleep_until(loop, due)
            late = loop.time() - due
            self.output_late_max_s = max(self.output_late_max_s, late)
            self.output_ticks_late += late >= PACKET_S
            if self._drain is not None:  # what arrived while this tick was late
                self._drain()
            block = self._mix(self.now())
            if writer is not None:
                writer.write(block)
            tick += 1

    async def _status(self) -> None:
        if self.options.status is None:
            return
        while True:
            await asyncio.sleep(0.5)
            if len(self.remotes) == 1:
                line = self.stats.status_line()
                rtt = self.stats.rtt_avg_ms
                if rtt is not None:
                    line += f" | rtt {rtt:.1f} ms"
                if self.session is not None and not self.session.outbound.established:
                    line += " | no session yet: is the peer up, with the same key?"
                if self.remotes[0].engine.jitter.ended:
                    line += " | ended"  # the partner's stream was played to its end
            else:
                line = " | ".join(r.status() for r in self.remotes) + self.stats.device_status()
                waiting = [r.name for r in self.remotes if r.session is not None and not r.session.outbound.established]
                if waiting:
                    line += f" | no session yet with {', '.join(waiting)}"
            self.options.status(line)

    def snapshot(self) -> dict[str, Any]:
        """What the monitor shows now (``receiver.snapshot``): this peer, and each remote by
        name with its mix settings. Call it on the event loop's thread; it takes no lock the
        audio callback waits on."""
        me = self_snapshot(socket.gethostname(), self.stats, self.input_level)
        me["packets_sent"] = sum(r.stats.packets_sent for r in self.remotes)
        me["clipped_samples"] = self.mixer.clipped_samples
        peers = []
        for remote, strip in zip(self.remotes, self.mixer.strips, strict=True):
            entry = peer_snapshot(
                remote.name, str(remote.spec.endpoint), remote.stats, remote.level, remote.stats.rtt_ms
            )
            entry.update(gain_db=strip.gain_db, pan=strip.pan, mute=strip.mute)
            peers.append(entry)
        return make_snapshot(time.monotonic() - self._t0, me, peers)


def _exit_on_next_signal() -> None:
    """From now on SIGINT and SIGTERM end the process at once (a second Ctrl-C, or one while
    the jam shuts down); only the main thread can set that."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _exit_now)
        except ValueError:  # not the main thread
            return


def _exit_now(signum: int, _frame: object) -> None:
    os._exit(128 + signum)
