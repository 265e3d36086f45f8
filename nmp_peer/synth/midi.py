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

from nmp_peer.synth.drums import DRUM_STYLES, _drums
from nmp_peer.synth.parts import Part, _arpeggio, _bass, _comp, _melody, _pad
from nmp_peer.synth.theory import (
    _METER_WEIGHTS,
    _SCALE_WEIGHTS,
    _SUSTAINED_GROUPS,
    GM_GROUPS,
    KEY_NAMES,
    MELODIC_GROUPS,
    METERS,
    ROLES,
    TICKS_PER_QUARTER,
    Meter,
    _Harmony,
    _make_harmony,
    _Note,
)

DRUM_CHANNEL = 9
"""General MIDI percussion is channel 10, which is 9 counted from zero."""


@dataclass(frozen=True)
class PartRequest:
    """What a caller asks for: a role, optionally a group and an exact program."""

    role: str
    group: str | None = None
    program: int | None = None


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
