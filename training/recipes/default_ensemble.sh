#!/usr/bin/env bash
# Rebuilds model v1 (resources/models/v1/, the default until v2) and its cross-validation numbers (v1/MODEL_CARD.md).
#
#   bash training/recipes/default_ensemble.sh [SHARED_DATA_DIR] [WORK_DIR]
#
# SHARED_DATA_DIR defaults to ../shared/data beside the repository; WORK_DIR (scratch, git-ignored) to runs/.
# On 2 idle CPU cores the whole recipe takes about 1 hour (each of the 21 trainings 2-3 minutes); with a GPU add
# --device cuda (mixed precision) and it takes minutes. Steps:
#   1. leave-one-tile-out cross-validation of the three members on the six contest tiles;
#   2. fusion of their held-out probabilities (ensemble metrics), also through the engine and ONNX;
#   3. the three members trained on all six tiles with the same settings;
#   4. fp16-weight ONNX export (with a parity check) and ensemble.json.
# Variants set, in the environment: MEMBERS (names from the ARCH table
# below), EXTRA_ARGS (more `training fit` options, e.g. extra data), ENSEMBLE_NAME and DESCRIPTION.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data}
WORK=${2:-runs}
PY=${PYTHON:-.venv/bin/python}
D=$DATA/mathorcup2020_cropland/train
# shellcheck disable=SC2206
COMMON=(--images "$D/images" --labels "$D/labels" --epochs 8 --steps-per-epoch 25 --batch-size 8 --lr 2e-3
        --resolution-m 2 --seed 0 ${EXTRA_ARGS:-})
declare -A ARCH=(
  [fcn_se_resnet50_w24]="--arch fcn_se_resnet50 --width 24 --tile 224"
  [linknet_mobilenet_v2]="--arch smp:Linknet:mobilenet_v2 --tile 192"
  [unet_mobilenet_v2]="--arch smp:Unet:mobilenet_v2 --decoder-channels 128,64,32,16,16 --tile 192"
  [unet_w16]="--arch unet --width 16 --tile 192"
)
read -r -a NAMES <<< "${MEMBERS:-fcn_se_resnet50_w24 linknet_mobilenet_v2 unet_mobilenet_v2}"

for name in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  $PY -m training fit "${COMMON[@]}" ${ARCH[$name]} --folds 6 --out "$WORK/cv/$name"
done
$PY -m training evaluate-ensemble "${NAMES[@]/#/$WORK/cv/}" --labels "$D/labels" --out "$WORK/cv/ensemble"
# the same folds through the shipped inference path (fp16 ONNX, engine tiling and blending)
$PY -m training evaluate-ensemble "${NAMES[@]/#/$WORK/cv/}" --labels "$D/labels" --images "$D/images" --engine \
    --out "$WORK/cv/ensemble_engine"

for name in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  $PY -m training fit "${COMMON[@]}" ${ARCH[$name]} --out "$WORK/final/$name"
  $PY -m training export "$WORK/final/$name/last.pt" --onnx "resources/models/v1/$name.onnx" --fp16 \
      --name "$name" --metrics "$WORK/cv/$name/cv_summary.json" --parity-image "$D/images/Data1.tif"
done
MEMBERS=()
for name in "${NAMES[@]}"; do MEMBERS+=("resources/models/v1/$name.onnx"); done
$PY -m training build-ensemble "${MEMBERS[@]}" --out resources/models/v1/ensemble.json \
    --name "${ENSEMBLE_NAME:-cropland-default-v1}" --fusion mean --metrics "$WORK/cv/ensemble_engine/ensemble_cv.json" \
    --description "${DESCRIPTION:-Mean of three small CNNs (FCN-1s SE-ResNet50, LinkNet and U-Net on MobileNetV2) trained from scratch on six 2 m ZY-3 RGB tiles; see MODEL_CARD.md.}"
