"""Seeded generator of short multi-part songs as MIDI files.

Concealment has to work on any music, so the training and evaluation material must
vary in everything a listener can tell apart: tempo, key, scale, meter and feel,
instrument, register, density, articulation and dynamics. A song here is a few
sections of a chord progression with parts that each play one role (melody, comping
chords, arpeggio, pad, bass line, drums) on a General MIDI program drawn from a group
(keyboards, plucked, bowed, winds, brass, voices, bass, drums).

Everything is drawn from ``random.Random(seed)``, whose stream Python keeps stable,
so a seed names the same song on every machine. The generator is pure: it builds a
``mido.MidiFile`` in memory and touches no file.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import mido

TICKS_PER_QUARTER = 480
DRUM_CHANNEL = 9
"""General MIDI percussion is channel 10, which is 9 counted from zero."""

GM_GROUPS: dict[str, tuple[int, ...]] = {
    "piano": (0, 1, 2, 3, 4, 5),
    "keyboards": (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 16, 17, 19, 21),
    "plucked": (24, 25, 26, 27, 28, 29, 30, 46, 104, 105, 107),
    "bowed": (40, 41, 42, 44, 48, 49, 110),
    "winds": (64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 77, 78, 79),
    "brass": (56, 57, 58, 59, 60, 61, 62, 63),
    "voices": (52, 53, 54, 85, 88, 89, 91, 94),
    "bass": (32, 33, 34, 35, 36, 37, 38, 39, 43),
    "drums": (0, 8, 16, 24, 25, 32, 40, 48),
}
"""General MIDI programs (0-based) per instrument group; for ``drums`` the numbers
are drum kits (bank 128), which every GM SoundFont checked here provides."""

MELODIC_GROUPS = ("keyboards", "plucked", "bowed", "winds", "brass", "voices")

_GROUP_RANGE = {
    "piano": (45, 88),
    "keyboards": (45, 88),
    "plucked": (43, 81),
    "bowed": (50, 88),
    "winds": (58, 88),
    "brass": (50, 79),
    "voices": (52, 79),
    "bass": (28, 55),
}
_PROGRAM_RANGE = {
    42: (36, 72),
    43: (28, 55),
    57: (40, 72),
    58: (28, 58),
    66: (44, 76),
    67: (36, 69),
    70: (34, 70),
    71: (50, 89),
    72: (74, 100),
    32: (28, 52),
}
"""Idiomatic ranges where a program's register differs from its group's."""

_SUSTAINED_GROUPS = frozenset({"bowed", "winds", "brass", "voices"})
"""Groups whose players breathe or bow: fewer, longer notes and expression swells."""

ROLES = ("melody", "chords", "arpeggio", "pad", "bass", "drums")

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "major_pentatonic": (0, 2, 4, 5, 7, 9, 11),
    "minor_pentatonic": (0, 2, 3, 5, 7, 8, 10),
}
"""Seven-note scales for harmony; the pentatonic names harmonise with the parent
scale and restrict the melody to the five notes (see ``_PENTATONIC_DROP``)."""

_PENTATONIC_DROP = {"major_pentatonic": (5, 11), "minor_pentatonic": (2, 8)}
_SCALE_WEIGHTS = {
    "major": 5,
    "minor": 4,
    "dorian": 2,
    "mixolydian": 2,
    "lydian": 1,
    "phrygian": 1,
    "harmonic_minor": 1,
    "major_pentatonic": 2,
    "minor_pentatonic": 2,
}
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class Meter:
    """A time signature with the grid the parts are written on."""

    name: str
    numerator: int
    denominator: int
    beats: int
    steps_per_beat: int
    beat_quarters: float
    """Length of one felt beat in quarter notes (1.5 for the dotted beat of 6/8)."""

    @property
    def steps_per_bar(self) -> int:
        return self.beats * self.steps_per_beat

    @property
    def compound(self) -> bool:
        return self.steps_per_beat == 3

    @property
    def eighth_steps(self) -> int:
        return 1 if self.compound else 2

    @property
    def step_ticks(self) -> int:
        return round(TICKS_PER_QUARTER * self.beat_quarters / self.steps_per_beat)


METERS: dict[str, Meter] = {
    "4/4": Meter("4/4", 4, 4, 4, 4, 1.0),
    "3/4": Meter("3/4", 3, 4, 3, 4, 1.0),
    "6/8": Meter("6/8", 6, 8, 2, 3, 1.5),
    "12/8": Meter("12/8", 12, 8, 4, 3, 1.5),
}
_METER_WEIGHTS = {"4/4": 6, "3/4": 2, "6/8": 1, "12/8": 1}

_PROGRESSIONS = (
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (0, 3, 4, 0),
    (5, 3, 0, 4),
    (0, 3, 5, 4),
    (1, 4, 0, 0),
    (0, 0, 3, 4),
    (0, 6, 5, 4),
    (0, 2, 3, 4),
    (3, 4, 2, 5),
    (0, 3, 0, 4),
    (5, 4, 3, 4),
)
"""Scale degrees (0-based) of four-chord progressions common in popular music."""

DRUM_STYLES = ("rock", "four", "halftime", "funk", "bossa", "jazz")
"""Grooves in 4/4; 3/4 always plays ``waltz`` and 6/8 and 12/8 play ``compound``."""

KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
HAT_CLOSED, HAT_PEDAL, HAT_OPEN, CRASH, RIDE = 42, 44, 46, 49, 51
TOMS = (50, 48, 47, 45, 43, 41)


@dataclass(frozen=True)
class PartRequest:
    """What a caller asks for: a role, optionally a group and an exact program."""

    role: str
    group: str | None = None
    program: int | None = None


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


@dataclass(frozen=True)
class Song:
    """A generated song: its musical parameters and its MIDI file.

    Track 0 holds tempo and meter; track ``i + 1`` holds ``parts[i]``, so a stem is
    the conductor track plus the tracks of the parts it keeps.
    """

    seed: int
    tempo_bpm: float
    """Quarter notes per minute (the MIDI tempo), also for compound meters."""
    key: str
    scale: str
    meter: str
    swing: float
    drum_style: str
    bars: int
    parts: tuple[Part, ...]
    midi: mido.MidiFile = field(compare=False, repr=False)

    @property
    def seconds(self) -> float:
        return float(self.midi.length)

    def stem(self, part_indices: Sequence[int]) -> mido.MidiFile:
        """Return a MIDI file with only the given parts, timing unchanged."""
        stem = mido.MidiFile(type=1, ticks_per_beat=self.midi.ticks_per_beat)
        stem.tracks.append(self.midi.tracks[0])
        for index in part_indices:
            stem.tracks.append(self.midi.tracks[index + 1])
        return stem

    def describe(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "tempo_bpm": round(self.tempo_bpm, 2),
            "key": self.key,
            "scale": self.scale,
            "meter": self.meter,
            "swing": round(self.swing, 3),
            "drum_style": self.drum_style,
            "bars": self.bars,
            "parts": [part.describe() for part in self.parts],
        }


@dataclass
class _Note:
    tick: int
    length: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class _Harmony:
    """The song's tonal frame and its chord per bar."""

    tonic: int
    scale_pcs: tuple[int, ...]
    melody_pcs: tuple[int, ...]
    chords: tuple[tuple[int, ...], ...]
    """Pitch classes per bar, root first."""
    section_starts: frozenset[int]
    section_of_bar: tuple[int, ...]


