"""The playout engine: one 512-sample block per output-clock tick, never waiting.

Data flow inside: packets → :class:`JitterBuffer` → *stream* (decoded packets, or
concealment for missing slots, in sequence order, in the sender's clock) → fractional
reader (the receiver's clock) → output block.

Time is given, not taken: ``push(packet, now)`` and ``next_block(now)`` receive the
receiver clock in samples, so a sound card, a real-time timer or a virtual clock
driven faster than real time all run the same code.

Concealment is causal: a missing slot is filled from the stream before it. The engine
asks its worker for it one block ahead of the deadline, as soon as that history is
known; at the deadline it takes what is ready, or a cheap fallback (and counts a miss).
Long bursts fade to silence; the first packet after a gap is crossfaded in from the
concealer's prediction of it.

Counting lost, late and paused slots is the loss book's (:mod:`nmp_peer.receiver.accounting`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal.base import Concealer, check_prediction, final_stage
from nmp_peer.conceal.simple import RepeatConcealer, ZerosConcealer
from nmp_peer.conceal.worker import InlineWorker, ThreadedWorker
from nmp_peer.proto.codec import Decoder, DecoderUnavailable, Pcm16Decoder, make_decoder
from nmp_peer.proto.wire import Packet, PayloadType, WireError
from nmp_peer.receiver.accounting import LossBook
from nmp_peer.receiver.drift import LOOKAHEAD, read_block
from nmp_peer.receiver.fifo import StreamFifo, raised_cosine
from nmp_peer.receiver.jitter import Arrival, JitterBuffer
from nmp_peer.receiver.latency import Action, LatencyController, LatencyPolicy
from nmp_peer.receiver.stats import Stats


@dataclass(frozen=True)
class PlayoutConfig:
    channels: int = 1
    latency: LatencyPolicy = field(default_factory=LatencyPolicy)
    fade_after_ms: float | None = None
    """Concealment of a burst starts fading to silence after this long; None: the
    concealer's own policy (``Concealer.fade_after_ms``)."""
    fade_ms: float | None = None
    """Length of that fade; None: the concealer's own (``Concealer.fade_ms``)."""
    decode_ahead_blocks: int = 1
    """Packets already in the buffer are decoded up to this many blocks before the reader
    needs them, so a gap right after them is seen, and its concealment started, that much
    sooner: the worker gets up to 1 + this many blocks instead of one. Missing slots are
    still declared lost at their own deadline, so this changes no latency and no count."""
    codec_fec: bool = False
    """Opus streams: recover a lost frame from the next packet's in-band FEC when that
    packet is already here (the sender must send FEC), else Opus's own PLC."""
    chain_bursts: bool = True
    """The worker conceals the slot after each concealed one ahead of time, as if its packet
    were lost too, and the engine adopts that work when it is (``nmp_peer.conceal.worker``)."""


