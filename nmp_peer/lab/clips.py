"""Evaluation clips with no download beyond Debian's own mirror.

Two sources: music synthesized here (``nmp_peer.synth``: FluidSynth, Debian soundfonts,
a seeded MIDI generator; clips labelled by category), and real recorded music that
Debian ships inside game data packages, taken with ``apt-get download`` + ``dpkg -x``
(nothing is installed). The packages that DEVELOPERS.md reserves for independent
evaluation are refused by name.
"""

from __future__ import annotations

import fnmatch
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nmp_peer import SAMPLE_RATE
from nmp_peer.audio_io import AudioFileError, read_audio, write_audio

RESERVED = (
    "wesnoth-*-music",
    "fretsonfire-songs-*",
    "drascula-music",
    "hyperrogue-music",
    "singularity-music",
    "colobot-common-sounds",
    "warzone2100-music",
    "asc-music",
)
"""Reserved for independent evaluation: never used for training, tuning or tests."""

DEBIAN_MUSIC = ("extremetuxracer-data", "frozen-bubble-data", "lincity-ng-data", "neverball-data")
"""Game data packages with recorded (OGG) music tracks; see docs for their licences."""

MUSIC_SUFFIXES = (".ogg", ".flac", ".wav", ".opus")


def is_reserved(package: str) -> bool:
    return any(fnmatch.fnmatch(package, pattern) for pattern in RESERVED)


def extract_packages(packages: Sequence[str], dest: Path) -> list[Path]:
    """Download the .debs with apt-get (no install) and unpack them under ``dest``."""
    for p in packages:
        if is_reserved(p):
            raise ValueError(f"package {p!r} is reserved for independent evaluation")
    dest.mkdir(parents=True, exist_ok=True)
    debs = dest / "debs"
    debs.mkdir(exist_ok=True)
    result = subprocess.run(["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get download failed: {result.stderr.strip().splitlines()[-1:]}")
    roots = []
    for deb in sorted(debs.glob("*.deb")):
        root = dest / deb.name.split("_")[0]
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        roots.append(root)
    return roots


def slice_tracks(
    tracks: Sequence[Path],
    out_dir: Path,
    clip_seconds: float = 8.0,
    clips_per_track: int = 2,
    min_track_seconds: float = 20.0,
    prefix: str = "",
) -> list[Path]:
    """Cut each long-enough track into clips spread over its middle, mono 44.1 kHz PCM16.

    Quiet stretches (below -45 dBFS RMS) are skipped: concealment of silence says nothing.
    """
    written = []
    n = int(clip_seconds * SAMPLE_RATE)
    for track in tracks:
        try:
            audio, _ = read_audio(track, channels=1)
        except AudioFileError:
            continue
        if len(audio) < min_track_seconds * SAMPLE_RATE:
            continue
        starts = np.linspace(0.15 * len(audio), 0.85 * len(audio) - n, clips_per_track).astype(int)
        for i, start in enumerate(starts):
            clip = audio[start : start + n]
            if 20 * np.log10(np.sqrt(np.mean(clip**2)) + 1e-12) < -45:
                continue
            path = out_dir / f"{prefix}{track.stem}_{i}.wav"
            write_audio(path, clip)
            written.append(path)
    return written


def debian_music(
    out_dir: Path, packages: Sequence[str] = DEBIAN_MUSIC, clip_seconds: float = 8.0, clips_per_track: int = 2
) -> list[Path]:
    """Real recorded music clips from Debian game-data packages, one sub-folder per package."""
    written = []
    with tempfile.TemporaryDirectory(prefix="nmp-debs-") as tmp:
        for root in extract_packages(packages, Path(tmp)):
            tracks = sorted(p for p in root.rglob("*") if p.suffix.lower() in MUSIC_SUFFIXES and p.is_file())
            written += slice_tracks(tracks, out_dir / root.name, clip_seconds, clips_per_track)
    return written
