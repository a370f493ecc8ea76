"""Python packages the plugin needs, whether QGIS's Python has them, and the pip command that installs them.

Nothing heavy is imported at module import time: QGIS must start and list the algorithms even when none of
these packages is installed. :func:`require` is called at the top of ``processAlgorithm``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsProcessingException

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PLUGIN_ROOT / "requirements"

# import name -> pip distribution name
RUNTIME_MODULES = {
    "numpy": "numpy",
    "onnxruntime": "onnxruntime",
    "rasterio": "rasterio",
    "shapely": "shapely",
    "cv2": "opencv-python-headless",
    "pyproj": "pyproj",
    "pyogrio": "pyogrio",
    "tqdm": "tqdm",
}
# Evaluation's boundary F1 also needs scipy.
EVALUATION_MODULES = {**RUNTIME_MODULES, "scipy": "scipy"}
TRAINING_MODULES = {
    **RUNTIME_MODULES,
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "albumentations": "albumentations",
}
REQUIREMENT_FILES = {"runtime": "runtime.txt", "train": "train.txt", "gpu": "gpu.txt"}


@dataclass
class Missing:
    """A package that cannot be imported: its import name, pip name and the error seen."""

    module: str
    distribution: str
    error: str


def python_executable() -> str:
    """The Python interpreter QGIS runs on.

    Inside QGIS ``sys.executable`` is the QGIS program, or whatever ``python3`` comes first on PATH (a pyenv
    shim, another Python): only an interpreter inside this Python's own prefix is trusted.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefixes = {Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    exe = Path(sys.executable) if sys.executable else None
    if exe and exe.name.lower().startswith("python") and any(p in exe.parents for p in prefixes):
        return str(exe)
    names = ["python.exe", "python3.exe"] if os.name == "nt" else ["python3", f"python{version}", "python"]
    # Linux packages: exec_prefix/bin; OSGeo4W: exec_prefix (apps/Python3x); macOS QGIS.app: the framework's bin.
    folders = [Path(sys.exec_prefix) / "bin", Path(sys.exec_prefix), Path(sys.base_exec_prefix) / "bin"]
    if exe:
        folders += [exe.parent / "bin", exe.parent]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if (candidate.is_file() and os.access(candidate, os.X_OK)
                    and (os.name == "nt" or Path(os.path.realpath(candidate)).name.startswith(f"python{version}"))):
                return str(candidate)
    return f"python{version}" if os.name != "nt" else "python"


def _quote(arg: str) -> str:
    if re.fullmatch(r"[\w.=-]+", arg):
        return arg
    if os.name != "nt" and any(c in arg for c in "\"$`\\!"):
        return shlex.quote(arg)
    return f'"{arg}"'


ENV_FOLDER = "CROPLAND_EXTRACTOR_PACKAGES"


def private_folder() -> Path:
    """The folder the plugin installs its Python packages into, private to it and to this QGIS profile.

    ``<QGIS profile>/python/cropland_extractor_packages/py3.11`` (one per Python version, since binary wheels
    are), or the folder named by the ``CROPLAND_EXTRACTOR_PACKAGES`` environment variable. Nothing but this
    plugin adds it to ``sys.path`` (:func:`activate`), so other Python programs never see these packages, and it
    survives plugin updates (QGIS replaces the plugin's own folder).
    """
    if os.environ.get(ENV_FOLDER):
        return Path(os.environ[ENV_FOLDER])
    from qgis.core import QgsApplication

    profile = Path(QgsApplication.qgisSettingsDirPath() or Path.home() / ".cropland_extractor")
    return profile / "python" / "cropland_extractor_packages" / f"py{sys.version_info.major}.{sys.version_info.minor}"


def activate(folder: Path | None = None) -> bool:
    """Put the private package folder first on ``sys.path`` (once) when it exists; return whether it is on it.

    Called when the plugin loads and before each run, so packages installed by another QGIS session, or just
    now by the installer, are found without a restart.
    """
    folder = Path(folder or private_folder())
    if not folder.is_dir():
        return False
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()
    return True


def install_args(kind: str = "runtime", python: str | None = None, target: Path | None = None,
                 requirements: list[str] | None = None, extra: list[str] | None = None) -> list[str]:
    """Argument list of the pip command that installs the ``kind`` requirements ("runtime", "train", "gpu")
    into the plugin's private folder (:func:`private_folder`, or ``target``).

    ``--target`` never touches the system's or the user's site-packages (pip also skips the PEP 668
    "externally managed" refusal for it), so numpy or pyproj installed here cannot override the system's for
    other Python programs. ``requirements`` replaces the requirement file (tests install one small package);
    ``extra`` is appended (e.g. ``--no-index --find-links DIR``).
    """
    args = [python or python_executable(), "-m", "pip", "install", "--upgrade", "--disable-pip-version-check",
            "--target", str(target or private_folder())]
    args += ["-c", str(REQUIREMENTS / "constraints.txt")]
    args += list(requirements) if requirements else ["-r", str(REQUIREMENTS / REQUIREMENT_FILES[kind])]
    return args + list(extra or [])


