"""Which missing slots were lost: counted as RTCP counts, once something proves it.

A missing slot is *lost* only when its packet was provably sent: a later packet arrived,
or the sender's end-of-stream notice names a later end. Until then it was concealed
(and an underrun, the buffer being dry) but is not lost, so the end of a stream is no
loss. A stream whose concealment has faded out with nothing buffered is *paused*: its
slots pass as silence, neither concealed nor lost, until a packet proves them sent
(``lost_while_paused``) or the sender's end says they never were. A packet that comes
after its slot was played moves that slot from lost (or unproven) to late.

Sans-IO: the playout engine tells the book what happened to each slot and packet.
"""

from __future__ import annotations

from nmp_peer.receiver.stats import Stats


class LossBook:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.paused = False
        self._unconfirmed: list[int] = []
        """Missing slots played (concealed) while nothing proved their packets sent."""
        self._pause_from = 0
        """First slot that passed as silence in the current pause."""
        self._paused_slots = 0
        """Slots since ``_pause_from`` not yet proven sent, less those that came late."""
        self._end_counted = False

    def reset(self) -> None:
        """A new stream: nothing of the old one is proven any more."""
        self._unconfirmed.clear()
        self.paused = False
        self._paused_slots = 0
        self._end_counted = False

    def missing(self, seq: int, *, dry: bool, highest: int, end: int | None) -> None:
        """Slot ``seq`` was concealed: its packet had not come (``highest``: the latest packet
        stored; ``end``: the sender's end, if it said)."""
        s = self.stats
        s.packets_concealed += 1
        s.underruns += dry
        if seq < highest or (end is not None and seq < end):
            s.packets_lost += 1
        else:
            self._unconfirmed.append(seq)

    def passed_paused(self, seq: int, end: int | None) -> None:
        """Slot ``seq`` passed as silence in a pause."""
        if end is not None and seq < end:  # the sender said it sent this one
            self.stats.packets_lost += 1
            self.stats.lost_while_paused += 1
        else:
            self._paused_slots += 1

    def arrived(self, ext: int) -> None:
        """A packet for slot ``ext`` was stored (in time): the missing slots before it were
        sent, and a paused stream plays on at its place."""
        self.confirm(ext)
        self.paused = False

    def late(self, ext: int) -> None:
        """A packet came after its slot ``ext`` was played."""
        self.stats.packets_late += 1
        if ext in self._unconfirmed:
            self._unconfirmed.remove(ext)
        elif self._paused_slots and ext >= self._pause_from:
            self._paused_slots -= 1
        else:
            self.stats.packets_lost -= 1

    def ended(self, end: int) -> None:
        """The sender said its stream ends before slot ``end``."""
        if not self._end_counted:
            self.stats.stream_ends += 1
            self._end_counted = True
        self.confirm(end)
        self._unconfirmed.clear()  # at or after the end: never sent
        self._paused_slots = 0

    def confirm(self, upto: int) -> None:
        """Packets before slot ``upto`` were sent: the missing slots before it were lost."""
        s = self.stats
        if self._unconfirmed:
            s.packets_lost += sum(q < upto for q in self._unconfirmed)
            self._unconfirmed = [q for q in self._unconfirmed if q >= upto]
        if self._paused_slots:
            n = min(self._paused_slots, max(0, upto - self._pause_from))
            s.packets_lost += n
            s.lost_while_paused += n
            self._paused_slots -= n
            self._pause_from += n

    def pause(self, next_slot: int) -> None:
        """Nothing arrives and the concealment has faded out: from ``next_slot`` on, slots pass as silence."""
        self.paused = True
        self.stats.pauses += 1
        self._pause_from = next_slot
        self._paused_slots = 0
