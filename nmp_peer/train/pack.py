"""Carry a training set to another machine in a few tens of MB, and unpack it there.

    python -m nmp_peer.train.pack encode --data DIR --out PACK --seconds 10 --level 0.5
    python -m nmp_peer.train.pack encode --data DIR --out PACK --seconds 4 --codec flac
    python -m nmp_peer.train.pack decode --pack PACK --out DIR

A GPU machine lent for a short burst takes at most 64 MiB of files, and the rendered
set is hundreds of MB of WAV. ``encode`` cuts a seeded excerpt of ``--seconds`` from
every clip of ``DIR/train`` and ``DIR/valid`` (the layout ``nmp_peer.synth.build_set``
writes) and stores it as Ogg/Opus, resampled to 48 kHz (libsndfile, through soundfile),
or as FLAC, exactly; ``decode`` turns the pack back into 44.1 kHz 16-bit WAVs in the same layout,
ready for ``nmp_peer.train.train --data``. Every clip keeps its name, so the validation
split stays the validation split.

Opus is lossy: its spectra differ from the original far less than the LP prediction
does, yet a long run on such a pack learned the codec (docs/model-card.md). FLAC is
lossless and about twice the bitrate of Opus at ``--level 0.5`` on the synth set
(``pack.json`` gives the rate of each pack): fewer seconds per clip, exact.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer import SAMPLE_RATE
from nmp_peer.audio_io import read_audio, write_audio

PACK_RATE = 48_000
"""Opus codes 8, 12, 16, 24 or 48 kHz; 44.1 kHz audio is resampled both ways."""
SPLITS = ("train", "valid")
CODECS = ("opus", "flac")


def encode(data: Path, out: Path, seconds: float, level: float, seed: int = 0, codec: str = "opus") -> dict[str, Any]:
    """Excerpts of every clip of ``data/{train,valid}`` as Ogg/Opus or FLAC in ``out``; returns sizes."""
    import soundfile as sf

    if codec not in CODECS:
        raise SystemExit(f"error: unknown codec {codec!r}; choose opus or flac")
    rng = np.random.default_rng(seed)
    total_bytes = 0
    total_seconds = 0.0
    clips = 0
    for split in SPLITS:
        files = sorted((data / split).glob("*.wav"))
        if not files:
            raise SystemExit(f"error: {data / split} holds no WAV clips")
        (out / split).mkdir(parents=True, exist_ok=True)
        for path in files:
            x = read_audio(path, channels=1)[0][:, 0]
            n = min(len(x), int(seconds * SAMPLE_RATE))
            start = int(rng.integers(0, len(x) - n + 1))
            excerpt = x[start : start + n]
            if codec == "flac":
                target = out / split / (path.stem + ".flac")
                write_audio(target, excerpt[:, None])
            else:
                import soxr

                target = out / split / (path.stem + ".ogg")
                y = soxr.resample(excerpt, SAMPLE_RATE, PACK_RATE, quality="VHQ")
                sf.write(str(target), y, PACK_RATE, format="OGG", subtype="OPUS", compression_level=level)
            total_bytes += target.stat().st_size
            total_seconds += n / SAMPLE_RATE
            clips += 1
    summary = {
        "clips": clips,
        "seconds": round(total_seconds, 1),
        "megabytes": round(total_bytes / 1e6, 2),
        "kbit_per_s": round(total_bytes * 8 / max(total_seconds, 1e-9) / 1000, 1),
        "codec": codec,
        "level": level if codec == "opus" else "lossless",
        "excerpt_seconds": seconds,
        "seed": seed,
        "source": str(data),
    }
    (out / "pack.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _decode_one(job: tuple[Path, Path]) -> None:
    source, target = job
    write_audio(target, read_audio(source, channels=1)[0])


def decode(pack: Path, out: Path, jobs: int = 0) -> int:
    """The pack's clips as 44.1 kHz 16-bit WAVs in ``out/{train,valid}`` (``jobs``
    processes, 0 = one per core); returns the count."""
    work = []
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        clips = sorted(p for p in (pack / split).glob("*") if p.suffix in (".ogg", ".flac"))
        work += [(path, out / split / (path.stem + ".wav")) for path in clips]
    if not work:
        raise SystemExit(f"error: {pack} holds no .ogg or .flac clips in train/ or valid/")
    with multiprocessing.Pool(min(jobs or os.cpu_count() or 1, len(work))) as pool:
        pool.map(_decode_one, work, chunksize=4)
    return len(work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="WAV set -> Ogg/Opus or FLAC pack")
    enc.add_argument("--data", type=Path, required=True)
    enc.add_argument("--out", type=Path, required=True)
    enc.add_argument("--seconds", type=float, default=10.0, help="excerpt per clip")
    enc.add_argument("--level", type=float, default=0.5, help="Opus: libsndfile compression level 0..1")
    enc.add_argument("--codec", choices=CODECS, default="opus")
    enc.add_argument("--seed", type=int, default=0)
    dec = sub.add_parser("decode", help="pack -> WAV set")
    dec.add_argument("--pack", type=Path, required=True)
    dec.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "encode":
        print(json.dumps(encode(args.data, args.out, args.seconds, args.level, args.seed, args.codec)))
    else:
        print(f"{decode(args.pack, args.out)} clips decoded into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
