"""The README's quick start stays true and leaves the working tree clean."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import REPO


def quick_start_command() -> str:
    """The engine command of the README's quick start (the first fenced bash block)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return next(line for line in block.splitlines() if "-m engine extract" in line)


def test_quick_start_writes_its_outputs_to_a_git_ignored_folder():
    command = quick_start_command()
    outputs = re.findall(r"--(?:output|report|mask|probability) (\S+)", command)
    assert len(outputs) >= 2, command
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in outputs:
        assert "/" in path, f"{path} would land in the repository root"
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{path} (README quick start output) is not git-ignored"
