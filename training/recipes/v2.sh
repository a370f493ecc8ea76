#!/usr/bin/env bash
# Reproduces the v2 (extent + boundary) ensemble end to end from the dataset catalogue:
#   1. catalogue: read every labelled set of ../shared/data natively and write its splits (catalogue.json);
#   2. fit: train each member on all sets' training splits (validation splits choose best.pt), resumable;
#   3. export: fp16-weight ONNX with outputs `extent` and `boundary` (parity-checked);
#   4. ensemble.json over the members, in $DEST;
#   5. evaluation of the ensemble on every set's validation split through ONNX Runtime ($DEST/evaluation.json).
#
#   bash training/recipes/v2.sh [--gpu] [--background] [--smoke]
#
#   --gpu         train on CUDA (mixed precision) with the full-size budget below (a lent GPU machine)
#   --background  detach (nohup): progress in $OUT/recipe.log, pid in $OUT/recipe.pid; rerun to resume
#   --smoke       a few minutes: 1 tile per split of each tiled set, 2 steps per member - checks the chain only
# Environment: DATA (../shared/data), OUT (runs/v2), DEST ($OUT/models), PYTHON (.venv/bin/python),
# MEMBERS (names of the ARCH table), THREADS (CPU threads, default 2), EPOCHS / STEPS / BATCH / TILE (budget),
# VAL_EVERY (validate every N epochs and after the last; whole-scene validation is the slow part on a CPU),
# SHARES (crop shares per set: the big sets drawn more, Denmark's 0.14 Mpx of training ground less, so that no
# set is seen hundreds of times more often per pixel than another).
# Rerunning resumes: a member with last.pt continues from it (same budget), exported members are redone.
# The CPU budget (2 cores) is sized for "a few hours"; it was not run to completion yet: measure, then record
# the numbers in resources/models/MODEL_CARD.md and docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
GPU=0; BACKGROUND=0; SMOKE=0
for arg in "$@"; do
  case $arg in
    --gpu) GPU=1 ;;
    --background) BACKGROUND=1 ;;
    --smoke) SMOKE=1 ;;
    *) echo "unknown option $arg (use --gpu, --background, --smoke)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-runs/v2}
mkdir -p "$OUT"
if [ "$BACKGROUND" = 1 ]; then
  args=()
  [ "$GPU" = 1 ] && args+=(--gpu)
  [ "$SMOKE" = 1 ] && args+=(--smoke)
  nohup bash "$0" "${args[@]}" >> "$OUT/recipe.log" 2>&1 &
  echo $! > "$OUT/recipe.pid"
  echo "v2 recipe running in the background (pid $(cat "$OUT/recipe.pid")); follow: tail -f $OUT/recipe.log"
  exit 0
fi
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data}
DEST=${DEST:-$OUT/models}
if [ "$GPU" = 1 ]; then
  DEVICE=cuda; EPOCHS=${EPOCHS:-40}; STEPS=${STEPS:-200}; BATCH=${BATCH:-16}; TILE=${TILE:-384}; LIMIT=()
  VAL_EVERY=${VAL_EVERY:-2}
elif [ "$SMOKE" = 1 ]; then
  DEVICE=cpu; EPOCHS=${EPOCHS:-1}; STEPS=${STEPS:-2}; BATCH=${BATCH:-2}; TILE=${TILE:-128}; LIMIT=(--limit 1)
  VAL_EVERY=1
else
  DEVICE=cpu; EPOCHS=${EPOCHS:-12}; STEPS=${STEPS:-40}; BATCH=${BATCH:-8}; TILE=${TILE:-256}; LIMIT=()
  VAL_EVERY=${VAL_EVERY:-4}
fi
# Tile-invariant members only (no pooling over the whole tile), diverse decoders.
declare -A ARCH=(
  [unet_mobilenet_v2]="--arch smp:Unet:mobilenet_v2 --decoder-channels 128,64,32,16,16"
  [linknet_mobilenet_v2]="--arch smp:Linknet:mobilenet_v2"
  [unet_w16]="--arch unet --width 16"
)
SHARES=${SHARES:-naip=2,nsw=1.5,gf2=1,contest=0.7,denmark=0.3}
read -r -a NAMES <<< "${MEMBERS:-unet_mobilenet_v2 linknet_mobilenet_v2 unet_w16}"
export CROPLAND_SHARED_DATA=$DATA
echo "$(date -u +%FT%TZ) v2 recipe: device $DEVICE, $EPOCHS epochs x $STEPS steps x $BATCH x $TILE px, members ${NAMES[*]}"
$PY -m training.v2 catalogue "${LIMIT[@]}" --json "$OUT/catalogue.json"
onnx=()
for name in "${NAMES[@]}"; do
  run=$OUT/$name
  resume=()
  [ -f "$run/last.pt" ] && resume=(--resume "$run/last.pt")
  # shellcheck disable=SC2086
  $PY -m training.v2 fit ${ARCH[$name]} --out "$run" --name "$name" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" \
      --batch-size "$BATCH" --tile "$TILE" --device "$DEVICE" --threads "${THREADS:-2}" --seed 0 \
      --val-every "$VAL_EVERY" --set-shares "$SHARES" \
      "${LIMIT[@]}" "${resume[@]}"
  $PY -m training.v2 export "$run/best.pt" --onnx "$DEST/$name.onnx" --fp16 --name "$name"
  onnx+=("$DEST/$name.onnx")
done
$PY -m training.v2 ensemble "${onnx[@]}" --out "$DEST/ensemble.json" --name cropland-default-v2 \
    --description "Extent + boundary ensemble trained on every labelled set of ../shared/data (training/recipes/v2.sh)."
$PY -m training.v2 evaluate "$DEST/ensemble.json" "${LIMIT[@]}" --threads "${THREADS:-2}" \
    --json "$DEST/evaluation.json"
echo "$(date -u +%FT%TZ) v2 recipe done: $DEST/ensemble.json, scores in $DEST/evaluation.json"
