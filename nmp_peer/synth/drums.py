"""The drum part of a song: General MIDI percussion grooves per style and meter, with
crashes at section starts and fills before them."""

from __future__ import annotations

import random

from nmp_peer.synth.theory import Meter, _Harmony, _Note

DRUM_STYLES = ("rock", "four", "halftime", "funk", "bossa", "jazz")
"""Grooves in 4/4; 3/4 always plays ``waltz`` and 6/8 and 12/8 play ``compound``."""

KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
HAT_CLOSED, HAT_PEDAL, HAT_OPEN, CRASH, RIDE = 42, 44, 46, 49, 51
TOMS = (50, 48, 47, 45, 43, 41)


def _drum_bar(rng: random.Random, meter: Meter, style: str) -> dict[int, list[tuple[int, int]]]:
    """One bar of a groove as step -> [(drum note, velocity offset)]."""
    bar = meter.steps_per_bar
    beat = meter.steps_per_beat
    hits: dict[int, list[tuple[int, int]]] = {}

    def hit(step: int, note: int, accent: int = 0) -> None:
        hits.setdefault(step % bar, []).append((note, accent))

    if meter.compound:
        cymbal = RIDE if rng.random() < 0.3 else HAT_CLOSED
        for s in range(bar):
            hit(s, cymbal, 8 if s % beat == 0 else -10)
        for b in range(0, meter.beats, 2):
            hit(b * beat, KICK, 10)
        for b in range(1, meter.beats, 2):
            hit(b * beat, SNARE, 6)
        return hits
    if meter.beats == 3:
        backbeat = rng.choice((SIDE_STICK, SNARE, HAT_PEDAL))
        hit(0, KICK, 10)
        for b in (1, 2):
            hit(b * beat, backbeat, -4)
        for s in range(0, bar, meter.eighth_steps):
            hit(s, HAT_CLOSED, 0 if s % beat == 0 else -14)
        return hits
    # From here on the meter is 4/4 on a 16th grid: beats at 0, 4, 8, 12.
    if style == "jazz":
        for s in (0, 4, 6, 8, 12, 14):
            hit(s, RIDE, 6 if s % 4 == 0 else -6)
        hit(4, HAT_PEDAL, -10)
        hit(12, HAT_PEDAL, -10)
        if rng.random() < 0.5:
            hit(0, KICK, -20)
        return hits
    sixteenths = style == "funk" or rng.random() < 0.25
    for s in range(0, bar, 1 if sixteenths else 2):
        hit(s, HAT_CLOSED, 6 if s % 4 == 0 else (-6 if s % 2 == 0 else -16))
    if style == "four":
        for s in (0, 4, 8, 12):
            hit(s, KICK, 10)
        for s in (2, 6, 10, 14):
            hits[s] = [(n, a) for n, a in hits.get(s, []) if n != HAT_CLOSED]
            hit(s, HAT_OPEN, -4)
        hit(4, CLAP if rng.random() < 0.4 else SNARE, 4)
        hit(12, SNARE, 4)
    elif style == "halftime":
        hit(0, KICK, 10)
        hit(14, KICK, 0)
        hit(8, SNARE, 8)
    elif style == "bossa":
        for s in (0, 6, 8, 14):
            hit(s, KICK, 0)
        for s in (0, 3, 6, 10, 12):
            hit(s, SIDE_STICK, -6)
    else:
        hit(0, KICK, 10)
        hit(8, KICK, 4)
        if rng.random() < 0.6:
            hit(10, KICK, -4)
        if style == "funk":
            hit(3, KICK, -6)
            for s in range(1, bar, 2):
                if rng.random() < 0.25:
                    hit(s, SNARE, -40)
        hit(4, SNARE, 8)
        hit(12, SNARE, 8)
    return hits


def _drums(rng: random.Random, meter: Meter, harmony: _Harmony, bars: int, dynamic: int, style: str) -> list[_Note]:
    step_ticks = meter.step_ticks
    bar_steps = meter.steps_per_bar
    groove = _drum_bar(rng, meter, style)
    variation = _drum_bar(rng, meter, style)
    notes = []
    for bar in range(bars):
        pattern = variation if bar % 4 == 3 else groove
        hits = {s: list(v) for s, v in pattern.items()}
        if bar in harmony.section_starts and bar > 0:
            hits.setdefault(0, []).append((CRASH, 6))
        fill = (bar + 1) in harmony.section_starts or bar == bars - 1
        if fill and rng.random() < 0.8:
            fill_start = bar_steps - meter.steps_per_beat * (2 if rng.random() < 0.3 else 1)
            fill_every = rng.choice((1, meter.eighth_steps))
            for s in range(fill_start, bar_steps):
                hits[s] = [(n, a) for n, a in hits.get(s, []) if n == KICK]
                if (s - fill_start) % fill_every == 0:
                    tom = TOMS[min(len(TOMS) - 1, (s - fill_start) * len(TOMS) // (bar_steps - fill_start))]
                    hits[s].append((rng.choice((tom, tom, SNARE)), 2))
        for step, events in hits.items():
            for note, accent in events:
                velocity = dynamic + accent + rng.randint(-6, 6)
                notes.append(_Note((bar * bar_steps + step) * step_ticks, step_ticks, note, velocity))
    return notes
