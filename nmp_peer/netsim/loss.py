"""Packet loss models: seeded, streaming, and replayable from challenge trace files.

Every model answers two questions about the same seeded stream: ``next_lost()`` for
one packet at a time (the live relay, on an unbounded stream) and ``sample(n)`` for
the next ``n`` packets at once (the offline lab). The two agree: after ``reset()``,
``n`` calls of ``next_lost()`` give exactly ``sample(n)``, and ``sample(a)`` followed by
``sample(b)`` gives ``sample(a + b)``. A loss model knows nothing of clocks or sockets.

Trace files follow the IS² Music PLC and Microsoft Deep PLC challenges: one digit per
512-sample packet, ``1`` = lost, ``0`` = received.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LOSS_KINDS = ("none", "bernoulli", "gilbert", "trace")
VERY_LONG_RANGE = (17, 50)
"""Lengths (packets) of ``challenge_like_trace``'s optional very long bursts."""


class TraceError(ValueError):
    """A trace file that is not one 0/1 digit per packet; the message names file and line."""


class LossModel(ABC):
    """A seeded stream of per-packet loss decisions (``True`` = lost)."""

    @abstractmethod
    def next_lost(self) -> bool:
        """Decide the next packet."""

    def sample(self, n: int) -> np.ndarray:
        """Decide the next ``n`` packets; the same values ``n`` calls of ``next_lost()`` give."""
        n = _check_count(n)
        return np.fromiter((self.next_lost() for _ in range(n)), dtype=bool, count=n)

    @abstractmethod
    def reset(self) -> None:
        """Go back to the start of the stream (same seed, same decisions again)."""


class NoLoss(LossModel):
    """Every packet arrives."""

    def next_lost(self) -> bool:
        return False

    def sample(self, n: int) -> np.ndarray:
        return np.zeros(_check_count(n), dtype=bool)

    def reset(self) -> None:
        pass

    def __repr__(self) -> str:
        return "NoLoss()"


