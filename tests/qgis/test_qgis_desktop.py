"""The real QGIS desktop under Xvfb: batch dialog with the report column, Results Viewer, layers, installer.

One QGIS session (tests/qgis/desktop_session.py) does everything and records what it saw; the tests below
check the parts. Skips with the reason when Xvfb or the QGIS desktop is not installed (scripts/test.sh
installs both on CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from plugin_testkit import PLUGIN_NAME, run_qgis_process, venv_site_packages

pytestmark = pytest.mark.qgis
QGIS_DESKTOP = "/usr/bin/qgis.bin"


def tiny_wheel(folder: Path, version: str = "1.0") -> Path:
    """A pure-Python wheel ``cropland_probe`` built by hand (no network, no build tools)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cropland_probe-{version}-py3-none-any.whl"
    info = f"cropland_probe-{version}.dist-info"
    files = {
        "cropland_probe/__init__.py": f'__version__ = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: cropland-probe\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            wheel.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def xvfb():
    """DISPLAY of a private Xvfb server."""
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): the desktop dialogs cannot be shown")
    if not os.path.exists(QGIS_DESKTOP):
        pytest.skip(f"{QGIS_DESKTOP} (the QGIS desktop) is not installed")
    number = next(n for n in range(91, 140) if not os.path.exists(f"/tmp/.X11-unix/X{n}")
                  and not os.path.exists(f"/tmp/.X{n}-lock"))
    server = subprocess.Popen([binary, f":{number}", "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}") and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.poll() is not None:
        pytest.skip(f"Xvfb :{number} did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def session(xvfb, plugins_dir, tiny_model, data_dir, tmp_path_factory) -> dict:
    """What the QGIS desktop session saw (see desktop_session.py)."""
    work = tmp_path_factory.mktemp("desktop")
    config = work / "config"
    proc = run_qgis_process(["plugins", "enable", PLUGIN_NAME], config, plugins_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = work / "elsewhere"
    (elsewhere / "cropland_probe").mkdir(parents=True)
    setup = {"rasters": [str(data_dir / "rgb_a.tif"), str(data_dir / "rgb_b.tif")], "model": str(tiny_model),
             "out": str(work / "out"), "wheels": str(tiny_wheel(work / "wheels").parent),
             "private": str(work / "private"), "elsewhere": str(elsewhere)}
    if os.environ.get("CROPLAND_SCREENSHOTS"):
        setup["screenshot"] = os.environ["CROPLAND_SCREENSHOTS"]
    (work / "out").mkdir()
    result = work / "seen.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QT_QPA_PLATFORM", "VIRTUAL_ENV")}
    env.update(DISPLAY=xvfb, QGIS_CUSTOM_CONFIG_PATH=str(config), QGIS_PLUGINPATH=str(plugins_dir),
               PYTHONPATH=venv_site_packages(), CROPLAND_DESKTOP_SETUP=json.dumps(setup),
               CROPLAND_DESKTOP_RESULT=str(result), CROPLAND_EXTRACTOR_PACKAGES=str(work / "private"),
               PYTHONUSERBASE=str(work / "userbase"))
    script = Path(__file__).with_name("desktop_session.py")
    try:
        proc = subprocess.run([QGIS_DESKTOP, "--noversioncheck", "--nologo", "--code", str(script)], env=env,
                              capture_output=True, text=True, timeout=240, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the QGIS desktop did not finish in 240 s: {exc.stdout!s:.2000} {exc.stderr!s:.2000}")
    assert result.exists(), f"QGIS exited {proc.returncode} without a result:\n{proc.stdout[-3000:]}\n" \
                            f"{proc.stderr[-3000:]}"
    seen = json.loads(result.read_text(encoding="utf-8"))
    seen["userbase"] = str(work / "userbase")
    return seen


def test_desktop_session_had_no_python_error(session):
    assert session["plugin_loaded"]
    assert session["errors"] == []


def test_batch_with_report_column_finishes_with_a_summary(session):
    """Item 1: no TypeError from addResult, Cancel disabled again, a summary with one row per raster."""
    assert session["cancel_enabled_after"] is False
    names = [r["name"] for r in session["results"]]
    assert names == ["rgb_a — report", "rgb_b — report", "Extract Cropland — batch summary"]
    assert all(r["timestamp"] for r in session["results"])
    summary = session["summary"]
    assert '<meta charset="utf-8">' in summary and "Cropland area (m²)" in summary and "mÂ²" not in summary
    table = summary.split("<table>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 3 and "rgb_a" in table and "rgb_b" in table
    assert "rgb_a_report.html" in table


def test_results_viewer_lists_reports_by_input_name(session):
    """Item 3: the Results Viewer dock shows "rgb_a — report [time]", not "Report [0]"."""
    shown = session["results_viewer"]
    assert any(text.startswith("rgb_a — report [") for text in shown), shown
    assert any(text.startswith("Extract Cropland — batch summary [") for text in shown), shown
    assert not any(text.startswith("Report") for text in shown)


def test_batch_layers_are_named_after_inputs_without_false_warnings(session):
    """Items 2 and 3: each row's fields layer named after its raster; the optional rasters left empty are not
    reported as "not correctly generated"."""
    assert session["layers"] == ["rgb_b — fields", "rgb_a — fields"]
    assert "Batch execution completed" in session["log"] and "OUTPUT_MASK" in session["log"]
    assert "not correctly generated" not in session["log"]


def test_installer_uses_the_private_folder_and_loads_without_restart(session):
    """Item 4: pip --target into the plugin's folder (not --user), progress to 100 %, loaded at once."""
    install = session["install"]
    args = install["args"]
    assert "--target" in args and args[args.index("--target") + 1].endswith("private") and "--user" not in args
    assert install["exit_code"] == 0 and install["progress"] == 100
    assert install["restart_needed"] is False and "no restart needed" in install["status"]
    assert install["probe_version"] == "1.0" and "/private/cropland_probe/" in install["probe_file"]
    assert install["user_site_has_probe"] is False and not Path(session["userbase"]).exists()


def test_installer_says_when_a_restart_is_needed(session):
    again = session["install_again"]
    assert again["exit_code"] == 0 and again["restart_needed"] is True
    assert "must be restarted" in again["status"] and "cropland_probe" in again["status"]
