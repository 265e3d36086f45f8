"""Network impairment decisions for a packet stream: loss, delay, jitter, reordering, duplication.

``Impairment`` is sans-IO and clock-free: for each packet, in send order, it says
how late each delivered copy arrives. The relay turns that into timers on a live
stream; ``simulate_arrivals`` turns it into an arrival schedule for the offline lab.
Both get the same decisions from the same seed.

Per packet, in this order:

1. the loss model (if any) decides whether the packet is dropped;
2. one uniform draw picks, for a packet that is not dropped, ``reorder`` (probability
   ``reorder``), ``duplicate`` (probability ``duplicate``) or plain delivery; the two
   are exclusive, so ``reorder + duplicate <= 1``;
3. each copy's delay is ``delay_ms`` plus its own jitter sample; a reordered packet is
   held back a further 1-2 packet intervals (uniform on (1, 2]) so that it arrives
   after its successor unless jitter reorders them back.

Jitter is never negative, so no copy arrives before ``delay_ms``, the propagation
delay; jitter models queueing, which only adds:

- ``normal``: half-normal ``|N(0, jitter_ms)|`` (mean ``0.80 * jitter_ms``, median
  ``0.67 * jitter_ms``);
- ``pareto``: Lomax (Pareto II) ``jitter_ms * ((1 - u) ** (-1 / shape) - 1)`` with
  ``shape = PARETO_SHAPE = 3``: heavy-tailed, P(J > x) = (1 + x / jitter_ms) ** -3,
  mean ``jitter_ms / 2``, median ``0.26 * jitter_ms``, finite variance.

Every packet consumes the same four uniform draws from the impairment's generator
whatever its fate, so changing one probability leaves the other decisions on the same
packets unchanged (common random numbers across experiments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtri

from nmp_peer import PACKET_S
from nmp_peer.netsim.loss import LossModel

PACKET_INTERVAL_S = PACKET_S
"""Time between two packets at the sender (``nmp_peer.PACKET_S``)."""

PARETO_SHAPE = 3.0
"""Tail index of the Pareto jitter: heavy-tailed but with a finite mean and variance."""

Action = Literal["deliver", "drop", "duplicate", "reorder"]
JitterDist = Literal["normal", "pareto"]


@dataclass(frozen=True)
class Decision:
    """Ground truth for one packet: what the network did with it."""

    index: int
    """Position in send order, from 0."""
    action: Action
    delays_s: tuple[float, ...]
    """Delivery delay of each copy in seconds: empty when dropped, two when duplicated."""


class Impairment:
    """Seeded per-packet impairment decisions; see the module docstring for the model."""

    def __init__(
        self,
        loss: LossModel | None = None,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        jitter_dist: JitterDist = "normal",
        reorder: float = 0.0,
        duplicate: float = 0.0,
        seed: int = 0,
        packet_interval_s: float = PACKET_INTERVAL_S,
    ) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be non-negative, got {delay_ms}")
        if jitter_ms < 0:
            raise ValueError(f"jitter_ms must be non-negative, got {jitter_ms}")
        if jitter_dist not in ("normal", "pareto"):
            raise ValueError(f"jitter_dist must be 'normal' or 'pareto', got {jitter_dist!r}")
        for name, p in (("reorder", reorder), ("duplicate", duplicate)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {p}")
        if reorder + duplicate > 1.0:
            raise ValueError(f"reorder + duplicate must not exceed 1, got {reorder} + {duplicate}")
        if packet_interval_s <= 0:
            raise ValueError(f"packet_interval_s must be positive, got {packet_interval_s}")
        self.loss = loss
        self.delay_ms = float(delay_ms)
        self.jitter_ms = float(jitter_ms)
        self.jitter_dist = jitter_dist
        self.reorder = float(reorder)
        self.duplicate = float(duplicate)
        self.seed = seed
        self.packet_interval_s = float(packet_interval_s)
        self.reset()

    def reset(self) -> None:
        """Start the stream again: same seed, same decisions (the loss model is reset too)."""
        self._rng = np.random.default_rng(self.seed)
        self._index = 0
        if self.loss is not None:
            self.loss.reset()

    def _jitter_s(self, u: float) -> float:
        if self.jitter_ms == 0.0:
            return 0.0
        if self.jitter_dist == "normal":
            j = float(ndtri(0.5 + 0.5 * u))  # inverse CDF of |N(0, 1)|
        else:
            j = (1.0 - u) ** (-1.0 / PARETO_SHAPE) - 1.0
        return self.jitter_ms * j / 1000.0

    def next_decision(self) -> Decision:
        """Decide the next packet in send order and say what happened to it."""
        index = self._index
        self._index += 1
        u_action, u_jitter1, u_jitter2, u_hold = self._rng.random(4)
        if self.loss is not None and self.loss.next_lost():
            return Decision(index, "drop", ())
        base_s = self.delay_ms / 1000.0
        first = base_s + self._jitter_s(u_jitter1)
        if u_action < self.reorder:
            hold_s = (2.0 - u_hold) * self.packet_interval_s  # uniform on (1, 2] intervals
            return Decision(index, "reorder", (first + hold_s,))
        if u_action < self.reorder + self.duplicate:
            return Decision(index, "duplicate", (first, base_s + self._jitter_s(u_jitter2)))
        return Decision(index, "deliver", (first,))

    def decide(self) -> list[float]:
        """Delays in seconds of the next packet's delivered copies: [] when dropped."""
        return list(self.next_decision().delays_s)

    def __repr__(self) -> str:
        return (
            f"Impairment(loss={self.loss!r}, delay_ms={self.delay_ms}, jitter_ms={self.jitter_ms}, "
            f"jitter_dist={self.jitter_dist!r}, reorder={self.reorder}, duplicate={self.duplicate}, "
            f"seed={self.seed})"
        )


def simulate_arrivals(
    n_packets: int,
    impairment: Impairment,
    packet_interval_s: float | None = None,
) -> list[tuple[int, float]]:
    """Arrival schedule of ``n_packets`` sent every ``packet_interval_s`` from time 0.

    ``packet_interval_s`` defaults to the impairment's own (the one its reorder hold
    is measured in), 512 / 44100 s unless it was built with another.

    Returns ``(packet_index, arrival_time_s)`` for every delivered copy, sorted by
    arrival time (ties by index). Uses the impairment's stream from where it stands;
    call ``reset()`` first to replay it from the start.
    """
    if n_packets < 0:
        raise ValueError(f"n_packets must be non-negative, got {n_packets}")
    if packet_interval_s is None:
        packet_interval_s = impairment.packet_interval_s
    arrivals: list[tuple[int, float]] = []
    for i in range(n_packets):
        send_s = i * packet_interval_s
        arrivals.extend((i, send_s + d) for d in impairment.decide())
    arrivals.sort(key=lambda a: (a[1], a[0]))
    return arrivals