class BernoulliLoss(LossModel):
    """Independent losses with probability ``p`` (mean burst ``1 / (1 - p)``)."""

    def __init__(self, p: float, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"loss probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def next_lost(self) -> bool:
        return bool(self._rng.random() < self.p)

    def sample(self, n: int) -> np.ndarray:
        return self._rng.random(_check_count(n)) < self.p

    def __repr__(self) -> str:
        return f"BernoulliLoss(p={self.p}, seed={self.seed})"


class GilbertElliottLoss(LossModel):
    """Bursty loss from a two-state Markov chain, set by its loss rate and mean burst.

    The chain moves good -> bad with ``p_good_to_bad = loss_rate / (mean_burst * (1 - loss_rate))``
    and bad -> good with ``p_bad_to_good = 1 / mean_burst``, so the long-run share of
    packets spent in the bad state is ``loss_rate`` and a stay in it lasts ``mean_burst``
    packets on average (geometrically distributed). With the defaults (bad: always lost,
    good: never lost) these are exactly the packet loss rate and mean burst length.
    ``loss_in_bad < 1`` or ``loss_in_good > 0`` give the general Gilbert-Elliott model;
    its packet loss rate is then ``expected_loss_rate``.

    The stream starts in the good state. Each packet consumes two uniform draws (state
    transition, in-state loss), whatever the parameters, so ``sample`` can vectorise.
    """

    def __init__(
        self,
        loss_rate: float,
        mean_burst: float,
        seed: int = 0,
        loss_in_bad: float = 1.0,
        loss_in_good: float = 0.0,
    ) -> None:
        if not 0.0 <= loss_rate < 1.0:
            raise ValueError(f"loss_rate must be in [0, 1), got {loss_rate}")
        if not 1.0 <= mean_burst < float("inf"):
            raise ValueError(f"mean_burst must be a finite number of packets >= 1, got {mean_burst}")
        if loss_rate > mean_burst / (1.0 + mean_burst):
            limit = mean_burst / (1.0 + mean_burst)
            raise ValueError(
                f"loss_rate {loss_rate} is impossible with mean_burst {mean_burst}: every burst "
                f"needs at least one received packet after it, so the rate is at most "
                f"mean_burst / (1 + mean_burst) = {limit:.4g}"
            )
        for name, value in (("loss_in_bad", loss_in_bad), ("loss_in_good", loss_in_good)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.loss_rate = float(loss_rate)
        self.mean_burst = float(mean_burst)
        self.seed = seed
        self.loss_in_bad = float(loss_in_bad)
        self.loss_in_good = float(loss_in_good)
        self.p_bad_to_good = 1.0 / self.mean_burst
        self.p_good_to_bad = self.loss_rate / (self.mean_burst * (1.0 - self.loss_rate))
        self.reset()

    @property
    def expected_loss_rate(self) -> float:
        """Long-run packet loss rate, including in-state losses."""
        return self.loss_rate * self.loss_in_bad + (1.0 - self.loss_rate) * self.loss_in_good

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._bad = False

    def _bad_threshold(self, bad: bool) -> float:
        """The next state is bad when the transition draw falls below this."""
        return 1.0 - self.p_bad_to_good if bad else self.p_good_to_bad

    def next_lost(self) -> bool:
        u_state, u_loss = self._rng.random(2)
        self._bad = bool(u_state < self._bad_threshold(self._bad))
        return bool(u_loss < (self.loss_in_bad if self._bad else self.loss_in_good))

    def sample(self, n: int) -> np.ndarray:
        n = _check_count(n)
        if n == 0:
            return np.zeros(0, dtype=bool)
        u = self._rng.random((n, 2))
        u_state, u_loss = u[:, 0], u[:, 1]
        # A draw below both thresholds forces "bad", above both forces "good"; in between
        # the next state copies the previous one (thresholds ordered as usual) or flips it
        # (p_good_to_bad + p_bad_to_good > 1). So each state follows from the last forced
        # one: its value, flipped once per step since then in the flipping case.
        a, b = self.p_good_to_bad, 1.0 - self.p_bad_to_good
        lo, hi = min(a, b), max(a, b)
        forced = (u_state < lo) | (u_state >= hi)
        idx = np.arange(n)
        last = np.maximum.accumulate(np.where(forced, idx, -1))
        start = np.where(last >= 0, u_state[np.maximum(last, 0)] < lo, self._bad)
        if a > b:
            steps = idx - last  # last == -1 refers to the state before this call
            bad = start ^ (steps % 2 == 1)
        else:
            bad = start
        self._bad = bool(bad[-1])
        return u_loss < np.where(bad, self.loss_in_bad, self.loss_in_good)

    def __repr__(self) -> str:
        return (
            f"GilbertElliottLoss(loss_rate={self.loss_rate}, mean_burst={self.mean_burst}, "
            f"seed={self.seed}, loss_in_bad={self.loss_in_bad}, loss_in_good={self.loss_in_good})"
        )


class TraceLoss(LossModel):
    """Replays a recorded pattern; after its end every packet is received (or it loops)."""

    def __init__(self, pattern: Sequence[bool] | np.ndarray, loop: bool = False) -> None:
        arr = np.asarray(pattern)
        if arr.ndim != 1:
            raise ValueError(f"trace must be one-dimensional, got shape {arr.shape}")
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError("trace values must be 0/1 or booleans")
        if loop and arr.size == 0:
            raise ValueError("cannot loop an empty trace")
        self.pattern = arr.astype(bool)
        self.loop = loop
        self.reset()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], loop: bool = False) -> TraceLoss:
        return cls(read_trace(path), loop=loop)

    def reset(self) -> None:
        self._pos = 0

    def next_lost(self) -> bool:
        return bool(self.sample(1)[0])

    def sample(self, n: int) -> np.ndarray:
        n = _check_count(n)
        size = self.pattern.size
        if self.loop:
            out = self.pattern[(self._pos + np.arange(n)) % size]
        else:
            out = np.zeros(n, dtype=bool)
            part = self.pattern[self._pos : self._pos + n]
            out[: part.size] = part
        self._pos += n
        return out

    def __repr__(self) -> str:
        return f"TraceLoss({self.pattern.size} packets, loop={self.loop})"


