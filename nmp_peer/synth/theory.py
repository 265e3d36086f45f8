"""Music theory for the song generator: General MIDI instrument groups and their ranges,
roles, scales, keys, meters and chord progressions (data tables), the note and harmony
types, and the song's harmony (its chord per bar), drawn from the song's random stream.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

TICKS_PER_QUARTER = 480

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
