"""Render MIDI to mono audio with the ``fluidsynth`` command-line synthesizer.

FluidSynth and the General MIDI SoundFonts come from the distribution (``apt-get
install fluidsynth fluid-soundfont-gm``), so synthetic music needs no download. The
CLI is run once per render in fast-render mode (``-F``), which is faster than real
time and needs no audio device. It writes raw little-endian float32 stereo: float
keeps loud mixes unclipped and skips FluidSynth's 16-bit dither, and we downmix,
trim and set the level ourselves.

FluidSynth quirks this module handles:

- A SoundFont that is missing or not a SoundFont only gets a warning on stderr; the
  exit status is 0 and the output is silence. We check the path first and the
  warning after.
- Rendering goes on past the end of the MIDI file, until the voices have died away
  and then some: about 2.2 s of extra audio even for an organ with a short release.
  ``trim_silence`` removes it.
- An ``.sf3`` (Vorbis-compressed) SoundFont is decoded whole at load unless
  ``synth.dynamic-sample-loading`` is on; with it, loading MuseScore_General drops
  from about 5 s to under 2 s, so it is always on.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from nmp_peer import SAMPLE_RATE

SOUNDFONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/sounds/sf2"),
    Path("/usr/share/sounds/sf3"),
    Path("/usr/share/soundfonts"),
)
PREFERRED_SOUNDFONTS = (
    "FluidR3_GM.sf2",
    "MuseScore_General_Full.sf3",
    "MuseScore_General.sf3",
    "TimGM6mb.sf2",
)
"""Best-sounding first; ``default_soundfont`` takes the first one installed."""


class SynthUnavailableError(RuntimeError):
    """FluidSynth or a SoundFont is not installed; the message says what to install."""


class RenderError(RuntimeError):
    """FluidSynth ran but did not produce the audio it should have."""


@dataclass(frozen=True)
class RenderSettings:
    """How FluidSynth is invoked.

    Reverb and chorus are off by default: ``augment`` adds reverb under our control
    and records it, whereas FluidSynth's would be baked into every clip alike.
    """

    gain: float = 0.4
    sample_rate: int = SAMPLE_RATE
    reverb: bool = False
    chorus: bool = False
    fluidsynth: str = "fluidsynth"
    timeout_s: float = 600.0


DEFAULT_SETTINGS = RenderSettings()


def list_soundfonts(dirs: Iterable[Path] = SOUNDFONT_DIRS) -> list[Path]:
    """Return the installed SoundFonts, each file once however many links point to it.

    Debian installs ``default-GM.sf2`` and ``MuseScore_General.sf3`` as links to
    other files in the same folders; rendering with both would only double the
    weight of one font, so links are resolved and duplicates dropped.
    """
    found: dict[Path, Path] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".sf2", ".sf3") or not path.is_file():
                continue
            found.setdefault(path.resolve(), path.resolve())
    return sorted(found.values(), key=lambda p: p.name)


def default_soundfont(soundfonts: Sequence[Path] | None = None) -> Path:
    """Return the preferred installed SoundFont, or raise ``SynthUnavailableError``."""
    fonts = list(soundfonts) if soundfonts is not None else list_soundfonts()
    if not fonts:
        raise SynthUnavailableError(
            "no SoundFont (.sf2/.sf3) found under "
            + ", ".join(str(d) for d in SOUNDFONT_DIRS)
            + ": install one, e.g. `apt-get install fluid-soundfont-gm`"
        )
    by_name = {font.name: font for font in fonts}
    for name in PREFERRED_SOUNDFONTS:
        if name in by_name:
            return by_name[name]
    return fonts[0]


def find_fluidsynth(binary: str = "fluidsynth") -> Path:
    """Return the FluidSynth executable, or raise ``SynthUnavailableError``."""
    path = shutil.which(binary)
    if path is None:
        raise SynthUnavailableError(
            f"fluidsynth executable {binary!r} not found: install it with `apt-get install fluidsynth`"
        )
    return Path(path)


def render_midi(
    midi: mido.MidiFile | Path,
    soundfont: Path,
    settings: RenderSettings = DEFAULT_SETTINGS,
) -> np.ndarray:
    """Render ``midi`` with ``soundfont`` and return mono float32 audio, untrimmed.

    The level is FluidSynth's (set by ``settings.gain``) and can exceed 1.0 for dense
    mixes; callers normalise.
    """
    binary = find_fluidsynth(settings.fluidsynth)
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise SynthUnavailableError(f"SoundFont {soundfont} does not exist")
    with tempfile.TemporaryDirectory(prefix="nmp-synth-") as tmp:
        if isinstance(midi, mido.MidiFile):
            midi_path = Path(tmp) / "in.mid"
            midi.save(midi_path)
        else:
            midi_path = Path(midi)
        raw_path = Path(tmp) / "out.raw"
        command = [
            str(binary),
            "-n",
            "-i",
            "-q",
            "-g",
            f"{settings.gain:g}",
            "-r",
            str(settings.sample_rate),
            "-R",
            "1" if settings.reverb else "0",
            "-C",
            "1" if settings.chorus else "0",
            "-o",
            "synth.dynamic-sample-loading=1",
            "-o",
            "synth.lock-memory=0",
            "-T",
            "raw",
            "-O",
            "float",
            "-E",
            "little",
            "-F",
            str(raw_path),
            str(soundfont),
            str(midi_path),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=settings.timeout_s, check=False)
        except FileNotFoundError as error:
            raise SynthUnavailableError(f"fluidsynth executable {binary} could not be run: {error}") from error
        if result.returncode != 0 or "not a SoundFont" in result.stderr or not raw_path.exists():
            message = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise RenderError(
                f"fluidsynth failed on {midi_path.name} with {soundfont.name} "
                f"(exit {result.returncode}): {message[-1] if message else 'no output'}"
            )
        stereo = np.fromfile(raw_path, dtype="<f4")
    stereo = stereo[: stereo.size - stereo.size % 2].reshape(-1, 2)
    return (0.5 * (stereo[:, 0] + stereo[:, 1])).astype(np.float32)


def render_to_wav(
    midi: mido.MidiFile | Path,
    out_path: Path,
    soundfont: Path | None = None,
    settings: RenderSettings = DEFAULT_SETTINGS,
    rms_dbfs_target: float = -20.0,
) -> Path:
    """Render ``midi`` to a mono 16-bit WAV, silence trimmed and level normalised.

    ``soundfont`` defaults to the preferred installed one (``default_soundfont``).
    """
    font = soundfont if soundfont is not None else default_soundfont()
    audio = trim_silence(render_midi(midi, font, settings), sample_rate=settings.sample_rate)
    if audio.size == 0:
        raise RenderError(f"rendering with {Path(font).name} produced only silence")
    return write_audio(out_path, normalize(audio, rms_dbfs_target), settings.sample_rate)


def trim_silence(
    audio: np.ndarray,
    threshold_db: float = -50.0,
    keep_ms: float = 10.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``threshold_db`` below the peak.

    A few milliseconds before the first onset are kept so that the attack is whole.
    """
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) >= peak * 10 ** (threshold_db / 20))
    keep = int(keep_ms * sample_rate / 1000)
    start = max(0, int(loud[0]) - keep)
    end = min(audio.shape[0], int(loud[-1]) + keep + 1)
    return audio[start:end]


