"""Counters and gauges of one peer, as the status line and the JSON summary show them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE


@dataclass
class Stats:
    packets_sent: int = 0
    packets_unsent: int = 0
    """Keyed: blocks captured before a session was open for them (the first handshake)."""
    packets_received: int = 0
    """Distinct packets that arrived, in time or late."""
    packets_lost: int = 0
    """Slots concealed whose packet never arrived (late arrivals are moved to ``packets_late``)."""
    packets_late: int = 0
    packets_duplicate: int = 0
    packets_reordered: int = 0
    packets_malformed: int = 0
    packets_foreign: int = 0
    """Packets from an address other than the pinned peer's, or from another stream or far
    outside the window and not (yet) followed."""
    packets_unauthenticated: int = 0
    packets_replayed: int = 0
    packets_rate_limited: int = 0
    packets_oversized: int = 0
    sessions: int = 0
    """Keyed: sessions the peer opened with us (its first packet under a new handshake's key)."""
    handshake_messages: int = 0
    """Keyed: authenticated handshake messages received (HELLO and WELCOME)."""
    handshakes_unkeyed: int = 0
    """Handshake messages received without a key of our own: the peer uses a key, this one does not."""
    repins: int = 0
    """Keyless: times the receiver followed a new stream or source after the pinned one ended or fell silent."""
    pinned: str = "-"
    """The address whose stream is followed (keyed: of the last authenticated packet)."""
    packets_concealed: int = 0
    concealer_misses: int = 0
    """Concealments not ready at their deadline: a cheaper fallback block was played."""
    concealer_partial: int = 0
    """Concealments whose last stage was not ready at the deadline, so an earlier one played
    (for ``gan``: the LPC prediction, not the refined one). Not counted as misses."""
    concealer_chained: int = 0
    """Burst packets whose concealment the worker had started before the engine asked for
    it, chained onto the previous packet's (``nmp_peer.conceal.worker``)."""
    concealer_held_back: int = 0
    """Requests for a gap's first packet that a live worker held back for its grace (the
    packet may still come; ``nmp_peer.conceal.worker``)."""
    concealer_spared: int = 0
    """Of those, the ones whose packet came (or that were dropped) before they started: a
    concealment not computed for nothing."""
    concealer_errors: int = 0
    """Exceptions raised by the concealer in the worker thread; each such slot got a
    fallback block (counted as a miss)."""
    underruns: int = 0
    """Blocks concealed because the jitter buffer had run dry (no packet buffered at all);
    the sound card's own underflows are ``device_output_underflows``."""
    blocks_inserted: int = 0
    blocks_dropped: int = 0
    blocks_resampled: int = 0
    """Output blocks read at a ratio other than 1 or between samples (drift correction,
    shrinking): interpolated, not copied; every other block is bit-exact."""
    lost_while_paused: int = 0
    """Of ``packets_lost``, those whose slots passed while the stream was paused (a burst
    that outlasted the concealment's fade): silence, not concealed. So
    ``packets_concealed >= packets_lost - lost_while_paused``."""
    blocks_idle: int = 0
    """Blocks of silence played while the stream was paused or after its end."""
    end_notices: int = 0
    """End-of-stream notices that reached the jitter buffer (the sender repeats them)."""
    stream_ends: int = 0
    """Streams whose sender said it stopped (an end-of-stream notice)."""
    pauses: int = 0
    """Times the stream went quiet with nothing buffered, its concealment faded out."""
    resyncs: int = 0
    blocks_played: int = 0
    buffer_depth_packets: float = 0.0
    target_depth_packets: float = 0.0
    jitter_ms: float = 0.0
    """Interarrival jitter as RFC 3550 defines it."""
    latency_samples: int = 0
    """Receive latency as measured: the median, over the latency window, of how long a packet
    waits from its arrival until its first sample is played (the jitter buffer's depth in
    time). With sound devices ``latency_ms`` adds the devices' own latencies to it."""
    target_latency_samples: int = 0
    """What the latency policy aims that wait at (the target depth, in samples)."""
    ratio_ppm: float = 0.0
    """How far the reading ratio is from 1 (clock drift correction)."""
    packets_skipped: int = 0
    """Packets that piled up before the first block was read (the output device was still
    opening) and were skipped, so that the stream starts at its start depth."""
    device_output_underflows: int = 0
    """Callbacks in which the output device reported an underflow (PortAudio's
    ``output_underflow``): it played something other than our block, in time. Under JACK
    this is set on any client's xrun."""
    device_input_overflows: int = 0
    """Callbacks in which the input device reported an overflow (PortAudio's
    ``input_overflow``): captured audio was lost before it reached us."""
    capture_queue_drops: int = 0
    """Captured blocks dropped because the queue to the sender was full: never sent."""
    device_callback_errors: int = 0
    """Exceptions raised inside a sound-device callback: each aborts its stream and ends the jam."""
    device_close_timeouts: int = 0
    """Device streams whose close did not return in time (their audio server died): abandoned."""
    device_rate: int = 0
    """The sound devices' sample rate (0: no device); other than 44100, resampled at the device edge."""
    device_period: int = 0
    """Frames per device callback (the JACK period, or the configured one), re-blocked to 512."""
    device_input_latency_ms: float = 0.0
    """Measured: from the capture (ADC) of a block's first sample until the block is complete
    and handed to the sender (the device's input latency, the period and the re-blocking)."""
    device_output_latency_ms: float = 0.0
    """Measured: from a block's deadline until its first sample is played (DAC) (the device's
    output latency, the re-blocking and the resampler)."""
    device_clock_jumps: int = 0
    """Times the output device's time jumped (an xrun, a stalled server) and its clock re-locked;
    each keeps only the newest packets up to the start depth (``packets_skipped``)."""
    device_clock_outliers: int = 0
    """Output callbacks whose device time was far off the clock's prediction (run late on a
    busy machine, or the first of a jump) and were set aside."""
    rtt_ms: float | None = None
    """Round-trip time to this peer, the last probe's (PING to PONG; None before the first)."""
    rtt_min_ms: float | None = None
    rtt_avg_ms: float | None = None
    """Smoothed round trip (RFC 6298's SRTT: each new one weighs 1/8)."""
    pings_sent: int = 0
    pongs_received: int = 0
    """PONGs that answered a PING of ours still outstanding (each gives a round trip)."""
    pongs_unmatched: int = 0
    """PONGs that answered no outstanding PING (too late, replayed or forged): no round trip."""
    pings_answered: int = 0
    """The peer's PINGs this peer answered."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        """One-way latency: capture device, the jitter buffer's measured depth, output device."""
        device = self.device_input_latency_ms + self.device_output_latency_ms
        return self.buffer_latency_ms + device

    @property
    def target_latency_ms(self) -> float:
        return 1000.0 * self.target_latency_samples / SAMPLE_RATE

    @property
    def buffer_latency_ms(self) -> float:
        """The jitter buffer's measured depth (the receive path's latency, no sound card)."""
        return 1000.0 * self.latency_samples / SAMPLE_RATE

    @property
    def one_way_ms(self) -> float | None:
        """The delay from the peer's send to our playout: half the smoothed round trip, the
        jitter buffer's measured depth and our output device's latency (the peer's capture
        device not counted: its own stats have it)."""
        if self.rtt_avg_ms is None:
            return None
        return self.rtt_avg_ms / 2.0 + self.buffer_latency_ms + self.device_output_latency_ms

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["latency_ms"] = round(self.latency_ms, 2)
        d["buffer_latency_ms"] = round(self.buffer_latency_ms, 2)
        d["target_latency_ms"] = round(self.target_latency_ms, 2)
        d["one_way_ms"] = None if self.one_way_ms is None else round(self.one_way_ms, 2)
        d["block_ms"] = round(1000.0 * BLOCK_FRAMES / SAMPLE_RATE, 2)
        d.update(extra)
        for key, value in d.items():
            if isinstance(value, float):
                d[key] = round(value, 3)
        return d

    def status_line(self) -> str:
        return (
            f"rx {self.packets_received} lost {self.packets_lost} late {self.packets_late} "
            f"dup {self.packets_duplicate} conc {self.packets_concealed} miss {self.concealer_misses} "
            f"underrun {self.underruns} | device underflow {self.device_output_underflows} "
            f"overflow {self.device_input_overflows} qdrop {self.capture_queue_drops} "
            f"| depth {self.buffer_depth_packets:.1f}/{self.target_depth_packets:.1f} "
            f"jitter {self.jitter_ms:.1f} ms latency {self.latency_ms:.1f} ms (target {self.target_latency_ms:.1f}) "
            f"drift {self.ratio_ppm:+.0f} ppm{self.device_status()} | from {self.pinned}"
        )

    def device_status(self) -> str:
        """The status line's device part: rate, period and the two device latencies ("" without a device)."""
        if not self.device_rate:
            return ""
        return (
            f" | {self.device_rate} Hz period {self.device_period} "
            f"in {self.device_input_latency_ms:.1f} out {self.device_output_latency_ms:.1f} ms"
        )