def midi_bytes(midi: mido.MidiFile) -> bytes:
    """Return the Standard MIDI File bytes of ``midi`` (for hashing and comparing)."""
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def generate_song(
    seed: int,
    seconds: float,
    parts: Sequence[PartRequest | str],
    *,
    tempo_bpm: float | None = None,
    scale: str | None = None,
    meter: str | None = None,
    swing: float | None = None,
    drum_style: str | None = None,
) -> Song:
    """Generate a song of at least ``seconds`` (whole bars) with the requested parts.

    Parts given as plain role names get a group drawn per role. Keyword arguments pin
    a musical choice (the demo clip wants a major key at a relaxed tempo); anything
    left as ``None`` is drawn from the seed.
    """
    rng = random.Random(seed)
    requests = [PartRequest(p) if isinstance(p, str) else p for p in parts]
    for request in requests:
        if request.role not in ROLES:
            raise ValueError(f"unknown role {request.role!r}; expected one of {ROLES}")
    meter_obj = METERS[meter or _weighted(rng, _METER_WEIGHTS)]
    scale_name = scale or _weighted(rng, _SCALE_WEIGHTS)
    tonic = rng.randrange(12)
    if tempo_bpm is None:
        beat_bpm = rng.uniform(48, 100) if meter_obj.compound else rng.uniform(66, 160)
        tempo_bpm = beat_bpm * meter_obj.beat_quarters
    if swing is None:
        swing = rng.choice((0.0, 0.0, 0.0, rng.uniform(0.3, 1.0))) if not meter_obj.compound else 0.0
    if drum_style is None:
        drum_style = "jazz" if swing > 0.5 and rng.random() < 0.6 else rng.choice(DRUM_STYLES[:5])
    if meter_obj.name != "4/4":
        drum_style = "waltz" if meter_obj.beats == 3 else "compound"
    bar_seconds = 60.0 / tempo_bpm * meter_obj.beat_quarters * meter_obj.beats
    bars = max(1, math.ceil(seconds / bar_seconds))
    harmony = _make_harmony(rng, tonic, scale_name, bars)

    song_parts: list[Part] = []
    part_notes: list[list[_Note]] = []
    part_controls: list[list[tuple[int, int, int]]] = []
    next_channel = 0
    for request in requests:
        if request.role == "drums":
            group = "drums"
            channel = DRUM_CHANNEL
        else:
            group = request.group or _default_group(rng, request.role)
            channel = next_channel
            next_channel += 1 + (next_channel + 1 == DRUM_CHANNEL)
            if channel > 15:
                raise ValueError("more melodic parts than MIDI channels")
        if group not in GM_GROUPS:
            raise ValueError(f"unknown group {group!r}; expected one of {tuple(GM_GROUPS)}")
        program = request.program if request.program is not None else rng.choice(GM_GROUPS[group])
        articulation = _draw_articulation(rng, request.role, group)
        part = Part(request.role, group, program, channel, articulation)
        notes, controls = _write_part(rng, part, meter_obj, harmony, bars, drum_style)
        notes = _humanize(rng, notes, meter_obj, swing, part)
        song_parts.append(part)
        part_notes.append(notes)
        part_controls.append(controls)

    midi = _assemble(meter_obj, tempo_bpm, song_parts, part_notes, part_controls)
    return Song(
        seed=seed,
        tempo_bpm=tempo_bpm,
        key=KEY_NAMES[tonic],
        scale=scale_name,
        meter=meter_obj.name,
        swing=swing,
        drum_style=drum_style,
        bars=bars,
        parts=tuple(song_parts),
        midi=midi,
    )


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _default_group(rng: random.Random, role: str) -> str:
    if role == "bass":
        return "bass"
    if role == "pad":
        return rng.choice(("voices", "bowed", "keyboards"))
    if role in ("chords", "arpeggio"):
        return rng.choice(("keyboards", "plucked", "keyboards", "bowed", "brass"))
    return rng.choice(MELODIC_GROUPS)


