"""From a seed to a finished clip: pick the parts, render stems, mix, trim, augment, level.

A clip's *kind* says what it sounds like and is the category a report groups by:
``piano``, ``strings``, ``guitar``, ``winds``, ``brass``, ``bass``, ``drums`` and
``voices`` are one instrument family (one or two parts), ``mixture`` is 2-3 parts of
different roles each rendered as its own stem with its own SoundFont and mixed at
random gains, and ``band`` is a full arrangement rendered at once. Everything about a
clip follows from ``ClipSpec``; the SoundFont list is the only outside input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer import SAMPLE_RATE
from nmp_peer.synth.augment import (
    Augmentation,
    add_reverb,
    apply_augmentation,
    decaying_noise_ir,
    mix_stems,
    random_augmentation,
)
from nmp_peer.synth.midi import PartRequest, generate_song
from nmp_peer.synth.render import (
    DEFAULT_SETTINGS,
    RenderError,
    RenderSettings,
    default_soundfont,
    fade,
    list_soundfonts,
    normalize,
    render_midi,
    rms_dbfs,
    trim_silence,
    write_audio,
)
from nmp_peer.synth.theory import GM_GROUPS, MELODIC_GROUPS

EVAL_CATEGORIES = ("piano", "strings", "guitar", "winds", "brass", "bass", "drums", "mixture")
KINDS = EVAL_CATEGORIES + ("voices", "band")

_LEAD_IN_S = 2.0
"""Extra music generated beyond the clip, so trimming a silent start still fills it."""


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip, given the installed SoundFonts."""

    kind: str
    seed: int
    seconds: float
    augment: float = 0.0
    """Augmentation strength: 0 leaves the render dry, 1 uses the full ranges."""
    rms_dbfs_range: tuple[float, float] = (-28.0, -16.0)


@dataclass
class Clip:
    """A rendered clip and the facts a manifest needs about it."""

    audio: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def plan_parts(kind: str, rng: random.Random) -> tuple[list[PartRequest], list[list[int]]]:
    """Return the parts for ``kind`` and how they group into separately rendered stems."""
    if kind == "piano":
        program = rng.choice(GM_GROUPS["piano"])
        accompaniment = rng.choice(("chords", "arpeggio"))
        return [
            PartRequest("melody", "piano", program),
            PartRequest(accompaniment, "piano", program),
        ], [[0, 1]]
    if kind == "strings":
        return [
            PartRequest("melody", "bowed"),
            PartRequest(rng.choice(("pad", "chords")), "bowed"),
        ], [[0, 1]]
    if kind == "guitar":
        program = rng.choice(GM_GROUPS["plucked"])
        parts = [PartRequest(rng.choice(("arpeggio", "chords")), "plucked", program)]
        if rng.random() < 0.6:
            parts.append(PartRequest("melody", "plucked"))
        return parts, [list(range(len(parts)))]
    if kind in ("winds", "brass", "voices"):
        group = kind
        parts = [PartRequest("pad", group) if kind == "voices" else PartRequest("melody", group)]
        second = {"winds": 0.4, "brass": 0.6, "voices": 0.5}[kind]
        if rng.random() < second:
            parts.append(PartRequest("melody" if kind == "voices" else rng.choice(("pad", "chords")), group))
        return parts, [list(range(len(parts)))]
    if kind == "bass":
        return [PartRequest("bass", "bass")], [[0]]
    if kind == "drums":
        return [PartRequest("drums", "drums")], [[0]]
    if kind == "mixture":
        roles = rng.sample(("melody", "accompaniment", "bass", "drums"), rng.choice((2, 3)))
        parts = []
        for role in sorted(roles, key=("melody", "accompaniment", "bass", "drums").index):
            if role == "accompaniment":
                parts.append(PartRequest(rng.choice(("chords", "arpeggio", "pad")), rng.choice(MELODIC_GROUPS)))
            elif role == "melody":
                parts.append(PartRequest("melody", rng.choice(MELODIC_GROUPS)))
            else:
                parts.append(PartRequest(role, role))
        return parts, [[i] for i in range(len(parts))]
    if kind == "band":
        parts = [
            PartRequest("melody", rng.choice(MELODIC_GROUPS)),
            PartRequest(rng.choice(("chords", "arpeggio"))),
            PartRequest("bass", "bass"),
            PartRequest("drums", "drums"),
        ]
        if rng.random() < 0.4:
            parts.append(PartRequest("pad"))
        return parts, [list(range(len(parts)))]
    raise ValueError(f"unknown clip kind {kind!r}; expected one of {KINDS}")


