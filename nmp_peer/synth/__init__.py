"""Synthetic music with no download: seeded MIDI songs rendered by FluidSynth.

Used for the ``make demo`` clip, the lab's labelled evaluation set and GAN training
data. ``midi`` writes songs (with ``theory``'s tables and harmony, ``parts``' pitched
parts and ``drums``' grooves), ``render`` turns them into audio with the system's
FluidSynth and General MIDI SoundFonts, ``augment`` varies the sound, ``clips`` makes
one finished clip and ``dataset`` many, with a manifest.
"""

from nmp_peer.synth.clips import EVAL_CATEGORIES, KINDS, ClipSpec, make_demo_clip, render_clip
from nmp_peer.synth.dataset import PRESETS, SPLIT_SEED_RANGES, build_set, clip_seed, split_of_seed
from nmp_peer.synth.midi import generate_song
from nmp_peer.synth.render import (
    RenderError,
    RenderSettings,
    SynthUnavailableError,
    list_soundfonts,
    render_midi,
)

__all__ = [
    "EVAL_CATEGORIES",
    "KINDS",
    "PRESETS",
    "SPLIT_SEED_RANGES",
    "ClipSpec",
    "RenderError",
    "RenderSettings",
    "SynthUnavailableError",
    "build_set",
    "clip_seed",
    "generate_song",
    "list_soundfonts",
    "make_demo_clip",
    "render_clip",
    "render_midi",
    "split_of_seed",
]
