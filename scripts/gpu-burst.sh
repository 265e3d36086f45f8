#!/usr/bin/env bash
# One GPU training burst on a lent machine: unpack the carried data, LP-fill it on all
# cores, time a few steps, train for what fits BUDGET_MIN (--steps), leave checkpoints and
# logs in $OUT. Prepare here first (docs/model-card.md, "Training"):
#   python -m nmp_peer.train.pack encode --data /work/data/synth --out .devdata/flac --seconds 4 --codec flac
#   (lossless; an Opus pack holds more hours but a long run learns the codec), and the
#   soundfile/cffi/pycparser/soxr wheels for the machine's Python in .whl/; PACK=.devdata/flac
# then run it there from the repository root with .devdata and .whl carried.
set -euo pipefail
OUT=${OUT:-out/gpu-burst}
BUDGET_MIN=${BUDGET_MIN:-6}
CONFIG=${CONFIG:-bin2bin_v2_gpu}   # a shipped name (nmp_peer/conf/train/experiments/) or a file
CALIB_STEPS=${CALIB_STEPS:-200}
PACK=${PACK:-.devdata/pack}
WORK=${WORK:-/tmp/gpu-burst}
PY=${PY:-python3}
INIT=${INIT:-}   # optional: a checkpoint whose generator the run starts from
WHEELS=${WHEELS:-.whl}
mkdir -p "$OUT" "$WORK"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl
    export PYTHONPATH="$WORK/site:$PWD"
fi
export PYTHONUNBUFFERED=1
init_args=()
[ -n "$INIT" ] && init_args=(--init "$INIT")
started=$(date +%s)
$PY -m nmp_peer.train.pack decode --pack "$PACK" --out "$WORK/data"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
# timing run (also builds the LP-filled cache that the real run reuses)
$PY -m nmp_peer.train.train --config "$CONFIG" --data "$WORK/data" --out "$WORK/calib" \
    --cache "$WORK/cache" --steps "$CALIB_STEPS" --no-progress "${init_args[@]}"
left=$(( $(date +%s) - started ))
steps=$($PY - "$WORK/calib/train_log.csv" "$BUDGET_MIN" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
per_step = float(rows[-1]["sec_per_step"])
# 10 % of the budget goes to validations and checkpoints
print(max(int(float(sys.argv[2]) * 60 * 0.9 / per_step) // 100 * 100, 100))
PY
)
echo "calibration: $(tail -1 "$WORK/calib/train_log.csv"); setup took ${left}s; training $steps steps"
# --steps sets optim.steps, the cosine horizon, to what fits; the checkpoints record it
echo "run: python -m nmp_peer.train.train --config $CONFIG --steps $steps" > "$OUT/command.txt"
$PY -m nmp_peer.train.train --config "$CONFIG" --steps "$steps" --data "$WORK/data" \
    --out "$OUT/run" --cache "$WORK/cache" --max-minutes "$($PY -c "print($BUDGET_MIN + 0.5)")" --no-progress "${init_args[@]}"
echo "done in $(( $(date +%s) - started ))s"