def render_clip(
    spec: ClipSpec,
    soundfonts: list[Path] | None = None,
    settings: RenderSettings = DEFAULT_SETTINGS,
) -> Clip:
    """Render one clip: mono float32 at 44.1 kHz, at most ``spec.seconds`` long."""
    fonts = sorted(soundfonts if soundfonts is not None else list_soundfonts(), key=lambda p: p.name)
    default_soundfont(fonts)
    rng = random.Random(f"clip:{spec.seed}")
    parts, stems = plan_parts(spec.kind, rng)
    song = generate_song(spec.seed, spec.seconds + _LEAD_IN_S, parts)
    rendered: list[np.ndarray] = []
    stem_info: list[dict[str, Any]] = []
    for indices in stems:
        font = rng.choice(fonts)
        gain_db = rng.uniform(-8.0, 0.0) if len(stems) > 1 else 0.0
        audio = normalize(render_midi(song.stem(indices), font, settings), -20.0)
        rendered.append(audio)
        stem_info.append({"parts": indices, "soundfont": font.name, "gain_db": round(gain_db, 2)})
    mix = mix_stems(rendered, [s["gain_db"] for s in stem_info])
    mix = trim_silence(mix, -50.0, sample_rate=settings.sample_rate)
    mix = fade(mix[: int(spec.seconds * settings.sample_rate)], 5.0, 50.0, settings.sample_rate)
    if not np.isfinite(rms_dbfs(mix)):
        raise RenderError(f"clip {spec.kind}/{spec.seed} rendered silent")
    np_rng = np.random.default_rng([spec.seed, 0xA06])
    aug = random_augmentation(np_rng, spec.augment) if spec.augment > 0 else Augmentation()
    mix = apply_augmentation(mix, aug, settings.sample_rate)
    target = float(np_rng.uniform(*spec.rms_dbfs_range))
    mix = normalize(mix, target)
    info = {
        "kind": spec.kind,
        "seed": spec.seed,
        "duration_s": round(mix.shape[0] / settings.sample_rate, 4),
        "soundfonts": sorted({s["soundfont"] for s in stem_info}),
        "stems": stem_info,
        "song": song.describe(),
        "augmentation": aug.describe(),
        "rms_dbfs": round(rms_dbfs(mix), 2),
    }
    return Clip(mix, info)


def make_demo_clip(path: Path | str, seconds: float = 10.0, seed: int = 0) -> Path:
    """Write a short, pleasant mono 16-bit WAV (piano, bass and drums) for ``make demo``.

    The style is pinned (major key, 4/4, relaxed tempo, General MIDI piano, fingered
    bass, standard kit, a little room) so that any seed sounds like a demo, not a test
    signal; the seed still picks key, tune and groove.
    """
    rng = random.Random(f"demo:{seed}")
    song = generate_song(
        seed,
        seconds + _LEAD_IN_S,
        [
            PartRequest("melody", "piano", 0),
            PartRequest("chords", "piano", 0),
            PartRequest("bass", "bass", 33),
            PartRequest("drums", "drums", 0),
        ],
        tempo_bpm=rng.uniform(92.0, 112.0),
        scale="major",
        meter="4/4",
        swing=0.0,
        drum_style=rng.choice(("rock", "four", "bossa")),
    )
    audio = trim_silence(render_midi(song.midi, default_soundfont()))
    audio = audio[: int(seconds * SAMPLE_RATE)]
    ir = decaying_noise_ir(0.9, np.random.default_rng(seed))
    audio = add_reverb(normalize(audio, -20.0), ir, wet=0.15)
    audio = normalize(fade(audio, 5.0, 500.0), -18.0, peak_limit=0.9)
    return write_audio(Path(path), audio)