def rms_dbfs(audio: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for silence)."""
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def normalize(audio: np.ndarray, target_rms_dbfs: float, peak_limit: float = 0.98) -> np.ndarray:
    """Scale to ``target_rms_dbfs``, then down further if the peak would pass ``peak_limit``.

    Peaky material (drums) ends up quieter than the target rather than clipped.
    """
    level = rms_dbfs(audio)
    if not np.isfinite(level):
        return audio.astype(np.float32)
    scaled = audio * 10 ** ((target_rms_dbfs - level) / 20)
    peak = float(np.max(np.abs(scaled)))
    if peak > peak_limit:
        scaled = scaled * (peak_limit / peak)
    return scaled.astype(np.float32)


def fade(audio: np.ndarray, fade_in_ms: float, fade_out_ms: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply raised-cosine fades so that cut edges do not click."""
    out = audio.astype(np.float32, copy=True)
    for length_ms, at_start in ((fade_in_ms, True), (fade_out_ms, False)):
        n = min(out.shape[0], int(length_ms * sample_rate / 1000))
        if n <= 1:
            continue
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
        if at_start:
            out[:n] *= ramp
        else:
            out[-n:] *= ramp[::-1]
    return out


def write_audio(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit PCM; the container (WAV or FLAC) follows the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clipped = np.clip(audio, -1.0, 1.0)
    sf.write(path, clipped, sample_rate, subtype="PCM_16")
    return path
