"""The jitter buffer: packets ordered by sequence number, ready for the playout engine.

Sans-IO and clock-free: the engine tells it when a slot is played (``pop``); the buffer
classifies every arriving packet (accepted, duplicate, late, foreign) and notices a
restarted or jumped stream. Sequence numbers wrap at 2**32; internally they are
unwrapped to Python ints around the playout position.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from nmp_peer.proto.wire import SEQ_MODULUS, Packet, seq_delta


class Arrival(Enum):
    ACCEPTED = auto()
    REORDERED = auto()
    """Accepted, but after a packet with a higher sequence number."""
    DUPLICATE = auto()
    LATE = auto()
    """Its slot was already played (concealed); dropped."""
    OUT_OF_WINDOW = auto()
    """Too far from the playout position, or from another stream; kept as a resync candidate."""
    RESYNC = auto()
    """The stream restarted or jumped; the buffer now follows it from this packet."""
    END = auto()
    """An end-of-stream notice (no audio); applied when it is the followed stream's."""


@dataclass(slots=True)
class _Candidate:
    stream_id: int
    seq: int
    count: int


class JitterBuffer:
    """Sequence-ordered slots between the network and the playout engine.

    ``window`` bounds how far ahead of the playout position a packet may be stored and
    how far back a slot is remembered (to tell a duplicate from a late packet).
    ``resync_after`` consecutive packets of a new stream, or of the same stream far
    outside the window, make the buffer jump to them: a single stray packet never does.
    """

    def __init__(self, window: int = 512, resync_after: int = 3, max_late: int = 16) -> None:
        self.window = window
        self.resync_after = resync_after
        self.max_late = max_late
        """A packet later than this many slots is no jitter: the sender's timeline jumped
        (a pause, a restart with the same stream id); consistent ones resync."""
        self.stream_id: int | None = None
        self.next_seq = 0
        """Unwrapped sequence number of the next slot to play."""
        self._slots: dict[int, Packet] = {}
        self._seen: dict[int, bool] = {}
        """Recently played slots: True if their packet had been received in time."""
        self._highest = -1
        self.end_seq: int | None = None
        """Unwrapped sequence number of the first packet the sender will never send, once it said so."""
        self._started = False
        self._popped_any = False
        self._candidate: _Candidate | None = None

    @property
    def started(self) -> bool:
        return self._started

    def __len__(self) -> int:
        return len(self._slots)

    def has(self, seq: int) -> bool:
        return seq in self._slots

    def peek(self, seq: int) -> Packet | None:
        """The packet stored for an (unwrapped) slot, without taking it."""
        return self._slots.get(seq)

    def unwrap(self, seq: int) -> int:
        return self.next_seq + seq_delta(seq, self.next_seq % SEQ_MODULUS)

    @property
    def highest(self) -> int:
        """Unwrapped sequence number of the latest packet stored since the stream started."""
        return self._highest

    @property
    def ended(self) -> bool:
        """Every slot the sender sent has been played: the next one will never come."""
        return self.end_seq is not None and self.next_seq >= self.end_seq

    def push(self, packet: Packet, *, follow: bool = False) -> Arrival:
        """Store a packet and say what it was. ``follow``: the receive gate authenticated a
        new stream (a handshake, or a keyless re-pin): follow it from this packet at once."""
        if packet.end:
            if self._started and packet.stream_id == self.stream_id:
                end = self.unwrap(packet.end_seq)
                self.end_seq = end if self.end_seq is None else min(self.end_seq, end)
            return Arrival.END
        if not self._started:
            self._restart(packet)
            return Arrival.ACCEPTED
        if packet.stream_id != self.stream_id:
            if follow:
                self._restart(packet)
                return Arrival.RESYNC
            return self._consider_resync(packet)
        ext = self.unwrap(packet.seq)
        if self.end_seq is not None and ext >= self.end_seq:
            return self._consider_resync(packet)  # audio after the sender's own end: not this stream's
        if ext < self.next_seq:
            if self.next_seq - ext > self.window:
                return self._consider_resync(packet)
            if self._popped_any and self.next_seq - ext > self.max_late and not self._seen.get(ext, False):
                if self._consider_resync(packet) is Arrival.RESYNC:
                    return Arrival.RESYNC
                self._seen[ext] = True
                return Arrival.LATE
            if not self._popped_any:
                # Reordered before playout began: start earlier rather than lose it.
                self.next_seq = ext
            elif self._seen.get(ext, False):
                return Arrival.DUPLICATE
            else:
                self._seen[ext] = True
                return Arrival.LATE
        if ext - self.next_seq >= self.window:
            return self._consider_resync(packet)
        self._candidate = None
        if ext in self._slots:
            return Arrival.DUPLICATE
        self._slots[ext] = packet
        if ext > self._highest:
            self._highest = ext
            return Arrival.ACCEPTED
        return Arrival.REORDERED

    def pop(self) -> tuple[int, Packet | None]:
        """Advance one slot; return its unwrapped sequence number and packet (None if missing)."""
        seq = self.next_seq
        packet = self._slots.pop(seq, None)
        self._seen[seq] = packet is not None
        self._seen.pop(seq - self.window, None)
        self.next_seq += 1
        self._popped_any = True
        return seq, packet

    def depth(self) -> int:
        """Packets stored at or after the playout position."""
        return len(self._slots)

    def _restart(self, packet: Packet) -> None:
        self.stream_id = packet.stream_id
        self._slots.clear()
        self._seen.clear()
        self._candidate = None
        self.next_seq = packet.seq
        self._highest = packet.seq
        self.end_seq = None
        self._slots[packet.seq] = packet
        self._started = True
        self._popped_any = False

    def _consider_resync(self, packet: Packet) -> Arrival:
        cand = self._candidate
        if cand and cand.stream_id == packet.stream_id and seq_delta(packet.seq, cand.seq) in (1, 2, 3):
            cand.seq, cand.count = packet.seq, cand.count + 1
        else:
            cand = self._candidate = _Candidate(packet.stream_id, packet.seq, 1)
        if cand.count < self.resync_after:
            return Arrival.OUT_OF_WINDOW
        self._restart(packet)
        return Arrival.RESYNC
