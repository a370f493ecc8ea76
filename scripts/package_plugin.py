"""Build the installable QGIS plugin zip: ``python scripts/package_plugin.py [--out dist/]``.

Writes ``<out>/cropland_extractor-<version>.zip`` with one top folder ``cropland_extractor/`` holding what QGIS
and the algorithms need: metadata.txt, __init__.py, plugin/, engine/, training/ (for Train Cropland Model),
resources/ (models, samples, icons, styles), requirements/ (runtime, train, gpu, constraints: the install
command names them), docs/PLUGIN.md (the algorithms' help), LICENSE and README when present. Tests, benchmarks,
scripts, CI files, virtual environments, caches and screenshots stay out. The zip is reproducible (sorted
entries, fixed timestamps). Install it with QGIS's Plugins > Manage and Install Plugins > Install from ZIP.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "cropland_extractor"
# (path relative to the repository, what to take): "file", or a folder with the file suffixes to take
# (None = every file).
CONTENT: list[tuple[str, tuple[str, ...] | str | None]] = [
    ("metadata.txt", "file"),
    ("__init__.py", "file"),
    ("plugin", (".py",)),
    ("engine", (".py", ".json")),
    ("training", (".py", ".json")),
    ("resources", None),
    ("requirements/runtime.txt", "file"),
    ("requirements/train.txt", "file"),
    ("requirements/gpu.txt", "file"),
    ("requirements/constraints.txt", "file"),
    ("docs/PLUGIN.md", "file"),
]
OPTIONAL = ("LICENSE", "LICENSE.txt", "LICENSE.md", "README.md", "README.txt", "CHANGELOG.md")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".git", ".venv", "tests"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".part", ".tmp", ".orig", ".rej", "~", ".aux.xml")  # .aux.xml: GDAL/QGIS stats
SKIP_NAMES = {".DS_Store", "Thumbs.db", ".gitignore", ".gitkeep"}
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email")


def read_metadata(root: Path = ROOT) -> configparser.SectionProxy:
    """The [general] section of metadata.txt; exits with a message when a required field is missing."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / "metadata.txt", encoding="utf-8")
    if not parser.has_section("general"):
        sys.exit(f"error: {root / 'metadata.txt'} has no [general] section.")
    general = parser["general"]
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    if missing:
        sys.exit(f"error: metadata.txt lacks {', '.join(missing)}.")
    return general


def _skipped(path: Path) -> bool:
    return (bool(SKIP_PARTS.intersection(path.parts)) or path.name in SKIP_NAMES
            or path.name.endswith(SKIP_SUFFIXES))


def collect(root: Path = ROOT) -> list[Path]:
    """Files of the plugin, relative to ``root``, sorted."""
    files: set[Path] = set()
    for name, rule in CONTENT:
        path = root / name
        if rule == "file":
            if not path.is_file():
                sys.exit(f"error: {path} is missing.")
            files.add(Path(name))
            continue
        if not path.is_dir():
            sys.exit(f"error: folder {path} is missing.")
        for file in path.rglob("*"):
            relative = file.relative_to(root)
            if file.is_file() and not _skipped(relative) and (rule is None or file.suffix in rule):
                files.add(relative)
    files.update(Path(name) for name in OPTIONAL if (root / name).is_file())
    return sorted(files, key=lambda p: p.as_posix())


def build(out_dir: Path, root: Path = ROOT) -> Path:
    """Write the zip into ``out_dir`` and return its path."""
    version = read_metadata(root)["version"].strip()
    files = collect(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_NAME}-{version}.zip"
    partial = target.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for folder in sorted({p.parent for f in files for p in [f, *f.parents] if p != Path(".")} | {Path(".")},
                             key=lambda p: p.as_posix()):
            name = PLUGIN_NAME if folder == Path(".") else f"{PLUGIN_NAME}/{folder.as_posix()}"
            info = zipfile.ZipInfo(f"{name}/", FIXED_TIME)
            info.external_attr = (0o40755 << 16) | 0x10
            archive.writestr(info, b"")
        for relative in files:
            info = zipfile.ZipInfo(f"{PLUGIN_NAME}/{relative.as_posix()}", FIXED_TIME)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / relative).read_bytes())
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    target = build(args.out)
    with zipfile.ZipFile(target) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    size = target.stat().st_size
    print(f"wrote {target} ({len(names)} files, {size / 2**20:.1f} MiB)")
    if f"{PLUGIN_NAME}/resources/models/ensemble.json" not in names:
        print("warning: resources/models/ensemble.json is absent: Extract Cropland then has no default model "
              "and users must choose an .onnx file.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
