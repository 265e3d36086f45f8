"""The causal concealer interface shared by the live peer, the offline tools and the lab.

A concealer is a function of the past: it receives the last ``context_samples`` of the
stream that was already played (received audio and its own earlier concealment alike)
and predicts the next ``predict_samples``. The first block of the prediction replaces
the missing packet; the rest (usually one more block) is what the playout engine
crossfades from when the real audio comes back. A concealer never sees anything
after the gap, so causality holds by construction.

Concealers are stateless between calls: the playout engine may compute a concealment
speculatively and throw it away when the packet arrives after all, so a call must not
change anything that a later call depends on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np

from nmp_peer import BLOCK_FRAMES

StageHook = Callable[[str], None]
"""Called as ``hook(stage)`` each time a concealer finishes a named stage of its work."""


HOLD_MS = 400.0
"""The long-burst policy of ``lpc``, ``gan`` and ``repeat``: conceal for this long, then fade
to silence over ``HOLD_FADE_MS``. Chosen on the validation sets (docs/results/long-bursts.md):
400/100 is better than the former 50/25 for all three (ViSQOL, PLCMOS, LSD; challenge-like
loss with long bursts, real and synthesized music) and nothing measured separates it from
800/200, so the shorter of the two; confirmed on the evaluation sets. A 2 s outage still
fades to silence, click-free, and recovers at once (tests/test_clicks.py, the outage-2s
scenario). ``[conceal] fade_after_ms``/``fade_ms`` override it."""
HOLD_FADE_MS = 100.0


def final_stage(stages: Iterator[np.ndarray]) -> np.ndarray:
    """Run a concealer's stages to the end and return the last (best) prediction."""
    result: np.ndarray | None = None
    for result in stages:  # noqa: B007 (the loop keeps the last one)
        pass
    if result is None:
        raise RuntimeError("a concealer yielded no prediction")
    return result


class Concealer(ABC):
    """Predicts missing audio from past audio only.

    ``history`` has shape ``(context_samples, channels)``, float32 in [-1, 1], oldest
    sample first; samples before the start of the stream are zeros. The result has
    shape ``(predict_samples, channels)``, float32. ``burst_index`` is 0 for the first
    lost packet of a burst, 1 for the second, and so on.
    """

    name: ClassVar[str]
    context_samples: int = 4 * BLOCK_FRAMES
    predict_samples: int = 2 * BLOCK_FRAMES
    codec_native: ClassVar[bool] = False
    """True for the codec's own concealment (Opus PLC/FEC): the engine takes the decoder's
    output for a lost slot instead of calling ``conceal``, which then serves only streams
    whose codec has none (PCM)."""
    fade_after_ms: float = 50.0
    """The long-burst policy: the concealment of a burst starts fading to silence after
    this long (the playout engine performs it; ``[conceal] fade_after_ms`` overrides it).
    Each concealer keeps what measured best for it (``HOLD_MS``/``HOLD_FADE_MS`` for
    ``lpc``, ``gan`` and ``repeat``: docs/results/long-bursts.md); one that was not
    measured keeps this short fade."""
    fade_ms: float = 25.0
    """Length of that fade to silence; after it the buffer pauses until audio arrives."""
    stage_count: int = 1
    """How many predictions ``stages`` yields. The shared worker thread collects a job's end
    as soon as its last one is in, instead of letting it wait behind other streams' work."""
    recovery_fade_samples: int = 128
    """Length of the raised-cosine crossfade from the prediction's tail into the first
    packet that arrives after a gap (the engine performs it)."""
    stage_hook: StageHook | None = None
    """None in production. ``nmp-peer bench`` sets one (``set_stage_hook``) that reads its
    own clocks: the concealer calls it with a stage's name as that stage ends, so the time
    since the previous call is that stage's. The concealer reads no clock itself, and an
    unset hook costs one attribute test per stage."""

    def set_stage_hook(self, hook: StageHook | None) -> None:
        """Report the ends of this concealer's stages (and of its parts') to ``hook``."""
        self.stage_hook = hook

    @abstractmethod
    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        """Return the predicted continuation of ``history``."""

    def stages(self, history: np.ndarray, burst_index: int) -> Iterator[np.ndarray]:
        """Yield ever better predictions; the engine keeps the last one that is ready.

        A slow concealer (LPC+GAN) first yields a cheap result (its LPC prediction) so
        that a deadline that falls mid-computation still gets a good block.
        """
        yield self.conceal(history, burst_index)

    def warm_up(self, channels: int = 1) -> None:
        """Run once on silence so that first-call costs are paid before the stream starts."""
        self.conceal(np.zeros((self.context_samples, channels), np.float32), 0)


def check_prediction(prediction: np.ndarray, predict_samples: int, channels: int) -> np.ndarray:
    """Return a prediction coerced to the contract: shape, dtype, finite, within [-1, 1]."""
    out = np.asarray(prediction, dtype=np.float32)
    if out.ndim == 1:
        out = out[:, None]
    if out.shape != (predict_samples, channels):
        raise ValueError(f"concealer returned shape {out.shape}, expected {(predict_samples, channels)}")
    if not np.all(np.isfinite(out)):
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(out, -1.0, 1.0, out=out)