class PlayoutEngine:
    """Jitter buffer, concealment and drift-corrected reading for one incoming stream."""

    def __init__(
        self,
        concealer: Concealer,
        config: PlayoutConfig | None = None,
        *,
        threaded: bool = False,
        stats: Stats | None = None,
        worker: ThreadedWorker | None = None,
    ) -> None:
        """``worker``: a threaded worker of a shared thread (a band's streams share one,
        ``ConcealThread.lane``); else one of its own (``threaded``) or inline."""
        self.config = config or PlayoutConfig()
        self.concealer = concealer
        self.stats = stats or Stats()
        self.channels = self.config.channels
        self.jitter = JitterBuffer()
        self.controller = LatencyController(self.config.latency)
        self.fifo = StreamFifo(self.channels)
        self.worker: ThreadedWorker | InlineWorker
        if worker is not None:
            self.worker = worker
        else:
            self.worker = ThreadedWorker(concealer, self.config.chain_bursts) if threaded else InlineWorker(concealer)
        self.fallback: Concealer = ZerosConcealer() if concealer.name == "zeros" else RepeatConcealer()
        self._decoders: dict[PayloadType, Decoder] = {}
        self._decoder: Decoder | None = None
        """The decoder of the slots played last (a missing slot goes to it too)."""
        self._codec_gap = False
        self._lock = threading.Lock()
        self._read_pos = 0.0
        self._tick_now = 0.0
        self._ticked = False
        self._ratio = 1.0
        self._started = False
        self._reading = False
        """The first block of the stream has been read (until then packets may pile up)."""
        self._early_refs: dict[int, float] = {}
        """Before reading began: each stored packet's slack reference, by unwrapped sequence number."""
        self._burst = 0
        self._prediction: np.ndarray | None = None
        self._requested: int | None = None
        self.book = LossBook(self.stats)
        self._pending_insert = False
        self._splice: np.ndarray | None = None
        self._last_transit: float | None = None
        self._unfaded: list[np.ndarray] = []
        """This burst's concealed blocks before the burst fade: what the next concealment
        continues (the faded ones would step down at every seam)."""
        context = max(self.concealer.context_samples, self.fallback.context_samples)
        self._unfaded_blocks = -(-context // BLOCK_FRAMES)
        self.fade_after_ms = concealer.fade_after_ms if self.config.fade_after_ms is None else self.config.fade_after_ms
        self.fade_ms = concealer.fade_ms if self.config.fade_ms is None else self.config.fade_ms
        """The long-burst policy in force: the config's where it sets one, else the concealer's."""
        self._fade_start = self.fade_after_ms * SAMPLE_RATE / 1000.0
        self._fade_len = max(1.0, self.fade_ms * SAMPLE_RATE / 1000.0)
        self._recovery = raised_cosine(concealer.recovery_fade_samples)
        self._splice_fade = raised_cosine(128)
        self.samples_out = 0
        """Output samples produced so far."""
        self.first_slot: tuple[int, int] | None = None
        """(packet timestamp, output sample index) of the first slot played: the exact alignment."""
        self._start_out = 0
        self.timeline: list[tuple[int, float, float, int]] | None = None
        """When enabled (a list): per tick (output sample, depth, target depth, event) with
        event 0 = played, 1 = concealed, 2 = inserted, 3 = dropped."""
        self.slot_log: list[tuple[int, bool]] | None = None
        """When enabled (a list): (unwrapped sequence number, concealed) of every slot played."""

    # ------------------------------------------------------------------ network side
    def push(self, packet: Packet, now: float, *, follow: bool = False) -> Arrival | None:
        """Take one packet that arrived at receiver time ``now`` (samples). Returns its fate.
        ``follow``: the first packet of a stream the receive gate now follows."""
        s = self.stats
        if packet.end:
            s.end_notices += 1
            with self._lock:
                fate = self.jitter.push(packet)
                if self.jitter.end_seq is not None:
                    self.book.ended(self.jitter.end_seq)
            return fate
        if packet.channels != self.channels or self._decoder_for(packet) is None:
            s.packets_malformed += 1
            return None
        with self._lock:
            ext = self.jitter.unwrap(packet.seq)
            fate = self.jitter.push(packet, follow=follow)
            if not self._started and self.jitter.started:
                self._start(now)
            if fate is Arrival.RESYNC:
                self._resync(now)
            if fate in (Arrival.ACCEPTED, Arrival.REORDERED, Arrival.RESYNC, Arrival.LATE):
                s.packets_received += 1
                self._observe(packet, now)
            if fate in (Arrival.ACCEPTED, Arrival.REORDERED):
                self.book.arrived(ext)
                if ext == self._requested:  # the concealment asked for it is not needed
                    self.worker.withdraw(ext)
                    self._requested = None
                    if isinstance(self.worker, ThreadedWorker):
                        self.stats.concealer_spared = self.worker.spared
            if fate is Arrival.REORDERED:
                s.packets_reordered += 1
            elif fate is Arrival.DUPLICATE:
                s.packets_duplicate += 1
            elif fate is Arrival.LATE:
                self.book.late(ext)
            elif fate is Arrival.OUT_OF_WINDOW:
                s.packets_foreign += 1
            elif fate is Arrival.RESYNC:
                s.resyncs += 1
        return fate

    def push_datagram(self, data: bytes, now: float) -> Arrival | None:
        """Parse and take a datagram; malformed ones are counted and dropped."""
        try:
            packet = Packet.parse(data)
        except WireError:
            self.stats.packets_malformed += 1
            return None
        return self.push(packet, now)

    def _decoder_for(self, packet: Packet) -> Decoder | None:
        """This stream's decoder of the packet's payload type, made at its first packet;
        None when the packet is not one this peer can decode (counted malformed)."""
        decoder = self._decoders.get(packet.payload_type)
        if decoder is None:
            try:
                decoder = self._decoders[packet.payload_type] = make_decoder(
                    packet.payload_type, self.channels, fec=self.config.codec_fec
                )
            except DecoderUnavailable as exc:
                self.stats.extra[f"{packet.payload_type.name.lower()}_unavailable"] = str(exc)
                return None
        return decoder if decoder.accepts(packet) else None

    def _observe(self, packet: Packet, now: float) -> None:
        ext = self.jitter.unwrap(packet.seq)
        position = self.fifo.end + (ext - self.jitter.next_seq) * BLOCK_FRAMES
        self.controller.observe(position - now)
        if not self._reading:
            self._early_refs[ext] = position - now
        transit = now - packet.timestamp
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < SAMPLE_RATE:  # ignore timestamp jumps (restart, pause)
                self.stats.jitter_ms += (1000.0 * d / SAMPLE_RATE - self.stats.jitter_ms) / 16.0
        self._last_transit = transit

    def _pause(self) -> None:
        """Nothing arrives and the concealment has faded out: let the slots pass as silence."""
        self.book.pause(self.jitter.next_seq)
        self.worker.cancel()
        self._requested = None

    def _start(self, now: float) -> None:
        self._started = True
        prefill = self.controller.start_latency_samples()
        if self.config.latency.mode == "adaptive":
            # The first block is read at the next tick, up to a block from now: count that
            # wait into the start depth, so the slack the controller then measures is the
            # start depth whatever the phase of arrivals and ticks (a fixed depth adds it).
            since_tick = min(max(now - self._tick_now, 0.0), BLOCK_FRAMES) if self._ticked else BLOCK_FRAMES
            prefill -= BLOCK_FRAMES - int(since_tick)
        self.fifo.append(np.zeros((prefill, self.channels), np.float32))
        self._start_out = self.samples_out

    def _skip_backlog(self, offset: float) -> None:
        """Start at the start depth, not deeper: skip the packets that piled up before the first read.

        Packets that arrive while nothing reads the stream (the output device is still
        opening, the receive task was late) would each add a block of latency, which a clean
        stream could only shed by reading fast, interpolated, for many seconds. So at the
        first read the oldest buffered packets are skipped until the newest one's slack is
        the start depth, to within half the dead band: what a stream that arrived evenly
        would have had. Each skipped packet still goes through its decoder (codec state).
        """
        jb, p = self.jitter, self.config.latency
        n = 0
        while jb.has(jb.next_seq + n):
            n += 1
        newest = jb.next_seq + n - 1
        if n < 2 or newest not in self._early_refs:
            return
        slack = self._early_refs[newest] + offset
        excess = slack - self.controller.start_latency_samples() + p.deadband_samples / 2
        skip = min(n - 1, math.floor(excess / BLOCK_FRAMES))
        if skip <= 0:
            return
        for _ in range(skip):
            seq, packet = jb.pop()
            assert packet is not None
            self._decoder = self._decoders[packet.payload_type]
            self._decoder.decode(packet, jb.peek(seq + 1))
        self.stats.packets_skipped += skip
        # The slack the skipped packets had is no evidence about the stream from here on.
        self.controller.reset()
        for ext, ref in sorted(self._early_refs.items()):
            if ext >= jb.next_seq:
                self.controller.observe(ref - skip * BLOCK_FRAMES)

    def skip_stall(self, now: float) -> int:
        """The output clock jumped ahead to ``now`` (a device stall or xrun: the reader fell
        behind the arrivals by the blocks it did not read): skip the oldest buffered packets
        for those blocks, so that the newest ones play with the depth the stream had before,
        as at the first read. Returns how many were skipped (counted in ``packets_skipped``)."""
        with self._lock:
            if not self._reading or self._burst or self.jitter.ended or not self._ticked:
                return 0
            jb = self.jitter
            n = 0
            while jb.has(jb.next_seq + n):
                n += 1
            behind = (now - self._tick_now) / self._ratio - BLOCK_FRAMES
            skip = min(n - 1, math.floor(behind / BLOCK_FRAMES + 0.5))
            if skip <= 0:
                return 0
            self.worker.cancel()
            self._requested = None
            for _ in range(skip):
                seq, packet = jb.pop()
                assert packet is not None
                self._decoder = self._decoders[packet.payload_type]
                block, _ = self._decoder.decode(packet, jb.peek(seq + 1))
                self._splice = block  # the next block is crossfaded in from the last one skipped
            self.controller.shift(-skip * BLOCK_FRAMES)
            self.stats.packets_skipped += skip
            return skip

    def _resync(self, now: float) -> None:
        """Follow a restarted or jumped stream: fade out what was playing, restart at the start depth."""
        self.controller.reset()
        self.worker.cancel()
        self._requested = None
        self.book.reset()
        read_now = self._read_pos + (now - self._tick_now) * self._ratio
        pad = int(read_now + self.controller.start_latency_samples() - self.fifo.end)
        if pad > 0:
            history = self.fifo.tail(self.fallback.context_samples)
            tail = np.zeros((pad, self.channels), np.float32)
            n = min(pad, BLOCK_FRAMES)
            tail[:n] = self.fallback.conceal(history, 0)[:n] * raised_cosine(n)[::-1]
            self.fifo.append(tail)
        self._burst = 1
        self._prediction = None
        self._unfaded.clear()
        self._last_transit = None

    # ------------------------------------------------------------------ clock side
    def next_block(self, now: float) -> np.ndarray:
        """The output block for the tick at receiver time ``now`` (samples). Never blocks for long."""
        with self._lock:
            out = self._next_block(now)
        self.samples_out += BLOCK_FRAMES
        return out

    def _next_block(self, now: float) -> np.ndarray:
        self._tick_now = now
        self._ticked = True
        s = self.stats
        if not self._started:
            return np.zeros((BLOCK_FRAMES, self.channels), np.float32)
        if not self._reading:
            self._skip_backlog(now - self._read_pos)
            self._reading = True
            self._early_refs.clear()
        action = self.controller.decide(now - self._read_pos)
        if self.book.paused or self.jitter.ended:
            action = Action()  # silence: nothing to grow, shrink or correct
        event = 0
        if action.insert:
            self._pending_insert = True
        nxt = self.jitter.next_seq
        if action.drop and self._burst == 0 and self.jitter.has(nxt) and self.jitter.has(nxt + 1):
            self._drop_slot()
            event = 3
        ratio = action.ratio
        land: int | None = None
        fractional = self._read_pos != math.floor(self._read_pos)
        if ratio == 1.0 and fractional:
            # A correction just ended between samples: land this block on a whole sample,
            # so that reading is an exact copy again (at most 1/1024 off 1: ~980 ppm).
            land = round(self._read_pos) + BLOCK_FRAMES
            ratio = (land - self._read_pos) / BLOCK_FRAMES
        need = math.ceil(self._read_pos + ratio * (BLOCK_FRAMES - 1)) + LOOKAHEAD + 1
        while self.fifo.end < need:
            if self._pending_insert:
                self._insert_block()
                event = 2
            else:
                event = max(event, self._append_slot())
        ahead = need + self.config.decode_ahead_blocks * BLOCK_FRAMES
        while self.fifo.end < ahead and not self._pending_insert and self.jitter.has(self.jitter.next_seq):
            self._append_slot()
        base = math.floor(self._read_pos) - LOOKAHEAD
        source = self.fifo.view(base, need)
        out = read_block(source, self._read_pos - base, ratio, BLOCK_FRAMES)
        self._read_pos = float(land) if land is not None else self._read_pos + ratio * BLOCK_FRAMES
        self._ratio = ratio
        s.blocks_played += 1
        s.blocks_resampled += ratio != 1.0 or fractional
        s.ratio_ppm = (ratio - 1.0) * 1e6
        depth = (self.fifo.end - self._read_pos) / BLOCK_FRAMES + self.jitter.depth()
        s.buffer_depth_packets = depth
        s.target_depth_packets = self.controller.target_samples / BLOCK_FRAMES
        if not (self.book.paused or self.jitter.ended):
            # The measured depth includes the tick's own timing (``now``); once the stream
            # ended or paused nothing arrives to measure: its last value stands.
            s.target_latency_samples = int(self.controller.target_samples)
            measured = self.controller.median_slack_samples
            s.latency_samples = int(self.controller.target_samples if measured is None else measured)
        if self.timeline is not None:
            self.timeline.append((self.samples_out, depth, s.target_depth_packets, event))
        return out

    def _append_slot(self) -> int:
        if self.jitter.ended:
            return self._append_idle()
        if self.book.paused and not self.jitter.has(self.jitter.next_seq):
            seq, _ = self.jitter.pop()
            self.book.passed_paused(seq, self.jitter.end_seq)
            return self._append_idle()
        self.book.paused = False
        seq, packet = self.jitter.pop()
        if self.slot_log is not None:
            self.slot_log.append((seq, packet is None))
        dry = packet is None and self.jitter.depth() == 0
        if packet is None:
            self.book.missing(seq, dry=dry, highest=self.jitter.highest, end=self.jitter.end_seq)
        else:
            self._decoder = self._decoders[packet.payload_type]
            if self.first_slot is None:
                self.first_slot = (packet.timestamp, self._start_out + self.fifo.end)
        event = self._append_decoded(seq, packet)
        self._request_next()
        if dry and self._faded_out():
            self._pause()
        return event

    def _append_idle(self) -> int:
        self.fifo.append(np.zeros((BLOCK_FRAMES, self.channels), np.float32))
        self.stats.blocks_idle += 1
        return 0

    def _append_real(self, block: np.ndarray) -> None:
        if self._requested is not None:  # the packet came after all: that concealment is stale
            self.worker.cancel()
            self._requested = None
        if self._splice is not None:
            n = len(self._splice_fade)
            block = block.copy()
            block[:n] = self._splice[:n] + (block[:n] - self._splice[:n]) * self._splice_fade
            self._splice = None
        if self._burst > 0 and self._codec_gap:
            # The codec joins its own concealment; only where the burst fade attenuated
            # that concealment does the real audio fade back in, from the level it reached.
            level = float(self._gain(self._burst * BLOCK_FRAMES, 1)[0, 0])
            if level < 1.0:
                block = block.copy()
                n = len(self._recovery)
                block[:n] *= level + (1.0 - level) * self._recovery
            self._burst, self._codec_gap = 0, False
            self._unfaded.clear()
        if self._burst > 0:
            block = block.copy()
            n = len(self._recovery)
            if self._prediction is not None and len(self._prediction) >= BLOCK_FRAMES + n:
                tail = self._prediction[BLOCK_FRAMES : BLOCK_FRAMES + n]
            else:
                tail = np.zeros((n, self.channels), np.float32)
            block[:n] = tail + (block[:n] - tail) * self._recovery
            self._burst = 0
            self._prediction = None
            self._unfaded.clear()
        self.fifo.append(block)

    def _append_decoded(self, seq: int, packet: Packet | None) -> int:
        """One slot through the stream's decoder, and the concealer where it has nothing.

        A codec with its own concealment (Opus) makes a block for a missing slot too, and
        its synthesized audio comes out in the blocks that follow (its delay). With the
        codec's concealers (``codec_native``) those blocks play as decoded, faded like any
        burst; with any other concealer each block holding synthesized audio is replaced
        by that concealer's, so it covers the whole gap.
        """
        decoder = self._decoder
        following = self.jitter.peek(seq + 1)
        block, synthetic = decoder.decode(packet, following) if decoder is not None else (None, True)
        if not synthetic:
            assert block is not None
            self._append_real(block)
            return 0
        if block is not None and self.concealer.codec_native:
            gain = self._gain(self._burst * BLOCK_FRAMES, BLOCK_FRAMES)
            self.fifo.append(block * gain)
            self._burst, self._prediction = self._burst + 1, None
            self._codec_gap = True
            self._unfaded.clear()  # the codec's own audio: not ours to continue
        else:
            self._append_concealed(seq, count_miss=True)
        return 1

    def _gain(self, start: int, length: int) -> np.ndarray:
        t = np.arange(start, start + length, dtype=np.float32)
        return np.clip(1.0 - (t - self._fade_start) / self._fade_len, 0.0, 1.0)[:, None]

    def _faded_out(self) -> bool:
        return self._burst * BLOCK_FRAMES >= self._fade_start + self._fade_len

    def _append_concealed(self, key: int | None, *, count_miss: bool) -> None:
        """Append one concealed block: the worker's result for ``key`` if ready, else a fallback."""
        offset = self._burst * BLOCK_FRAMES
        prediction: np.ndarray | None
        if self._faded_out():
            prediction = np.zeros((BLOCK_FRAMES, self.channels), np.float32)
        else:
            taken = self.worker.take(key) if key is not None and key == self._requested else None
            if isinstance(self.worker, ThreadedWorker):
                self.stats.concealer_errors = self.worker.errors
            prediction = taken.result if taken is not None else None
            if taken is not None and prediction is not None and not taken.complete:
                self.stats.concealer_partial += 1
            if prediction is None and isinstance(self.worker, InlineWorker):
                prediction = self._conceal_inline(self._history(self.concealer.context_samples))
            elif prediction is None:
                self.stats.concealer_misses += int(count_miss)
                prediction = self.fallback.conceal(self._history(self.fallback.context_samples), self._burst)
            prediction = check_prediction(prediction, len(prediction), self.channels)
            self._unfaded.append(prediction[:BLOCK_FRAMES].copy())
            if len(self._unfaded) > self._unfaded_blocks:
                del self._unfaded[0]
            prediction = prediction * self._gain(offset, len(prediction))
        self._requested = None
        self._prediction = prediction
        self.fifo.append(prediction[:BLOCK_FRAMES])
        self._burst += 1

    def _history(self, samples: int) -> np.ndarray:
        """The last ``samples`` of the stream as a concealer must see them: inside a burst,
        its concealment as predicted, before the burst fade scaled it."""
        tail = self.fifo.tail(samples)
        if self._unfaded:
            unfaded = np.concatenate(self._unfaded)[-samples:]
            tail[len(tail) - len(unfaded) :] = unfaded
        return tail

    def _conceal_inline(self, history: np.ndarray) -> np.ndarray:
        return final_stage(self.concealer.stages(history, self._burst))

    def _request_next(self) -> None:
        """Start concealing the next slot now, if its packet is not here yet: one block ahead
        of its deadline, or more when the slot before it was decoded ahead."""
        nxt = self.jitter.next_seq
        decoder = self._decoder
        native = decoder is not None and not isinstance(decoder, Pcm16Decoder)
        if self._faded_out() or self.book.paused or self.jitter.ended or (self.concealer.codec_native and native):
            return
        if self.jitter.has(nxt) and (decoder is None or not decoder.synthetic_pending()):
            return
        self.worker.request(nxt, self._history(self.concealer.context_samples), self._burst)
        self._requested = nxt
        if isinstance(self.worker, ThreadedWorker):
            self.stats.concealer_chained = self.worker.chained
            self.stats.concealer_held_back = self.worker.held_back
            self.stats.concealer_spared = self.worker.spared

    def _insert_block(self) -> None:
        """Grow the buffer by one concealed block between two slots.

        When the next packet is missing, the concealment already under way for it has
        exactly the right history and becomes the inserted block.
        """
        self._pending_insert = False
        current = self._requested if self._requested == self.jitter.next_seq else None
        self._append_concealed(current, count_miss=False)
        self.controller.shift(BLOCK_FRAMES)
        self.stats.blocks_inserted += 1
        self._request_next()

    def _drop_slot(self) -> None:
        """Shrink the buffer by one slot; the next block is spliced in with a short crossfade."""
        seq, packet = self.jitter.pop()
        assert packet is not None
        # Through the stream's decoder like any slot: a codec with state (Opus) must see
        # every frame, or it would conceal the dropped ones and the buffer never shrink.
        self._decoder = self._decoders[packet.payload_type]
        block, _ = self._decoder.decode(packet, self.jitter.peek(seq + 1))
        assert block is not None
        self._splice = block
        self.controller.shift(-BLOCK_FRAMES)
        self.stats.blocks_dropped += 1
        self._requested = None
        self.worker.cancel()
        self._request_next()

    def close(self) -> None:
        self.worker.close()
