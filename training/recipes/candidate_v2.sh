#!/usr/bin/env bash
# EXPERIMENTAL candidate for a default ensemble cropland-default-v2; it has NOT been run to completion and its
# models are not shipped (resources/models/ holds cropland-default-v1, built by default_ensemble.sh). Aim: members
# that do not depend on the tile size (no FCN SE gates pooling over the whole tile) and US NAIP farmland in the
# training data, against v1's dark ponds read as cropland on the NAIP sample. Ship it only if it meets the
# targets of MODEL_CARD.md (LOTO ensemble IoU >= 0.80 and above every member, sizes, <= 3 s per 600 x 500 tile)
# and beats v1 on the US hold-out (us_checks.py holdout). Running it OVERWRITES resources/models/.
#
#   bash training/recipes/candidate_v2.sh [SHARED_DATA_DIR] [WORK_DIR]
#
# SHARED_DATA_DIR defaults to ../shared/data beside the repository; WORK_DIR (scratch, git-ignored) to runs/v2.
# On 2 CPU cores about 1.5 hours (21 trainings of 3-6 minutes, single-threaded two at a time would halve it);
# with a GPU add --device cuda. Steps:
#   0. the US training extras: 32 of the 40 NAIP tiles of naip_us_fields_agoro (MIT labels, public-domain
#      imagery), linked into WORK/agoro_train; every 5th tile in sorted name order (8 tiles) is the US hold-out,
#      never trained on (training/recipes/us_checks.py holdout scores it);
#   1. leave-one-tile-out cross-validation of the three members on the six contest tiles, the US extras (1 m read
#      as 2 m, 40 % of the crops) in every fold's training and never held out;
#   2. fusion of their held-out probabilities (ensemble metrics), also through the engine and ONNX;
#   3. the three members trained on the six contest tiles + the 32 US tiles with the same settings;
#   4. fp16-weight ONNX export (with a parity check) and ensemble.json;
#   5. checks: US hold-out IoU, tiling invariance on the NAIP sample, an overlay PNG of the sample.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data}
WORK=${2:-runs/v2}
PY=${PYTHON:-.venv/bin/python}
D=$DATA/mathorcup2020_cropland/train
N=$DATA/naip_us_fields_agoro

# 0. US extras without the hold-out (positions 5, 10, ..., 40 of the sorted names)
X=$WORK/agoro_train
mkdir -p "$X/images" "$X/labels"
N_ABS=$(cd "$N" && pwd)
i=0
for lab in $(ls "$N_ABS/derived/extent_masks/" | sort); do
  i=$((i + 1))
  t=${lab%.tif}
  if (( i % 5 == 0 )); then continue; fi
  ln -sf "$N_ABS/images_png/$t.png" "$X/images/$t.png"
  ln -sf "$N_ABS/images_png/$t.png.aux.xml" "$X/images/$t.png.aux.xml"
  ln -sf "$N_ABS/derived/extent_masks/$t.tif" "$X/labels/$t.tif"
done

# 1.-4. the default recipe with these members and the US extras
MEMBERS="unet_w16 linknet_mobilenet_v2 unet_mobilenet_v2" \
EXTRA_ARGS="--extra-images $X/images --extra-labels $X/labels --extra-scale 0.5 --extra-share 0.4 --scale-min 0.4" \
ENSEMBLE_NAME=cropland-default-v2 \
DESCRIPTION="Mean of three small tile-invariant CNNs (plain U-Net, LinkNet and U-Net on MobileNetV2) trained from scratch on six 2 m ZY-3 RGB tiles (MathorCup 2020) and 32 US NAIP farmland tiles read at 2 m; see MODEL_CARD.md." \
PYTHON=$PY bash training/recipes/default_ensemble.sh "$DATA" "$WORK"

# 5. checks (MODEL_CARD.md tables)
MODELS=(resources/models/unet_w16.onnx resources/models/linknet_mobilenet_v2.onnx resources/models/unet_mobilenet_v2.onnx)
$PY training/recipes/us_checks.py holdout "${MODELS[@]}" resources/models/ensemble.json --data "$N" \
    --json "$WORK/us_holdout.json"
$PY training/recipes/us_checks.py tiling "${MODELS[@]}" resources/models/ensemble.json
$PY training/recipes/us_checks.py overlay resources/models/ensemble.json --out "$WORK/overlay_naip_nd_2012.png"
