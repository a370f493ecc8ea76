#!/usr/bin/env bash
# Reproduces the shipped default model v2 (extent + boundary; resources/models/) end to end from the catalogue:
#   1. catalogue: read every labelled set of ../shared/data natively and write its splits (catalogue.json);
#   2. fit: train each member on all sets' training splits (validation splits choose best.pt), resumable;
#   3. export: fp16-weight ONNX with outputs `extent` and `boundary` (parity-checked), and an fp32 copy;
#   4. quantize: int8 QDQ of the fp32 copy, calibrated on 64 training tiles;
#   5. ensemble.json over the int8 members and ensemble_fp16.json over the fp16 ones, in $DEST;
#   6. evaluation of both on every set's validation split through ONNX Runtime ($DEST/evaluation*.json).
# Ship: DEST=resources/models bash training/recipes/v2.sh (what resources/models/ holds was made so, with the CPU
# budget below, on 2 cores in 60 minutes; the first 5 epochs ran with THREADS=1, the rest with 2).
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
  DEVICE=cpu; EPOCHS=${EPOCHS:-20}; STEPS=${STEPS:-120}; BATCH=${BATCH:-8}; TILE=${TILE:-256}; LIMIT=()
  VAL_EVERY=${VAL_EVERY:-5}
fi
# Tile-invariant members only (no pooling over the whole tile), diverse decoders.
declare -A ARCH=(
  [unet_mobilenet_v2]="--arch smp:Unet:mobilenet_v2 --decoder-channels 128,64,32,16,16"
  [linknet_mobilenet_v2]="--arch smp:Linknet:mobilenet_v2"
  [unet_w16]="--arch unet --width 16"
)
SHARES=${SHARES:-naip=2,nsw=1.5,gf2=1,contest=0.7,denmark=0.3}
read -r -a NAMES <<< "${MEMBERS:-unet_w16}"
export CROPLAND_SHARED_DATA=$DATA
echo "$(date -u +%FT%TZ) v2 recipe: device $DEVICE, $EPOCHS epochs x $STEPS steps x $BATCH x $TILE px, members ${NAMES[*]}"
$PY -m training.v2 catalogue "${LIMIT[@]}" --json "$OUT/catalogue.json"
onnx=(); onnx16=()
for name in "${NAMES[@]}"; do
  run=$OUT/$name
  resume=()
  [ -f "$run/last.pt" ] && resume=(--resume "$run/last.pt")
  # shellcheck disable=SC2086
  $PY -m training.v2 fit ${ARCH[$name]} --out "$run" --name "$name" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" \
      --batch-size "$BATCH" --tile "$TILE" --device "$DEVICE" --threads "${THREADS:-2}" --seed 0 \
      --val-every "$VAL_EVERY" --set-shares "$SHARES" \
      "${LIMIT[@]}" "${resume[@]}"
  rm -f "$DEST/${name}_fp16.onnx" "$OUT/fp32/$name.onnx" "$DEST/$name.onnx"
  $PY -m training.v2 export "$run/best.pt" --onnx "$DEST/${name}_fp16.onnx" --fp16 --name "$name"
  $PY -m training.v2 export "$run/best.pt" --onnx "$OUT/fp32/$name.onnx" --name "$name"
  $PY -m training.v2 quantize "$OUT/fp32/$name.onnx" --out "$DEST/$name.onnx" --tiles 64 "${LIMIT[@]}"
  onnx+=("$DEST/$name.onnx"); onnx16+=("$DEST/${name}_fp16.onnx")
done
$PY -m training.v2 ensemble "${onnx[@]}" --out "$DEST/ensemble.json" --name cropland-default-v2 \
    --description "Extent + boundary model (int8) trained on every labelled set of ../shared/data across 1-10 m (training/recipes/v2.sh). See MODEL_CARD.md."
$PY -m training.v2 ensemble "${onnx16[@]}" --out "$DEST/ensemble_fp16.json" --name cropland-default-v2-fp16 \
    --description "Model v2 with fp16 weights instead of int8, for GPUs and CPUs without fast int8. See MODEL_CARD.md."
for spec in ensemble ensemble_fp16; do
  $PY -m training.v2 evaluate "$DEST/$spec.json" "${LIMIT[@]}" --threads "${THREADS:-2}" \
      --json "$OUT/evaluation_$spec.json"
done
echo "$(date -u +%FT%TZ) v2 recipe done: $DEST/ensemble.json, scores in $OUT/evaluation_*.json"
