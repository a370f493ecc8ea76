"""Train Cropland Model: the subprocess, its progress, cancel and errors (with a stand-in training module; no
training happens in these tests), and the command line matching the real ``python -m training``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from plugin_testkit import REPO

pytestmark = pytest.mark.qgis

FAKE_MAIN = textwrap.dedent('''
    """Stand-in for ``python -m training``: prints what fit/export print and writes their files."""
    import os, sys, time
    args = sys.argv[1:]
    def value(flag):
        return args[args.index(flag) + 1]
    with open(os.environ["FAKE_PID_FILE"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    if os.environ.get("FAKE_FAIL"):
        print("error: tests/images: no image/label pairs found.", file=sys.stderr)
        sys.exit(2)
    if args[0] == "fit":
        out = value("--out")
        for epoch in range(1, int(value("--epochs")) + 1):
            print(f"epoch {epoch} step {epoch * 50} loss=0.5000 ({epoch} s)", flush=True)
            if os.environ.get("FAKE_SLEEP"):
                time.sleep(60)
        open(os.path.join(out, "best.pt"), "wb").close()
        print(f"done: best epoch 1; {out}/best.pt")
    elif args[0] == "export":
        with open(value("--onnx"), "wb") as f:
            f.write(b"onnx")
        print(f"wrote {value('--onnx')}")
''')


@pytest.fixture
def fake_training(tmp_path, monkeypatch):
    """Make the algorithm run ``python -m faketraining`` (on PYTHONPATH) instead of the real trainer."""
    from cropland_extractor.plugin import deps
    from cropland_extractor.plugin.algorithms import train

    package = tmp_path / "fake" / "faketraining"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_MAIN)
    monkeypatch.setattr(train, "TRAINING_MODULE", "faketraining")
    monkeypatch.setattr(deps, "require", lambda kind="runtime": None)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    monkeypatch.setenv("FAKE_PID_FILE", str(tmp_path / "pids.txt"))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    return tmp_path


def _params(folder, epochs=3):
    return {"IMAGES": str(folder / "images"), "LABELS": str(folder / "labels"), "ARCH": "unet", "EPOCHS": epochs,
            "DEVICE": 1, "OUTPUT_FOLDER": str(folder / "run"), "OUTPUT_MODEL": str(folder / "model.onnx")}


def _feedback(cancel_at_first_progress=False):
    from qgis.core import QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.values, feedback.console = [], []

    def on_progress(value):
        feedback.values.append(value)
        if cancel_at_first_progress and value > 0:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    return feedback


def test_train_streams_progress_and_exports(provider, fake_training):
    import processing

    feedback = _feedback()
    result = processing.run("cropland:trainmodel", _params(fake_training), feedback=feedback)
    assert result["OUTPUT_MODEL"] == str(fake_training / "model.onnx")
    assert (fake_training / "model.onnx").read_bytes() == b"onnx"
    assert (fake_training / "run" / "best.pt").exists()
    assert [round(v) for v in feedback.values if v < 100][:3] == [30, 60, 90]
    assert feedback.values[-1] == 100


def test_train_cancel_kills_the_subprocess(provider, fake_training, monkeypatch):
    import processing
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("FAKE_SLEEP", "1")
    start = time.monotonic()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("cropland:trainmodel", _params(fake_training), feedback=_feedback(True))
    assert time.monotonic() - start < 20
    pid = int((fake_training / "pids.txt").read_text().split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (fake_training / "model.onnx").exists()


def test_train_failure_shows_the_trainers_error(provider, fake_training, monkeypatch):
    import processing
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(QgsProcessingException, match=r"Training failed \(exit status 2\):\nerror: .*no image/label"):
        processing.run("cropland:trainmodel", _params(fake_training))


def test_train_refuses_a_missing_folder(provider, fake_training):
    import processing
    from qgis.core import QgsProcessingException

    params = _params(fake_training)
    params["LABELS"] = str(fake_training / "nowhere")
    with pytest.raises(QgsProcessingException, match=r"LABELS|nowhere"):
        processing.run("cropland:trainmodel", params)


def test_runner_streams_lines_in_order():
    from cropland_extractor.plugin.runner import run_streaming

    seen = []
    status, tail = run_streaming([sys.executable, "-c", "import sys\nfor i in range(5): print(i)\nsys.exit(3)"],
                                 seen.append, lambda: False)
    assert status == 3 and seen == ["0", "1", "2", "3", "4"] and tail == seen


@pytest.mark.slow
def test_the_command_line_matches_the_real_training_cli():
    """Every option the algorithm passes exists in ``python -m training fit/export --help``."""
    if not (REPO / "training" / "__main__.py").exists():
        pytest.skip("training/ is absent")
    pytest.importorskip("torch")
    script = ("import argparse\nfrom training.cli import build_parser\n"
              "sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))\n"
              "print(sub.choices['fit'].format_help() + '=====' + sub.choices['export'].format_help())")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    fit_help, export_help = proc.stdout.split("=====")
    helps = {"fit": fit_help, "export": export_help}
    for option in ("--images", "--labels", "--arch", "--out", "--epochs", "--steps-per-epoch", "--tile",
                   "--batch-size", "--val-fraction", "--device", "--bands", "--resolution-m"):
        assert option in helps["fit"], option
    assert "--onnx" in helps["export"] and "checkpoint" in helps["export"]
    source = (REPO / "plugin" / "algorithms" / "train.py").read_text(encoding="utf-8")
    assert '"best.pt"' in source and "best.pt" in helps["export"]