def read_trace(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a challenge loss trace: ``True`` where the packet is lost.

    Accepted: one ``0``/``1`` per line (the released files), or lines of contiguous
    ``0``/``1`` digits (one long line, say); surrounding spaces, CRLF line ends and
    blank lines at the end are fine. Anything else raises ``TraceError`` naming the
    file, the line and what was found there; so does a file that cannot be read (missing,
    a directory, no permission).
    """
    name = Path(path).name
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline=None) as f:
            lines = f.read().split("\n")
    except OSError as exc:
        reason = "is a directory" if isinstance(exc, IsADirectoryError) else (exc.strerror or str(exc)).lower()
        raise TraceError(f"cannot read trace {path}: {reason}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TraceError(f"{name}:1: empty trace, expected one 0 or 1 per packet")
    digits: list[str] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            raise TraceError(f"{name}:{number}: blank line inside the trace (allowed only at the end)")
        bad = next((i for i, ch in enumerate(text) if ch not in "01"), None)
        if bad is not None:
            shown = text if len(text) <= 20 else text[:20] + "..."
            where = f" (character {bad + 1})" if len(text) > 1 else ""
            raise TraceError(f"{name}:{number}: expected 0 or 1, got {shown!r}{where}")
        digits.append(text)
    return np.frombuffer("".join(digits).encode("ascii"), dtype=np.uint8) == ord("1")


def write_trace(path: str | os.PathLike[str], lost: Sequence[bool] | np.ndarray) -> None:
    """Write a trace in the released format: one ``0``/``1`` per line."""
    arr = np.asarray(lost)
    if arr.ndim != 1:
        raise ValueError(f"trace must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError("trace values must be 0/1 or booleans")
    text = "".join("1\n" if v else "0\n" for v in arr.astype(bool))
    Path(path).write_text(text, encoding="ascii")


def make_loss_model(
    kind: str,
    loss: float = 0.0,
    burst: float = 1.0,
    trace: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> LossModel:
    """Build a loss model by name: ``none``, ``bernoulli`` (``loss``), ``gilbert``
    (``loss``, mean ``burst`` in packets) or ``trace`` (the file ``trace``)."""
    if kind == "none":
        return NoLoss()
    if kind == "bernoulli":
        return BernoulliLoss(loss, seed=seed)
    if kind == "gilbert":
        return GilbertElliottLoss(loss, burst, seed=seed)
    if kind == "trace":
        if trace is None:
            raise ValueError("loss kind 'trace' needs a trace file")
        return TraceLoss.from_file(trace)
    raise ValueError(f"unknown loss kind {kind!r}; choose one of {', '.join(LOSS_KINDS)}")


def challenge_burst_pmf(
    long_burst_prob: float = 0.05,
    short_decay: float = 0.6,
    max_short: int = 6,
    long_range: tuple[int, int] = (7, 16),
    very_long_prob: float = 0.0,
    very_long_range: tuple[int, int] = VERY_LONG_RANGE,
) -> np.ndarray:
    """Burst-length distribution of ``challenge_like_trace``: ``pmf[k]`` = P(burst of k packets).

    A burst is short with probability ``1 - long_burst_prob - very_long_prob``: its
    length k in 1..``max_short`` has P(k) proportional to ``short_decay ** (k - 1)``.
    With ``long_burst_prob`` it is long: uniform over ``long_range`` inclusive; with
    ``very_long_prob`` (0 by default) very long: uniform over ``very_long_range``
    (17-50 packets, 0.2-0.6 s: the rare outages of a real network). Defaults: P(1..6) =
    0.40, 0.24, 0.14, 0.09, 0.05, 0.03 and P(7..16) = 0.005 each; mean burst 2.67
    packets, and about 21 % of the lost packets fall in long bursts. The array ends at
    the longest possible burst, so without very long bursts it is the same as before
    they existed (and so are the traces drawn from it).
    """
    if not 0.0 <= long_burst_prob <= 1.0:
        raise ValueError(f"long_burst_prob must be in [0, 1], got {long_burst_prob}")
    if not 0.0 <= very_long_prob <= 1.0 - long_burst_prob:
        raise ValueError(f"very_long_prob must be in [0, 1 - long_burst_prob], got {very_long_prob}")
    if not 0.0 < short_decay:
        raise ValueError(f"short_decay must be positive, got {short_decay}")
    lo, hi = long_range
    if not 1 <= max_short < lo <= hi:
        raise ValueError(f"need 1 <= max_short < long_range[0] <= long_range[1], got {max_short}, {long_range}")
    vlo, vhi = very_long_range
    if very_long_prob > 0 and not hi < vlo <= vhi:
        raise ValueError(
            f"need long_range[1] < very_long_range[0] <= very_long_range[1], got {long_range}, {very_long_range}"
        )
    pmf = np.zeros((vhi if very_long_prob > 0 else hi) + 1)
    short = short_decay ** np.arange(max_short)
    pmf[1 : max_short + 1] = (1.0 - long_burst_prob - very_long_prob) * short / short.sum()
    pmf[lo : hi + 1] += long_burst_prob / (hi - lo + 1)
    if very_long_prob > 0:
        pmf[vlo : vhi + 1] += very_long_prob / (vhi - vlo + 1)
    return pmf


def challenge_like_trace(
    n_packets: int,
    seed: int = 0,
    loss_rate: float = 0.10,
    long_burst_prob: float = 0.05,
    short_decay: float = 0.6,
    max_short: int = 6,
    long_range: tuple[int, int] = (7, 16),
    very_long_prob: float = 0.0,
    very_long_range: tuple[int, int] = VERY_LONG_RANGE,
) -> np.ndarray:
    """A trace resembling the challenge's: mostly bursts of 1-6 packets, some of 7-16,
    and (``very_long_prob`` > 0, the share of bursts) rare ones of 17-50.

    Bursts alternate with runs of received packets. Burst lengths are drawn from
    ``challenge_burst_pmf`` (see there); runs are geometric with at least one packet and
    mean ``mean_burst * (1 - loss_rate) / loss_rate``, so the long-run loss rate is
    ``loss_rate`` (10 % by default) whatever the burst lengths. The trace starts with a
    received run; a burst cut by the end of the trace is kept as it is.
    """
    n_packets = _check_count(n_packets)
    if not 0.0 < loss_rate < 1.0:
        raise ValueError(f"loss_rate must be in (0, 1), got {loss_rate}")
    pmf = challenge_burst_pmf(long_burst_prob, short_decay, max_short, long_range, very_long_prob, very_long_range)
    mean_burst = float(np.dot(np.arange(pmf.size), pmf))
    mean_gap = mean_burst * (1.0 - loss_rate) / loss_rate
    if mean_gap < 1.0:
        raise ValueError(
            f"loss_rate {loss_rate} is too high for bursts of mean {mean_burst:.3g} packets "
            f"separated by at least one received packet"
        )
    rng = np.random.default_rng(seed)
    out = np.zeros(n_packets, dtype=bool)
    pos = 0
    # Draw in batches: each pair (gap, burst) covers mean_gap + mean_burst packets.
    while pos < n_packets:
        m = int((n_packets - pos) / (mean_gap + mean_burst)) + 16
        gaps = rng.geometric(1.0 / mean_gap, size=m)
        bursts = rng.choice(pmf.size, size=m, p=pmf)
        for gap, burst in zip(gaps, bursts, strict=False):
            pos += int(gap)
            if pos >= n_packets:
                break
            out[pos : pos + burst] = True
            pos += int(burst)
    return out


def burst_lengths(lost: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Lengths of the runs of consecutive lost packets, in order."""
    arr = np.asarray(lost, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate(([0], arr, [0])))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def packet_burst_lengths(lost: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Per packet, the length of the burst of lost packets it belongs to; 0 where received."""
    arr = np.asarray(lost, dtype=bool).ravel()
    out = np.zeros(arr.size, dtype=np.int64)
    edges = np.diff(np.concatenate(([0], arr.astype(np.int8), [0])))
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        out[start:end] = end - start
    return out


def _check_count(n: int) -> int:
    n = int(n)
    if n < 0:
        raise ValueError(f"packet count must be non-negative, got {n}")
    return n
