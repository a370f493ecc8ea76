#!/usr/bin/env bash
# The whole test suite: installs QGIS 3.22 from Debian packages when missing (needs root), sets up .venv with
# every pinned package, checks the code with ruff, then runs pytest (engine, training, QGIS plugin). Fails on any
# failure, and when no test is collected.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! /usr/bin/python3 -c "import qgis.core" 2>/dev/null || [ ! -x /usr/bin/qgis_process.bin ]; then
  echo "test: installing QGIS from Debian packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qgis python3-qgis xvfb >/dev/null
fi
bash scripts/setup.sh dev
.venv/bin/ruff check .
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest -q --durations=10 "$@"