def _draw_articulation(rng: random.Random, role: str, group: str) -> float:
    if role == "pad":
        return rng.uniform(0.95, 1.05)
    if role == "drums":
        return 0.5
    if group in _SUSTAINED_GROUPS:
        return rng.uniform(0.55, 1.05)
    return rng.uniform(0.25, 1.0)


def _make_harmony(rng: random.Random, tonic: int, scale_name: str, bars: int) -> _Harmony:
    scale_pcs = tuple((tonic + s) % 12 for s in SCALES[scale_name])
    dropped = {(tonic + d) % 12 for d in _PENTATONIC_DROP.get(scale_name, ())}
    melody_pcs = tuple(pc for pc in scale_pcs if pc not in dropped)
    section_bars = rng.choice((4, 8, 8))
    n_sections = math.ceil(bars / section_bars)
    section_kinds = [rng.randrange(2 if n_sections <= 2 else 3) for _ in range(n_sections)]
    section_kinds[0] = 0
    progressions = {}
    for kind in set(section_kinds):
        progression: tuple[int, ...] = rng.choice(_PROGRESSIONS)
        if rng.random() < 0.2:
            turn = rng.randrange(1, 4)
            progression = progression[turn:] + progression[:turn]
        bars_per_chord = 2 if section_bars == 8 and rng.random() < 0.25 else 1
        progressions[kind] = (progression, bars_per_chord)
    add_sevenths = rng.random() < 0.3
    chords: list[tuple[int, ...]] = []
    section_of_bar: list[int] = []
    starts = set()
    for bar in range(bars):
        section, bar_in_section = divmod(bar, section_bars)
        if bar_in_section == 0:
            starts.add(bar)
        progression, bars_per_chord = progressions[section_kinds[section]]
        degree = progression[(bar_in_section // bars_per_chord) % 4]
        if bar == bars - 1 and rng.random() < 0.7:
            degree = 0
        chords.append(_triad(scale_pcs, degree, add_sevenths and rng.random() < 0.6))
        section_of_bar.append(section)
    return _Harmony(tonic, scale_pcs, melody_pcs, tuple(chords), frozenset(starts), tuple(section_of_bar))


def _triad(scale_pcs: tuple[int, ...], degree: int, seventh: bool) -> tuple[int, ...]:
    offsets = (0, 2, 4, 6) if seventh else (0, 2, 4)
    return tuple(scale_pcs[(degree + o) % 7] for o in offsets)


def _range_of(part: Part) -> tuple[int, int]:
    return _PROGRAM_RANGE.get(part.program, _GROUP_RANGE.get(part.group, (48, 84)))


def _write_part(
    rng: random.Random,
    part: Part,
    meter: Meter,
    harmony: _Harmony,
    bars: int,
    drum_style: str,
) -> tuple[list[_Note], list[tuple[int, int, int]]]:
    """Return the part's notes and its control changes as (tick, controller, value)."""
    dynamic = rng.randint(55, 105)
    if part.role == "melody":
        notes = _melody(rng, part, meter, harmony, bars, dynamic)
    elif part.role == "chords":
        notes = _comp(rng, part, meter, harmony, bars, dynamic)
    elif part.role == "arpeggio":
        notes = _arpeggio(rng, part, meter, harmony, bars, dynamic)
    elif part.role == "pad":
        notes = _pad(part, meter, harmony, bars, max(40, dynamic - 20))
    elif part.role == "bass":
        notes = _bass(rng, part, meter, harmony, bars, dynamic)
    else:
        notes = _drums(rng, meter, harmony, bars, dynamic, drum_style)
    controls: list[tuple[int, int, int]] = [(0, 7, 100)]
    bar_ticks = meter.steps_per_bar * meter.step_ticks
    if part.group in ("keyboards", "piano") and part.role in ("chords", "arpeggio", "pad"):
        if rng.random() < 0.6:
            for bar in range(bars):
                controls.append((bar * bar_ticks + 2, 64, 127))
                controls.append(((bar + 1) * bar_ticks - 2, 64, 0))
    if part.group in _SUSTAINED_GROUPS or part.role == "pad":
        controls.extend(_swells(rng, bars, bar_ticks))
    else:
        controls.append((0, 11, 127))
    return notes, controls


def _swells(rng: random.Random, bars: int, bar_ticks: int) -> list[tuple[int, int, int]]:
    """Expression (CC11) that rises and falls over each two bars, as a bow or breath does."""
    controls = []
    span = 2 * bar_ticks
    points = 8
    for start in range(0, bars * bar_ticks, span):
        low, high = rng.randint(60, 90), rng.randint(100, 127)
        for i in range(points):
            tick = start + i * span // points
            if tick < bars * bar_ticks:
                phase = math.sin(math.pi * i / points)
                controls.append((tick, 11, int(low + (high - low) * phase)))
    return controls


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


def _swing_warp(tick: int, beat_ticks: int, swing: float) -> int:
    """Delay off-beat eighths by up to a triplet (``swing`` 1) and stretch the grid."""
    beat_start = tick - tick % beat_ticks
    phase = (tick % beat_ticks) / beat_ticks
    pivot = 0.5 + swing / 6.0
    warped = phase * pivot / 0.5 if phase < 0.5 else pivot + (phase - 0.5) * (1 - pivot) / 0.5
    return beat_start + round(warped * beat_ticks)


def _humanize(rng: random.Random, notes: list[_Note], meter: Meter, swing: float, part: Part) -> list[_Note]:
    """Apply swing, articulation and small timing and velocity deviations; no overlaps."""
    beat_ticks = meter.steps_per_beat * meter.step_ticks
    jitter = rng.randint(0, 12)
    out = []
    for note in notes:
        start, end = note.tick, note.tick + note.length
        if swing > 0 and not meter.compound:
            start, end = _swing_warp(start, beat_ticks, swing), _swing_warp(end, beat_ticks, swing)
        length = max(20, round((end - start) * part.articulation * rng.uniform(0.9, 1.05)))
        if part.role == "drums":
            length = meter.step_ticks
        start = max(0, start + rng.randint(-jitter, jitter))
        out.append(_Note(start, length, note.pitch, min(127, max(1, note.velocity))))
    out.sort(key=lambda n: (n.tick, n.pitch))
    last_by_pitch: dict[int, _Note] = {}
    for note in out:
        previous = last_by_pitch.get(note.pitch)
        if previous is not None and previous.tick + previous.length >= note.tick:
            previous.length = max(1, note.tick - previous.tick - 1)
        last_by_pitch[note.pitch] = note
    return [n for n in out if n.length > 0]


def _assemble(
    meter: Meter,
    tempo_bpm: float,
    parts: list[Part],
    part_notes: list[list[_Note]],
    part_controls: list[list[tuple[int, int, int]]],
) -> mido.MidiFile:
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_QUARTER)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    conductor.append(
        mido.MetaMessage("time_signature", numerator=meter.numerator, denominator=meter.denominator, time=0)
    )
    conductor.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks.append(conductor)
    for part, notes, controls in zip(parts, part_notes, part_controls, strict=True):
        events: list[tuple[int, int, mido.Message]] = [
            (0, 0, mido.Message("program_change", channel=part.channel, program=part.program)),
        ]
        for tick, controller, value in controls:
            events.append(
                (
                    tick,
                    1,
                    mido.Message("control_change", channel=part.channel, control=controller, value=value),
                )
            )
        for note in notes:
            events.append(
                (
                    note.tick + note.length,
                    2,
                    mido.Message("note_off", channel=part.channel, note=note.pitch, velocity=0),
                )
            )
            events.append(
                (
                    note.tick,
                    3,
                    mido.Message("note_on", channel=part.channel, note=note.pitch, velocity=note.velocity),
                )
            )
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=f"{part.role}:{part.group}:{part.program}", time=0))
        now = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    return midi
