"""Rewrite the Deepness-readable metadata of exported ONNX models in place (graph and weights untouched), and
optionally write copies with a fixed input size for Deepness, which cannot use a dynamic one.

    .venv/bin/python scripts/restamp_models.py resources/models/*.onnx
    .venv/bin/python scripts/restamp_models.py --deepness-copies output/deepness resources/models/*.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.export import deepness_copy, restamp_metadata


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--deepness-copies", type=Path, metavar="DIR",
                        help="also write <name>_deepness.onnx (input fixed to the metadata's tile size) into DIR")
    args = parser.parse_args(argv)
    for path in args.models:
        print(f"{path}: {'updated' if restamp_metadata(path) else 'already up to date'}")
        if args.deepness_copies:
            print(f"  -> {deepness_copy(path, args.deepness_copies / (path.stem + '_deepness.onnx'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
