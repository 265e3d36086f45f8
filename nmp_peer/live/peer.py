"""One end of a jam: capture → packets → UDP, and UDP → playout → output, at the same time.

The capture side is a WAV file read at real time or a sound card's input stream; the
output side is a sound card's output stream (its callback pulls one ready block from
the playout engine and never waits) or a WAV file written on a real-time tick.

Sound-card streams are opened and started before the socket is bound: PortAudio takes
60-140 ms to open a stream under JACK, and the peer's packets must not pile up meanwhile.
A stream that stops during the jam ends it with a ``DeviceFailure`` (``live.devices``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, PACKET_S, SAMPLE_RATE
from nmp_peer.audio_io import AudioFileError, WavWriter, read_audio
from nmp_peer.conceal import make_concealer
from nmp_peer.live.devices import POLL_S, DeviceEdge, DeviceFailure, DeviceSettings, DeviceStreams
from nmp_peer.live.transport import Endpoint, UdpSocket, freeze_heap, sleep_until
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.session import Session
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import REPIN_AFTER_S, PinMode, ReceiveGate
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine


def is_audio_file(spec: str | None) -> bool:
    return spec is not None and Path(spec).suffix.lower() in (".wav", ".flac", ".ogg")


@dataclass
class JamOptions:
    listen: Endpoint
    peer: Endpoint
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


class Peer:
    def __init__(self, options: JamOptions) -> None:
        self.options = options
        channels = options.playout.channels
        self.engine = PlayoutEngine(make_concealer(options.concealer), options.playout, threaded=True)
        self.packetizer = Packetizer(options.codec or Pcm16Codec(), channels)
        self.session = Session(options.key, encrypt=options.encrypt) if options.key else None
        self._t0 = time.monotonic()
        self._stop = asyncio.Event()
        self._ended = False
        """This peer's stream has been ended with end-of-stream notices."""
        self._drain: Callable[[], None] | None = None
        """Takes in the datagrams already here (set once receiving runs)."""
        self.devices = DeviceStreams(self.engine.stats)
        self._captured: asyncio.Queue[np.ndarray] | None = None
        """Blocks from the input device, for the sender (None without one)."""
        self._capturing = False
        """The sender takes captured blocks (before, the input callback drops them: no stream yet)."""
        self.failure: DeviceFailure | None = None
        """Why the jam ended early: a device stream stopped (the summary says it too)."""
        self.source: np.ndarray | None = None
        if options.input is not None and is_audio_file(options.input):
            self.source, _ = read_audio(options.input, channels=channels)
        elif options.input is not None and Path(options.input).suffix:
            raise AudioFileError(f"cannot read audio file {options.input}: unsupported extension")

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
        peer_addr = self.options.peer.resolve()
        closers: list[Callable[[], None]] = []
        sock: UdpSocket | None = None
        try:
            self._open_devices(loop)
            sock = await UdpSocket.bind(self.options.listen)
            freeze_heap()
            o = self.options
            gate = ReceiveGate(
                self.engine.stats, peer=peer_addr, session=self.session, pin=o.pin, repin_after_s=o.repin_after_s
            )
            tasks = [loop.create_task(self._receive(sock, gate, peer_addr)), loop.create_task(self._status())]
            if self.session is not None:
                tasks.append(loop.create_task(self._handshake(sock, peer_addr)))
            if self.devices.opened:
                tasks.append(loop.create_task(self._watch_devices(wake)))
            try:
                tasks.append(loop.create_task(self._capture(sock, peer_addr)))
                tasks.append(loop.create_task(self._playout(closers)))
                await self._wait(tasks)
            except DeviceFailure as exc:
                self.failure = exc
            finally:
                _exit_on_next_signal()  # the jam is ending: a Ctrl-C now exits at once
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if not self._ended:  # stopped while sending: say so, so the peer counts no loss
                    for data in self._end_packets():
                        sock.send_nowait(data, peer_addr)
        finally:
            self.devices.close()  # before the engine: the output callback reads from it
            for close in closers:
                close()
            if sock is not None:
                sock.close()
            self.engine.close()
            for sig in signals:
                loop.remove_signal_handler(sig)
        summary = self.engine.stats.to_dict()
        summary["device_failure"] = None if self.failure is None else str(self.failure)
        if self.devices.close_s is not None:
            summary["device_close_s"] = round(self.devices.close_s, 3)
        summary["send_errors"] = sock.send_errors
        summary["receive_errors"] = sock.receive_errors
        summary["receive_buffer_bytes"] = sock.rcvbuf_bytes
        summary["kernel_drops"] = sock.kernel_drops()
        if self.session is None:
            summary["repin_after_s"] = self.options.repin_after_s
        else:
            out = self.session.outbound
            summary["handshakes"] = out.handshakes
            summary["handshake_ms"] = None if out.last_handshake_s is None else round(1000 * out.last_handshake_s, 2)
            summary["encrypted"] = out.encrypt
        return summary

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

    async def _receive(self, sock: UdpSocket, gate: ReceiveGate, peer_addr: tuple[str, int]) -> None:
        """Every datagram the socket has read, per wake-up: under a flood that is hundreds at once."""
        handle = self._handler(gate, sock, peer_addr)
        self._drain = lambda: handle(sock.take_ready())
        while True:
            handle(await sock.receive_batch())

    def _handler(
        self, gate: ReceiveGate, sock: UdpSocket, peer_addr: tuple[str, int]
    ) -> Callable[[list[tuple[bytes, tuple[str, int]]]], None]:
        admit, push, now, outbox = gate.admit, self.engine.push, self.now, gate.outbox

        def handle(batch: list[tuple[bytes, tuple[str, int]]]) -> None:
            t = time.monotonic()
            for data, addr in batch:
                packet = admit(data, addr, t)
                if packet is not None:
                    push(packet, now(), follow=gate.new_stream)
            if outbox:  # handshake answers: only ever to the configured peer
                for reply in outbox:
                    sock.send_nowait(reply, peer_addr)
                outbox.clear()
                if self.session is not None and not self._ended:
                    # A restarted peer's HELLO may call for our own new session: open it now,
                    # not at the next poll, so its audio starts a round trip later.
                    for hello in self.session.outbound.poll(t, self.packetizer.stream_id):
                        sock.send_nowait(hello, peer_addr)

        return handle

    async def _handshake(self, sock: UdpSocket, peer_addr: tuple[str, int]) -> None:
        """Opens (and renews) the session for this peer's stream: HELLO until answered."""
        assert self.session is not None
        outbound = self.session.outbound
        while not self._ended:  # after our end notices there is nothing more to seal
            for hello in outbound.poll(time.monotonic(), self.packetizer.stream_id):
                sock.send_nowait(hello, peer_addr)
            await asyncio.sleep(0.05)

    def _seal(self, packet: Packet) -> bytes | None:
        if self.session is None:
            return packet.serialize()
        sealed = self.session.outbound.seal(packet)
        return None if sealed is None else sealed.serialize()

    async def _send(self, sock: UdpSocket, addr: tuple[str, int], block: np.ndarray) -> None:
        data = self._seal(self.packetizer.packetize(block))
        if data is None:  # no session yet (or the peer restarted): nobody could open it
            self.engine.stats.packets_unsent += 1
            return
        sock.send_nowait(data, addr)
        self.engine.stats.packets_sent += 1

    def _end_packets(self) -> list[bytes]:
        self._ended = True
        sealed = (self._seal(p) for p in self.packetizer.end_packets())
        return [d for d in sealed if d is not None]

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
        edge = DeviceEdge(self.devices, o.devices, channels, lambda t: (t - self._t0) * SAMPLE_RATE)
        edge.open(o.input if wants_input else None, o.output if wants_output else None, self.engine, deliver)

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[np.ndarray]
    ) -> Callable[[np.ndarray], None]:
        """Hands each captured block to the sender (called from PortAudio's thread)."""
        stats = self.engine.stats

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

    async def _capture(self, sock: UdpSocket, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        if self.source is not None:
            # Like JackTrip waiting for its peer: send silence until the peer is heard (and,
            # with a key, our session is open), so the file starts when someone listens;
            # then the file, paced by the wall clock.
            source = self.source
            silence = np.zeros((BLOCK_FRAMES, source.shape[1]), np.float32)
            start = loop.time()
            k = 0
            while not self.engine.stats.packets_received or (self.session and not self.session.outbound.established):
                await sleep_until(loop, start + k * PACKET_S)
                await self._send(sock, addr, silence)
                k += 1
            n_blocks = -(-len(source) // BLOCK_FRAMES)  # the last one padded with silence
            for i in range(n_blocks):
                await sleep_until(loop, start + (k + i) * PACKET_S)
                block = source[i * BLOCK_FRAMES : (i + 1) * BLOCK_FRAMES]
                if len(block) < BLOCK_FRAMES:
                    block = np.concatenate([block, silence[: BLOCK_FRAMES - len(block)]])
                await self._send(sock, addr, block)
            # The file is over: say so, one notice a block apart (the first at once, so a
            # stop in between cannot leave the stream unended).
            for j, data in enumerate(self._end_packets()):
                if j:
                    await sleep_until(loop, start + (k + n_blocks + j) * PACKET_S)
                sock.send_nowait(data, addr)
            return
        if self._captured is None:
            return
        self._capturing = True
        while True:
            await self._send(sock, addr, await self._captured.get())

    async def _playout(self, closers: list[Callable[[], None]]) -> None:
        out = self.options.output
        channels = self.packetizer.channels
        if out is not None and not is_audio_file(out):
            return  # the output device's callback plays (opened in _open_devices)
        writer = WavWriter(out, channels) if out is not None else None
        if writer is not None:
            closers.append(writer.close)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            await sleep_until(loop, start + tick * PACKET_S)
            if self._drain is not None:  # what arrived while this tick was late
                self._drain()
            block = self.engine.next_block(self.now())
            if writer is not None:
                writer.write(block)
            tick += 1

    async def _status(self) -> None:
        if self.options.status is None:
            return
        while True:
            await asyncio.sleep(0.5)
            line = self.engine.stats.status_line()
            if self.session is not None and not self.session.outbound.established:
                line += " | no session yet: is the peer up, with the same key?"
            self.options.status(line)


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