def install_command(kind: str = "runtime", python: str | None = None) -> str:
    """The pip command of :func:`install_args` as one line to paste into a terminal.

    For "gpu", onnxruntime-gpu replaces onnxruntime (both install the same package): a CPU build installed
    outside the private folder is uninstalled first, and ``--upgrade`` replaces the one inside it.
    """
    command = " ".join(_quote(a) for a in install_args(kind, python))
    if kind == "gpu":
        uninstall = [python or python_executable(), "-m", "pip", "uninstall", "-y", "onnxruntime"]
        command = " ".join(_quote(a) for a in uninstall) + " && " + command
    return command


def loaded_elsewhere(modules: dict[str, str] | None = None, folder: Path | None = None) -> list[str]:
    """Packages already imported in this QGIS from outside the private folder that the folder now also holds:
    the new copies only load after a restart (e.g. "numpy 1.24.2")."""
    folder = Path(folder or private_folder()).resolve()
    stale = []
    for module in (modules or RUNTIME_MODULES):
        loaded = sys.modules.get(module)
        where = getattr(loaded, "__file__", None) if loaded is not None else None
        if where and (folder / module).is_dir() and folder not in Path(where).resolve().parents:
            stale.append(f"{module} {getattr(loaded, '__version__', '')}".strip())
    return stale


def after_install(modules: dict[str, str] | None = None, folder: Path | None = None) -> tuple[bool, str]:
    """Load what was just installed without a restart when possible.

    Returns (whether a restart is needed, a sentence for the user).
    """
    activate(folder)
    stale = loaded_elsewhere(modules, folder)
    if stale:
        return True, (f"Installed, but QGIS must be restarted: {', '.join(stale)} was already loaded from "
                      "elsewhere and the new copy only loads in a new QGIS session.")
    missing = missing_modules(modules)
    if missing:
        return True, ("Installed, but these packages still do not import: "
                      f"{', '.join(m.distribution + ' (' + m.error + ')' for m in missing)}. Restart QGIS and try "
                      "again; if it persists, see the installer's output.")
    return False, "Installed and loaded: Cropland Extractor can run now, no restart needed."


def pip_available() -> bool:
    """Whether this Python has pip (Debian's system Python needs the python3-pip package)."""
    return importlib.util.find_spec("pip") is not None


def missing_modules(modules: dict[str, str] | None = None, try_import: bool = True) -> list[Missing]:
    """Packages of ``modules`` (default: the runtime set) that cannot be imported.

    ``try_import=False`` only looks for the packages (cheap, for QGIS start-up); ``True`` imports them, which
    also catches broken installs (e.g. a NumPy 2 wheel beside QGIS's NumPy-1 GDAL).
    """
    found: list[Missing] = []
    for module, dist in (modules or RUNTIME_MODULES).items():
        try:
            if try_import:
                import_native(module)
            elif sys.modules.get(module, ...) is None or importlib.util.find_spec(module) is None:
                raise ImportError(f"No module named '{module}'")
        except Exception as exc:  # a broken package raises anything, not only ImportError
            found.append(Missing(module, dist, f"{type(exc).__name__}: {exc}".splitlines()[0]))
    return found


# Binary wheels that bundle their own GDAL, GEOS, PROJ, libtiff... (renamed files, same symbol names).
NATIVE_PACKAGES = ("shapely", "rasterio", "pyogrio", "pyproj", "cv2", "onnxruntime")


def import_native(module: str):
    """Import ``module``; for the binary wheels of :data:`NATIVE_PACKAGES`, bind them to their own libraries.

    QGIS Desktop and qgis_process on Linux are linked against the system GDAL, GEOS and PROJ, so those
    libraries sit in the process's global symbol scope, and a wheel's extension modules loaded the default way
    resolve GDAL/GEOS/PROJ calls to QGIS's copies instead of the ones they were built with (shapely 2 then
    fails with "WKB output dimension must be 2 or 3" and the heap gets corrupted). Loading every extension
    module of those packages with ``RTLD_DEEPBIND`` makes each look up its bundled libraries first.
    Packages imported before (by another plugin) are left as they are.
    """
    top = module.split(".")[0]
    deep = getattr(os, "RTLD_DEEPBIND", 0)
    if top not in NATIVE_PACKAGES or top in sys.modules or not deep or not sys.platform.startswith("linux"):
        return importlib.import_module(module)
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_NOW | deep)
    try:
        package = importlib.import_module(top)
        for name in _extension_modules(package):
            # An optional part of the package (one needing a missing extra) may not import.
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        return importlib.import_module(module)
    finally:
        sys.setdlopenflags(flags)


