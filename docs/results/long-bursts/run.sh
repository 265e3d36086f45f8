#!/bin/bash
# the measurement of docs/results/long-bursts.md (run from the repository root, or anywhere in it)
set -e
cd "$(git rev-parse --show-toplevel)"
export PYTHONPATH=$PWD
SECONDS_=${SECONDS_:-8}  # 8: the first 8 s of each clip; 30: the whole clips
for fade in 50/25 100/50 200/100 400/100; do
  a=${fade%/*}; f=${fade#*/}
  nice -n 5 /work/main/.venv/bin/python -m nmp_peer.cli lab --clips /tmp/burst-data/valid \
    --out /tmp/burst-data/lab-${SECONDS_}s-fade$a-$f --methods ${METHODS:-lpc,repeat,gan} --loss-model challenge --loss 0.1 \
    --very-long-bursts 0.02 --metrics snr,lsd --max-seconds $SECONDS_ --jobs 2 \
    --fade-after-ms $a --fade-ms $f
done
