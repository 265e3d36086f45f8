"""Train the bin2bin-v2 generator: one command, resumable.

    python -m nmp_peer.train.train --config bin2bin_v2 --data DIR --out DIR

``DIR`` (data) holds WAV clips, in ``train/`` and ``valid/`` as ``nmp_peer.synth.build_set``
writes them. ``--out`` receives:

- ``last.pt``: everything needed to continue (networks, EMA, optimisers, step); a new
  run with the same ``--out`` resumes from it, after an interruption or with more steps;
- ``best.pt``: the generator with the best validation LSD (EMA weights, BatchNorm
  statistics recalibrated), which ``nmp_peer.train.export`` turns into ONNX;
- ``train_log.csv``, ``valid_log.csv``, ``losses.png``, ``valid.png``;
- ``cache/``: the LP-filled examples (``nmp_peer.train.data``) unless ``--cache`` says where.

``--device cuda`` (or ``auto``, the default) trains on a GPU: the examples are held on it
and each batch's features are made there (``frontend.TorchFrontEnd``); ``scripts/gpu-burst.sh``
runs one time-boxed burst on a lent machine. ``--init CHECKPOINT`` starts a new run from
another run's generator.

Validation runs the generator through the runtime's own numpy front end and scores the
predicted packet with the lab's metrics (``lost_packet_lsd_db``, ``lost_packet_snr_db``):
the EMA generator with recalibrated BatchNorm statistics (what is exported), the raw
weights with their running statistics (to see how much the two differ), and LPC alone.

``--steps N`` sets the config's ``optim.steps`` (the cosine horizon and the last step),
as if the file said so; the checkpoints record it. ``--stop-at N`` stops at step N and
keeps the config's schedule (past ``optim.steps`` the rate stays at its final value):
the way to continue a finished run.

The pieces: ``config`` (the TOML configs), ``batches`` (the examples on the device),
``frontend`` (the STFT features in torch), ``trainer`` (networks, steps, validation),
``logs`` (CSV logs and plots); this module is the loop and the command line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmp_peer.train.batches import load_data, pick_device
from nmp_peer.train.config import ConfigError, TrainConfig, config_from_dict, load_config
from nmp_peer.train.logs import TRAIN_FIELDS, VALID_FIELDS, CsvLog, plot_logs, progress_bar
from nmp_peer.train.model import count_parameters
from nmp_peer.train.trainer import Trainer


def train(
    config: TrainConfig,
    data_dir: Path,
    out: Path,
    *,
    cache_dir: Path | None = None,
    stop_at: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
    device: str = "auto",
    init: Path | None = None,
) -> Trainer:
    """Train (or resume) until ``optim.steps`` (or ``stop_at``) or ``max_minutes`` of this run."""
    torch.set_num_threads(config.train.threads)
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out.mkdir(parents=True, exist_ok=True)
    train_set, valid_set = load_data(config, data_dir, cache_dir or out / "cache", progress)
    trainer = Trainer(config, train_set, valid_set, out, dev)
    last = out / "last.pt"
    if last.is_file():
        stored = torch.load(last, map_location="cpu", weights_only=False)["config"]
        if config_from_dict(stored).model != config.model:
            raise SystemExit(f"error: {last} was trained with another [model] section; use a new --out")
        trainer.load(last)
    elif init is not None:
        trainer.init_from(init)
    train_log = CsvLog(out / "train_log.csv", TRAIN_FIELDS, trainer.step)
    valid_log = CsvLog(out / "valid_log.csv", VALID_FIELDS, trainer.step)
    total = stop_at if stop_at is not None else config.optim.steps
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    print(
        f"{config.name}: generator {count_parameters(trainer.G):,} parameters, "
        f"{len(train_set):,} training / {len(valid_set)} validation examples, "
        f"step {trainer.step} of {total}, on {dev}",
        file=sys.stderr,
    )
    last_valid = ""
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task("training", total=total, completed=trainer.step, info="")
            mark, mark_step = time.monotonic(), trainer.step
            while trainer.step < total and not stop["flag"]:
                if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                    break
                rng = np.random.default_rng([config.train.seed, trainer.step])
                row = trainer.train_step(rng)
                if trainer.step % config.train.log_every == 0 or trainer.step == total:
                    values = {k: float(v) for k, v in row.items()}  # waits for the device
                    now = time.monotonic()
                    per_step = (now - mark) / max(trainer.step - mark_step, 1)
                    trainer.seconds += now - mark
                    mark, mark_step = now, trainer.step
                    train_log.append(
                        {"step": trainer.step, "seconds": trainer.seconds, "sec_per_step": per_step, **values}
                    )
                    bar.update(
                        task,
                        completed=trainer.step,
                        info=f"sc {values['sc']:.3f} log-mag {values['log_mag']:.3f} "
                        f"{per_step:.3f} s/step {last_valid}",
                    )
                if trainer.step % config.train.valid_every == 0 or trainer.step == total:
                    v = trainer.validate()
                    valid_log.append(v)
                    last_valid = f"val LSD {v['lsd_db']:.2f} dB (LPC {v['lsd_lpc_db']:.2f})"
                    plot_logs(out, train_log, valid_log)
                    mark = time.monotonic()  # validation time is not training time
                if trainer.step % config.train.checkpoint_every == 0:
                    trainer.save()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        trainer.save()
        if not (out / "best.pt").is_file():
            valid_log.append(trainer.validate())
        plot_logs(out, train_log, valid_log)
    print(f"stopped at step {trainer.step}; continue with the same command", file=sys.stderr)
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bin2bin-v2 generator (resumes from --out/last.pt).")
    parser.add_argument(
        "--config",
        required=True,
        help="TOML file or a shipped name, from nmp_peer/conf/train or its experiments/ (bin2bin_v2, tiny, ...)",
    )
    parser.add_argument("--data", required=True, type=Path, help="folder of WAV clips (train/ and valid/)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, logs, plots")
    parser.add_argument("--cache", type=Path, default=None, help="LP-filled example cache (default OUT/cache)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="set optim.steps: the cosine horizon and the last step (recorded in the checkpoints)",
    )
    parser.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop at this step, the schedule as configured (past optim.steps the rate stays final)",
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present)")
    parser.add_argument("--init", type=Path, default=None, help="a new run starts from this checkpoint's generator")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="no training: print LSD/SNR on the validation split of LPC alone and of the true "
        "magnitude with the LP phase (the bound of a magnitude-only refinement)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, steps=args.steps)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.oracle:
        train_set, valid_set = load_data(config, args.data, args.cache or args.out / "cache", not args.no_progress)
        trainer = Trainer(config, train_set, valid_set, args.out)
        print(json.dumps({"lpc": trainer.score(None), "oracle": trainer.score("oracle")}))
        return 0
    train(
        config,
        args.data,
        args.out,
        cache_dir=args.cache,
        stop_at=args.stop_at,
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
        device=args.device,
        init=args.init,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
