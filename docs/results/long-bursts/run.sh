#!/bin/bash
# the policy sweep of docs/results/long-bursts.md (run from the repository root, or anywhere in it):
# every hold/fade setting on both validation sets; the folders go to /work/data/pol
set -e
cd "$(git rev-parse --show-toplevel)"
export PYTHONPATH=$PWD
PY=${PY:-python}
for fade in ${FADES:-50/25 200/100 400/100 800/200}; do
  a=${fade%/*}; f=${fade#*/}
  for set in valid-debian synth/valid; do
    out=/work/data/pol/$(echo $set | tr / -)-$a-$f
    [ -f $out/metrics.csv ] && continue
    nice -n 5 $PY -m nmp_peer.cli lab --clips /work/data/$set --out $out --methods lpc,gan,repeat \
      --loss-model gilbert,challenge --loss 0.1 --burst 2 --very-long-bursts 0.02 \
      --metrics snr,lsd,visqol,plcmos --max-seconds 15 --jobs 2 --fade-after-ms $a --fade-ms $f
  done
done
