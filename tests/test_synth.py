"""Tests of the synthetic-music package: MIDI generation, rendering, augmentation, sets.

Rendering tests need the ``fluidsynth`` CLI and a General MIDI SoundFont and are
skipped without them; they use the smallest installed font to stay fast.
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from nmp_peer.synth import augment
from nmp_peer.synth.clips import (
    EVAL_CATEGORIES,
    KINDS,
    ClipSpec,
    make_demo_clip,
    plan_parts,
    render_clip,
)
from nmp_peer.synth.dataset import (
    SEEDS_PER_SET,
    SPLIT_SEED_RANGES,
    build_set,
    clip_seed,
    split_of_seed,
)
from nmp_peer.synth.midi import DRUM_CHANNEL, PartRequest, generate_song, midi_bytes
from nmp_peer.synth.render import (
    RenderError,
    RenderSettings,
    SynthUnavailableError,
    default_soundfont,
    list_soundfonts,
    render_midi,
    render_to_wav,
    rms_dbfs,
)
from nmp_peer.synth.theory import GM_GROUPS

SR = 44_100
ALL_ROLES = ["melody", "chords", "arpeggio", "pad", "bass", "drums"]

HAVE_SYNTH = shutil.which("fluidsynth") is not None and bool(list_soundfonts())
needs_synth = pytest.mark.skipif(not HAVE_SYNTH, reason="fluidsynth or a GM SoundFont is not installed")


def _smallest_font() -> Path:
    return min(list_soundfonts(), key=lambda p: p.stat().st_size)


def _note_messages(track: mido.MidiTrack) -> list[mido.Message]:
    return [m for m in track if m.type in ("note_on", "note_off")]


# --- MIDI generation -------------------------------------------------------------


def test_song_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    first = generate_song(11, 8.0, ALL_ROLES)
    again = generate_song(11, 8.0, ALL_ROLES)
    other = generate_song(12, 8.0, ALL_ROLES)
    assert midi_bytes(first.midi) == midi_bytes(again.midi)
    assert first.describe() == again.describe()
    assert midi_bytes(first.midi) != midi_bytes(other.midi)


def test_seeds_vary_the_music() -> None:
    songs = [generate_song(seed, 4.0, ["melody", "bass", "drums"]) for seed in range(40)]
    assert len({s.key for s in songs}) >= 6
    assert len({s.scale for s in songs}) >= 4
    assert len({s.meter for s in songs}) >= 3
    assert len({round(s.tempo_bpm) for s in songs}) >= 20
    articulations = [p.articulation for s in songs for p in s.parts if p.role == "melody"]
    assert min(articulations) < 0.45 and max(articulations) > 0.9
    velocities = {m.velocity for s in songs for m in _note_messages(s.midi.tracks[1]) if m.type == "note_on"}
    assert max(velocities) - min(velocities) >= 30


def test_song_lasts_at_least_the_requested_time() -> None:
    for seed in range(10):
        song = generate_song(seed, 6.0, ["melody", "drums"])
        bar_s = 60.0 / song.tempo_bpm * {"4/4": 4, "3/4": 3, "6/8": 3, "12/8": 6}[song.meter]
        assert 6.0 <= song.seconds <= 6.0 + bar_s + 0.2


def test_drums_are_on_channel_9_and_nothing_else_is() -> None:
    many_melodic = ["melody"] * 10 + ["drums"]
    for seed in range(8):
        song = generate_song(seed, 4.0, many_melodic if seed == 0 else ALL_ROLES)
        for part, track in zip(song.parts, song.midi.tracks[1:], strict=True):
            channels = {m.channel for m in track if hasattr(m, "channel")}
            notes = _note_messages(track)
            assert notes, f"{part.role} has no notes"
            if part.role == "drums":
                assert channels == {9} == {DRUM_CHANNEL}
            else:
                assert 9 not in channels
                assert len(channels) == 1


# General MIDI families of eight programs (0-based program // 8), from the GM 1 spec.
_GM_FAMILY = {
    "piano": {0},
    "keyboards": {0, 1, 2},
    "plucked": {3, 5, 13},
    "bowed": {5, 6, 13},
    "winds": {8, 9},
    "brass": {7},
    "voices": {6, 10, 11},
    "bass": {4, 5},
}


def test_groups_hold_programs_of_the_matching_gm_families() -> None:
    for group, families in _GM_FAMILY.items():
        assert GM_GROUPS[group], group
        for program in GM_GROUPS[group]:
            assert program // 8 in families, f"program {program} in {group}"
    assert set(GM_GROUPS["drums"]) <= {0, 8, 16, 24, 25, 32, 40, 48}


def test_programs_follow_the_requested_role_and_group() -> None:
    for seed, group in enumerate(["keyboards", "plucked", "bowed", "winds", "brass", "voices"]):
        song = generate_song(seed, 4.0, [PartRequest("melody", group), PartRequest("bass"), "drums"])
        expected_groups = [group, "bass", "drums"]
        for part, expected, track in zip(song.parts, expected_groups, song.midi.tracks[1:], strict=True):
            assert part.group == expected
            assert part.program in GM_GROUPS[expected]
            changes = [m.program for m in track if m.type == "program_change"]
            assert changes == [part.program]
    pinned = generate_song(3, 2.0, [PartRequest("melody", "brass", 60)])
    assert pinned.parts[0].program == 60


def test_clip_kinds_cover_every_instrument_group() -> None:
    import random

    groups = set()
    for kind in KINDS:
        for seed in range(20):
            parts, stems = plan_parts(kind, random.Random(seed))
            assert sorted(i for stem in stems for i in stem) == list(range(len(parts)))
            song = generate_song(seed, 2.0, parts)
            groups |= {p.group for p in song.parts}
    assert {"keyboards", "plucked", "bowed", "winds", "brass", "voices", "bass", "drums"} <= groups


def test_stem_keeps_only_the_chosen_parts() -> None:
    song = generate_song(5, 4.0, ["melody", "bass", "drums"])
    stem = song.stem([2])
    assert len(stem.tracks) == 2
    assert {m.channel for m in stem.tracks[1] if hasattr(m, "channel")} == {9}
    assert stem.length == pytest.approx(song.stem([0, 1, 2]).length, abs=0.5)


# --- Rendering -------------------------------------------------------------------


def _two_second_midi() -> mido.MidiFile:
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)))
    track.append(mido.Message("program_change", program=16, channel=0))
    for pitch in (60, 64, 67, 72):
        track.append(mido.Message("note_on", note=pitch, velocity=100, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=480))
    return midi


@needs_synth
def test_rendering_a_two_second_midi_gives_a_mono_wav_of_that_length(tmp_path: Path) -> None:
    midi_path = tmp_path / "two.mid"
    _two_second_midi().save(midi_path)
    out = render_to_wav(midi_path, tmp_path / "two.wav", _smallest_font())
    info = sf.info(out)
    assert info.samplerate == SR
    assert info.channels == 1
    assert info.subtype == "PCM_16"
    assert info.duration == pytest.approx(2.0, abs=0.5)
    audio, _ = sf.read(out)
    assert rms_dbfs(audio) > -40.0


@needs_synth
def test_missing_fluidsynth_gives_a_clear_one_line_error(tmp_path: Path) -> None:
    settings = RenderSettings(fluidsynth=str(tmp_path / "no" / "fluidsynth"))
    with pytest.raises(SynthUnavailableError) as error:
        render_midi(_two_second_midi(), _smallest_font(), settings)
    message = str(error.value)
    assert "fluidsynth" in message and "\n" not in message
    with pytest.raises(SynthUnavailableError):
        build_set(tmp_path / "set", n_clips=1, settings=settings)


def test_missing_soundfonts_give_a_clear_error(tmp_path: Path) -> None:
    assert list_soundfonts([tmp_path, tmp_path / "absent"]) == []
    with pytest.raises(SynthUnavailableError, match="SoundFont"):
        default_soundfont([])


@needs_synth
def test_a_file_that_is_not_a_soundfont_is_an_error_not_silence(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"not a soundfont at all")
    with pytest.raises(RenderError):
        render_midi(_two_second_midi(), bogus)


def test_list_soundfonts_resolves_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    real = tmp_path / "a" / "Real.sf2"
    real.write_bytes(b"x")
    (tmp_path / "a" / "default-GM.sf2").symlink_to(real)
    (tmp_path / "b" / "other.sf3").write_bytes(b"y")
    (tmp_path / "b" / "notes.txt").write_text("z")
    fonts = list_soundfonts([tmp_path / "a", tmp_path / "b"])
    assert [f.name for f in fonts] == ["Real.sf2", "other.sf3"]


# --- Augmentation ----------------------------------------------------------------


def _test_signal(seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.6 * np.sin(2 * np.pi * 220 * t) + 0.3 * rng.standard_normal(t.size)
    return (0.999 * x / np.max(np.abs(x))).astype(np.float32)


def test_augmentations_keep_shape_are_finite_and_stay_in_range() -> None:
    x = _test_signal()
    rng = np.random.default_rng(1)
    extreme = augment.Augmentation(gain_db=12.0, tilt_db=12.0, pivot_hz=500.0, reverb_rt60_s=2.5, reverb_wet=0.6)
    for aug in [augment.random_augmentation(rng) for _ in range(6)] + [extreme]:
        y = augment.apply_augmentation(x, aug)
        assert y.shape == x.shape
        assert y.dtype == np.float32
        assert np.all(np.isfinite(y))
        assert np.max(np.abs(y)) <= 1.0
    for y in (
        augment.eq_tilt(x, -9.0, 2000.0),
        augment.add_reverb(x, augment.decaying_noise_ir(1.0, rng), 0.3),
        augment.apply_gain(x, -6.0),
    ):
        assert y.shape == x.shape and np.all(np.isfinite(y))


def test_identity_augmentation_changes_nothing() -> None:
    x = 0.5 * _test_signal()
    np.testing.assert_allclose(augment.apply_augmentation(x, augment.Augmentation()), x, atol=1e-7)
    assert augment.random_augmentation(np.random.default_rng(3), strength=0.0).reverb_wet == 0.0


def _tone_gain_db(y: np.ndarray, x: np.ndarray) -> float:
    skip = 4096
    return 20 * np.log10(np.std(y[skip:]) / np.std(x[skip:]))


def test_positive_tilt_cuts_bass_and_boosts_treble() -> None:
    t = np.arange(SR) / SR
    low = (0.1 * np.sin(2 * np.pi * 60 * t)).astype(np.float32)
    high = (0.1 * np.sin(2 * np.pi * 12_000 * t)).astype(np.float32)
    assert _tone_gain_db(augment.eq_tilt(low, 8.0, 1000.0), low) == pytest.approx(-4.0, abs=0.7)
    assert _tone_gain_db(augment.eq_tilt(high, 8.0, 1000.0), high) == pytest.approx(4.0, abs=0.7)


def test_reverb_impulse_response_decays_at_its_rt60() -> None:
    ir = augment.decaying_noise_ir(1.0, np.random.default_rng(2), predelay_ms=0.0)
    assert np.sum(ir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-3)
    window = SR // 10
    early = 10 * np.log10(np.mean(ir[window : 2 * window] ** 2))
    late = 10 * np.log10(np.mean(ir[6 * window : 7 * window] ** 2))
    assert early - late == pytest.approx(30.0, abs=6.0)  # 60 dB per second over 0.5 s


def test_mix_stems_pads_to_the_longest_and_applies_gains() -> None:
    a = np.full(100, 0.25, np.float32)
    b = np.full(60, 0.5, np.float32)
    mix = augment.mix_stems([a, b], [0.0, -6.0206])
    assert mix.shape == (100,)
    np.testing.assert_allclose(mix[:60], 0.5, atol=1e-4)
    np.testing.assert_allclose(mix[60:], 0.25, atol=1e-6)


# --- Clips and sets --------------------------------------------------------------


@needs_synth
def test_demo_clip_has_the_right_format_and_is_deterministic(tmp_path: Path) -> None:
    first = make_demo_clip(tmp_path / "demo.wav", seconds=3.0, seed=4)
    second = make_demo_clip(tmp_path / "again.wav", seconds=3.0, seed=4)
    info = sf.info(first)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
    assert info.duration == pytest.approx(3.0, abs=0.01)
    audio, _ = sf.read(first)
    assert -30.0 < rms_dbfs(audio) < -10.0
    assert first.read_bytes() == second.read_bytes()


@needs_synth
def test_render_clip_is_deterministic_for_a_seed() -> None:
    fonts = [_smallest_font()]
    spec = ClipSpec("mixture", clip_seed("train", 0, 3), 2.0, augment=1.0)
    a, b = render_clip(spec, fonts), render_clip(spec, fonts)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.info == b.info
    assert len(a.info["stems"]) in (2, 3)
    assert np.max(np.abs(a.audio)) <= 1.0


@needs_synth
def test_build_set_writes_clips_and_a_manifest_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    manifest_path = build_set(out, "eval", n_clips=2, clip_seconds=2.0, soundfonts=[_smallest_font()])
    manifest = json.loads(manifest_path.read_text())
    clips = manifest["clips"]
    assert [c["category"] for c in clips] == list(EVAL_CATEGORIES[:2])
    assert manifest["n_clips"] == 2
    for clip in clips:
        info = sf.info(out / clip["file"])
        assert (info.samplerate, info.channels) == (SR, 1)
        assert clip["duration_s"] == pytest.approx(info.duration, abs=1e-3)
        assert 1.0 < info.duration <= 2.0
        assert clip["seed"] in SPLIT_SEED_RANGES["eval"]
        assert clip["soundfonts"] == [_smallest_font().name]
        assert clip["song"]["parts"] and "augmentation" in clip
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [c["file"] for c in clips]

    stamps = {c["file"]: (out / c["file"]).stat().st_mtime_ns for c in clips}
    again = json.loads(build_set(out, "eval", n_clips=3, clip_seconds=2.0, soundfonts=[_smallest_font()]).read_text())
    assert [c["file"] for c in again["clips"][:2]] == [c["file"] for c in clips]
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps
    assert again["clips"][2]["category"] == EVAL_CATEGORIES[2]


def test_split_seed_ranges_never_overlap() -> None:
    ranges = sorted(SPLIT_SEED_RANGES.values(), key=lambda r: r.start)
    for lower, upper in itertools.pairwise(ranges):
        assert lower.stop <= upper.start
    last_train_set = len(SPLIT_SEED_RANGES["train"]) // SEEDS_PER_SET - 1
    assert split_of_seed(clip_seed("train", last_train_set, SEEDS_PER_SET - 1)) == "train"
    assert split_of_seed(clip_seed("valid", 0, 0)) == "valid"
    assert split_of_seed(clip_seed("eval", 5, 17)) == "eval"
    with pytest.raises(ValueError):
        clip_seed("train", last_train_set + 1, 0)
    with pytest.raises(ValueError):
        clip_seed("eval", 0, SEEDS_PER_SET)


def test_build_set_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_set(tmp_path, "eval")
    with pytest.raises(ValueError):
        build_set(tmp_path, "eval", n_clips=1, hours=1.0)
    with pytest.raises(ValueError):
        build_set(tmp_path, "nope", n_clips=1)
    with pytest.raises(ValueError):
        build_set(tmp_path, "eval", n_clips=1, kinds=["kazoo"])


@pytest.mark.slow
@needs_synth
def test_clips_command_builds_a_focused_set_of_chosen_kinds_and_seed(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "rhythm"
    cmd = [
        sys.executable,
        "-m",
        "nmp_peer.cli",
        "clips",
        "--out",
        str(out),
        "--kinds",
        "drums,bass",
        "--seed",
        "1",
        "--n",
        "3",
        "--seconds",
        "1.5",
        "--jobs",
        "1",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    clips = json.loads((out / "manifest.json").read_text())["clips"]
    assert [c["category"] for c in clips] == ["drums", "bass", "drums"]
    assert [c["seed"] for c in clips] == [clip_seed("eval", 1, i) for i in range(3)]
    bad = subprocess.run([*cmd[:6], "--kinds", "drum"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown clip kind 'drum'" in bad.stderr and "Traceback" not in bad.stderr
