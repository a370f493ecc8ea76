"""The docs name what exists: the README's module list and docs/ARCHITECTURE.md's module map."""

from __future__ import annotations

import re

from helpers import REPO

FOLDERS = ("engine", "training", "training/models", "plugin", "plugin/algorithms", "bench")


def _modules(folder: str) -> list[str]:
    return sorted(p.stem for p in (REPO / folder).glob("*.py") if p.stem != "__init__")


def test_readme_module_list_covers_every_module():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Development", 1)[1].split("```", 2)[1]
    words = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", block))
    missing = {folder: [m for m in _modules(folder) if m not in words] for folder in FOLDERS}
    assert {f: m for f, m in missing.items() if m} == {}


def test_architecture_module_map_covers_every_engine_module():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"engine/(\w+)\.py", text))
    assert [m for m in _modules("engine") if m not in named] == []
