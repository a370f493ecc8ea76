"""Rewrite the Deepness-readable metadata of exported ONNX models in place (graph and weights untouched).

    .venv/bin/python scripts/restamp_models.py resources/models/*.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.export import restamp_metadata


def main(paths: list[str]) -> int:
    for path in paths:
        print(f"{path}: {'updated' if restamp_metadata(path) else 'already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
