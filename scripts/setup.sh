#!/usr/bin/env bash
# Create (or update) the project's virtual environment .venv with pinned packages.
#   bash scripts/setup.sh            runtime only: the engine and the shipped ONNX models (about 30 s)
#   bash scripts/setup.sh train      + PyTorch, segmentation_models_pytorch, albumentations, onnx (training)
#   bash scripts/setup.sh cluster    runtime + dask.distributed, to run on a Dask cluster (--cluster)
#   bash scripts/setup.sh dev        train + cluster + pytest, pytest-qgis, ruff (everything the tests need)
# The venv is made from Debian's /usr/bin/python3 with --system-site-packages, so that QGIS's Python bindings
# (python3-qgis) and our packages share one interpreter; requirements/constraints.txt keeps numpy < 2, which
# QGIS 3.22's GDAL needs. The repository root is added to the venv's path, so `python -m engine` works anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
level="${1:-runtime}"
case "$level" in runtime|train|cluster|dev) ;; *) echo "usage: bash scripts/setup.sh [runtime|train|cluster|dev]" >&2; exit 2;; esac

PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
  echo "setup: $PY not found; this setup expects Debian/Ubuntu's system Python (the one QGIS uses)." >&2
  exit 1
fi
if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  echo "setup: installing python3-venv (needs root)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements/constraints.txt \
  -r "requirements/$level.txt"
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD" > "$site/cropland_extractor.pth"
.venv/bin/python -c "import numpy, onnxruntime, rasterio, shapely, cv2, pyproj, pyogrio; \
print('setup: ok (numpy', numpy.__version__ + ', onnxruntime', onnxruntime.__version__ + ', rasterio', \
rasterio.__version__ + ')')"
