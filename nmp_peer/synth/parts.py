"""The pitched parts of a song: melody, comping chords, arpeggio, pad and bass line,
each written on the meter's grid over the song's harmony (drums are in ``drums``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from nmp_peer.synth.theory import _GROUP_RANGE, _PROGRAM_RANGE, _SUSTAINED_GROUPS, Meter, _Harmony, _Note


@dataclass(frozen=True)
class Part:
    """A part as generated: its role, instrument group, GM program and channel."""

    role: str
    group: str
    program: int
    channel: int
    articulation: float
    """Sounding fraction of the written length: 0.3 is staccato, 1.0 legato."""

    def describe(self) -> dict[str, object]:
        return {
            "role": self.role,
            "group": self.group,
            "program": self.program,
            "channel": self.channel,
            "articulation": round(self.articulation, 3),
        }


def _range_of(part: Part) -> tuple[int, int]:
    return _PROGRAM_RANGE.get(part.program, _GROUP_RANGE.get(part.group, (48, 84)))


def _rhythm(rng: random.Random, meter: Meter, density: float) -> list[int]:
    """Onset steps for one bar: downbeats likelier than off-beats, off-beats than 16ths."""
    onsets = []
    for step in range(meter.steps_per_bar):
        if step % meter.steps_per_beat == 0:
            p = min(0.95, density + 0.35)
        elif step % meter.eighth_steps == 0:
            p = density
        else:
            p = density * 0.45
        if step == 0:
            p = 0.85
        if rng.random() < p:
            onsets.append(step)
    return onsets or [0]


def _nearest_index(notes: list[int], pitch: int) -> int:
    return min(range(len(notes)), key=lambda i: abs(notes[i] - pitch))


def _melody(rng: random.Random, part: Part, meter: Meter, harmony: _Harmony, bars: int, dynamic: int) -> list[_Note]:
    low, high = _range_of(part)
    pool = [n for n in range(low, high + 1) if n % 12 in harmony.melody_pcs]
    sustained = part.group in _SUSTAINED_GROUPS
    density = rng.uniform(0.15, 0.4) if sustained else rng.uniform(0.2, 0.7)
    rest_probability = rng.uniform(0.0, 0.2)
    position = _nearest_index(pool, rng.randint(low + (high - low) // 3, high - (high - low) // 3))
    motifs: dict[int, list[int]] = {}
    step_ticks = meter.step_ticks
    bar_steps = meter.steps_per_bar
    notes: list[_Note] = []
    for bar in range(bars):
        phrase_slot = bar % 4
        motif_key = harmony.section_of_bar[bar] * 10 + (0 if phrase_slot in (0, 2) else phrase_slot)
        if motif_key not in motifs:
            motifs[motif_key] = _rhythm(rng, meter, density)
        onsets = motifs[motif_key]
        if phrase_slot == 3 or bar == bars - 1:
            onsets = [s for s in onsets if s < bar_steps // 2] or [0]
        chord = harmony.chords[bar]
        for i, step in enumerate(onsets):
            end = onsets[i + 1] if i + 1 < len(onsets) else bar_steps
            if rng.random() < rest_probability and step != 0:
                continue
            move = rng.choices((-3, -2, -1, 0, 1, 2, 3, 4), weights=(1, 3, 6, 2, 6, 3, 1, 1))[0]
            position = min(max(position + move, 0), len(pool) - 1)
            if step % meter.steps_per_beat == 0 and pool[position] % 12 not in chord:
                candidates = [j for j in range(len(pool)) if pool[j] % 12 in chord]
                if candidates:
                    position = min(candidates, key=lambda j: abs(j - position))
            length = (end - step) * step_ticks
            accent = 10 if step == 0 else (4 if step % meter.steps_per_beat == 0 else 0)
            velocity = dynamic + accent + rng.randint(-8, 8)
            notes.append(_Note((bar * bar_steps + step) * step_ticks, length, pool[position], velocity))
    return notes


def _voicing(chord: tuple[int, ...], center: int) -> list[int]:
    """Place each chord tone nearest to ``center``; consecutive chords then move little."""
    voiced = []
    for pc in chord:
        candidates = [n for n in range(center - 6, center + 6) if n % 12 == pc]
        voiced.append(candidates[0])
    return sorted(voiced)


def _comp_patterns(meter: Meter) -> list[list[int]]:
    beat = meter.steps_per_beat
    eighth = meter.eighth_steps
    bar = meter.steps_per_bar
    beats = list(range(0, bar, beat))
    patterns = [
        [0],
        beats,
        [b + eighth for b in beats] if not meter.compound else [b + 1 for b in beats],
    ]
    if meter.beats % 2 == 0:
        patterns.append([0, bar // 2])
    if not meter.compound and meter.beats == 4:
        patterns.extend([[0, 6], [0, 6, 10], [0, 3, 6, 10, 12]])
    if meter.compound:
        patterns.append([s for s in range(bar) if s % beat != 1])
    return patterns


def _comp(rng: random.Random, part: Part, meter: Meter, harmony: _Harmony, bars: int, dynamic: int) -> list[_Note]:
    low, high = _range_of(part)
    center = min(max(60, low + 12), high - 6)
    patterns = _comp_patterns(meter)
    pattern = rng.choice(patterns)
    step_ticks = meter.step_ticks
    bar_steps = meter.steps_per_bar
    notes = []
    for bar in range(bars):
        if bar in harmony.section_starts and rng.random() < 0.5:
            pattern = rng.choice(patterns)
        for i, step in enumerate(pattern):
            end = pattern[i + 1] if i + 1 < len(pattern) else bar_steps
            velocity = dynamic - 8 + (6 if step == 0 else 0) + rng.randint(-6, 6)
            for pitch in _voicing(harmony.chords[bar], center):
                notes.append(
                    _Note(
                        (bar * bar_steps + step) * step_ticks,
                        (end - step) * step_ticks,
                        pitch,
                        velocity,
                    )
                )
    return notes


def _arpeggio(rng: random.Random, part: Part, meter: Meter, harmony: _Harmony, bars: int, dynamic: int) -> list[_Note]:
    low, high = _range_of(part)
    center = min(max(57, low + 12), high - 12)
    every = rng.choice((meter.eighth_steps, meter.eighth_steps, 1)) if not meter.compound else 1
    shape = rng.choice(("up", "down", "updown", "random"))
    step_ticks = meter.step_ticks
    bar_steps = meter.steps_per_bar
    notes = []
    for bar in range(bars):
        tones = _voicing(harmony.chords[bar], center)
        tones = tones + [t + 12 for t in tones]
        if shape == "down":
            tones = tones[::-1]
        elif shape == "updown":
            tones = tones + tones[-2:0:-1]
        for k, step in enumerate(range(0, bar_steps, every)):
            pitch = rng.choice(tones) if shape == "random" else tones[k % len(tones)]
            accent = 8 if step % meter.steps_per_beat == 0 else 0
            velocity = dynamic - 10 + accent + rng.randint(-6, 6)
            notes.append(_Note((bar * bar_steps + step) * step_ticks, every * step_ticks, pitch, velocity))
    return notes


def _pad(part: Part, meter: Meter, harmony: _Harmony, bars: int, dynamic: int) -> list[_Note]:
    low, high = _range_of(part)
    center = min(max(60, low + 12), high - 6)
    bar_ticks = meter.steps_per_bar * meter.step_ticks
    notes = []
    bar = 0
    while bar < bars:
        run = 1
        while bar + run < bars and harmony.chords[bar + run] == harmony.chords[bar]:
            run += 1
        for pitch in _voicing(harmony.chords[bar], center):
            notes.append(_Note(bar * bar_ticks, run * bar_ticks, pitch, dynamic))
        bar += run
    return notes


def _bass(rng: random.Random, part: Part, meter: Meter, harmony: _Harmony, bars: int, dynamic: int) -> list[_Note]:
    low, high = _range_of(part)
    style = rng.choice(("roots", "root_fifth", "eighths", "walking", "syncopated"))
    step_ticks = meter.step_ticks
    bar_steps = meter.steps_per_bar
    beat = meter.steps_per_beat
    scale_notes = [n for n in range(low, high + 1) if n % 12 in harmony.scale_pcs]
    syncopation = sorted({0} | {s for s in range(0, bar_steps, meter.eighth_steps) if rng.random() < 0.35})
    notes = []
    for bar in range(bars):
        chord = harmony.chords[bar]
        root = next(n for n in range(low, low + 12) if n % 12 == chord[0])
        fifth = next(n for n in range(root + 1, root + 12) if n % 12 == chord[2])
        if style == "roots":
            events = [(0, bar_steps, root)]
        elif style == "root_fifth":
            events = [(s, beat, root if k % 2 == 0 else fifth) for k, s in enumerate(range(0, bar_steps, beat))]
        elif style == "eighths":
            e = meter.eighth_steps
            events = [(s, e, root + (12 if rng.random() < 0.12 else 0)) for s in range(0, bar_steps, e)]
        elif style == "walking":
            next_chord = harmony.chords[min(bar + 1, bars - 1)]
            target = next(n for n in range(low, low + 12) if n % 12 == next_chord[0])
            events = []
            position = _nearest_index(scale_notes, root)
            for k, s in enumerate(range(0, bar_steps, beat)):
                if k == 0:
                    pitch = root
                elif k == meter.beats - 1:
                    pitch = target + rng.choice((-1, 1))
                else:
                    position = min(max(position + rng.choice((-1, 1, 1, 2)), 0), len(scale_notes) - 1)
                    pitch = scale_notes[position]
                events.append((s, beat, pitch))
        else:
            events = []
            for i, s in enumerate(syncopation):
                end = syncopation[i + 1] if i + 1 < len(syncopation) else bar_steps
                events.append((s, end - s, root if s == 0 or rng.random() < 0.7 else fifth))
        for step, length, pitch in events:
            accent = 8 if step == 0 else 0
            velocity = dynamic + accent + rng.randint(-7, 7)
            notes.append(_Note((bar * bar_steps + step) * step_ticks, length * step_ticks, pitch, velocity))
    return notes