def library_versions() -> str:
    """One line naming the GDAL, GEOS and PROJ the imported wheels actually run with (for the log)."""
    parts = []
    for module, attribute, label in (("rasterio", "__gdal_version__", "rasterio GDAL"),
                                     ("shapely", "geos_version_string", "shapely GEOS"),
                                     ("pyproj", "proj_version_str", "pyproj PROJ"),
                                     ("onnxruntime", "__version__", "onnxruntime")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            parts.append(f"{label} {getattr(loaded, attribute, '?')}")
    return ", ".join(parts)


def _extension_modules(package) -> list[str]:
    """Dotted names of the compiled extension modules inside ``package`` (not its tests)."""
    import importlib.machinery

    folder = Path(getattr(package, "__file__", "") or "").parent
    if not getattr(package, "__path__", None) or not folder.is_dir():
        return []
    names = []
    for path in sorted(folder.rglob("*")):
        suffix = next((s for s in importlib.machinery.EXTENSION_SUFFIXES if path.name.endswith(s)), None)
        relative = path.relative_to(folder).parts
        if suffix and "tests" not in relative and all(p.isidentifier() for p in relative[:-1]):
            stem = path.name[: -len(suffix)]
            if stem.isidentifier():
                names.append(".".join((package.__name__, *relative[:-1], stem)))
    return names


def missing_message(missing: list[Missing], kind: str = "runtime") -> str:
    """User-ready text naming what is missing and the exact command that installs it into this Python."""
    names = ", ".join(f"{m.distribution} ({m.error})" for m in missing)
    lines = [
        f"Cropland Extractor needs Python packages that QGIS's Python ({python_executable()}, "
        f"Python {sys.version.split()[0]}) cannot import: {names}.",
        "",
        f"Install them into the plugin's own folder ({private_folder()}) with Plugins > Cropland Extractor > "
        "Install Python Dependencies…, or by running this command in a terminal:",
        "",
        f"    {install_command(kind)}",
    ]
    if not pip_available():
        lines += ["", "This Python has no pip yet: install it first (Debian/Ubuntu: sudo apt install python3-pip; "
                  f"elsewhere: {_quote(python_executable())} -m ensurepip --user)."]
    lines += ["", "Packages installed there are loaded without a restart, unless an older copy was already loaded "
              "(the installer then says so)."]
    return "\n".join(lines)


def require(kind: str = "runtime") -> None:
    """Raise :class:`QgsProcessingException` with the install command when a package for ``kind`` is missing.

    ``kind``: "runtime" (extraction, ratio), "evaluate" (runtime + scipy) or "train" (runtime + PyTorch...).
    """
    modules = {"train": TRAINING_MODULES, "evaluate": EVALUATION_MODULES}.get(kind, RUNTIME_MODULES)
    activate()
    missing = missing_modules(modules, try_import=kind != "train")  # importing torch only to check is too slow
    if missing:
        raise QgsProcessingException(missing_message(missing, "train" if kind == "train" else "runtime"))
    if kind != "train":
        check_geos()


def check_geos() -> None:
    """Refuse to run when shapely calls QGIS's GEOS instead of its own (see :func:`import_native`).

    That happens when another plugin imported shapely before this one could bind it to its bundled GEOS.
    """
    shapely = sys.modules.get("shapely")
    if shapely is None:
        return
    try:
        shapely.to_wkb(shapely.Point(0.0, 0.0))
    except Exception as exc:
        raise QgsProcessingException(
            f"shapely {shapely.__version__} was loaded before Cropland Extractor (by another plugin or script) "
            f"and now calls QGIS's own GEOS library instead of its bundled GEOS {shapely.geos_version_string} "
            f"({exc}). Restart QGIS and run Cropland Extractor before the tool that loads shapely, or install "
            "a shapely built against the system GEOS (pip install --no-binary shapely shapely)."
        ) from exc


def import_engine(submodule: str):
    """Import ``engine.<submodule>`` of this plugin; a missing package becomes a QgsProcessingException."""
    root = __package__.rpartition(".")[0] if __package__ else ""
    name = f"{root}.engine.{submodule}" if root else f"engine.{submodule}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = (exc.name or "").split(".")[0]
        if top and top not in (root.split(".")[0] if root else "", "engine"):
            distribution = RUNTIME_MODULES.get(top, top)
            raise QgsProcessingException(missing_message([Missing(top, distribution, str(exc))])) from exc
        raise
