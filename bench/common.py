"""Shared pieces of the benchmarks: machine facts, idle checks, real-tile mosaics, child processes, JSON.

Mosaics are built from real tiles (the contest's 600 x 500 RGB tiles and their labels, or the shipped NAIP
sample), each tile flipped at random, into a tiled, deflate-compressed GeoTIFF under ``runs/bench/data``
(git-ignored; never commit data). They carry a projected CRS (UTM 50N) and 2 m pixels, so areas are in m².
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RUNS = Path(os.environ.get("CROPLAND_BENCH_RUNS", REPO / "runs" / "bench"))  # results, mosaics, logs (git-ignored)
DATA = RUNS / "data"
SHARED = Path(os.environ.get("CROPLAND_SHARED_DATA", REPO.parent / "shared" / "data"))
CONTEST = SHARED / "mathorcup2020_cropland" / "train"
CONTEST_TILES = ("Data1", "Data2", "Data4", "Data5", "Data7", "Data8")
NAIP_SAMPLE = REPO / "resources" / "samples" / "naip_nd_2012.tif"
DEFAULT_ENSEMBLE = REPO / "resources" / "models" / "ensemble.json"
MOSAIC_CRS = "EPSG:32650"
MOSAIC_PIXEL_M = 2.0
BUSY_WORDS = ("-m training", "pytest", "qgis_process", "bench.")


# ---------------------------------------------------------------- machine facts and idleness


def _cpu_model() -> dict:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "flags") and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    return {"model_name": info.get("model name", platform.processor()), "family": info.get("cpu family"),
            "model": info.get("model"), "flags": [f for f in wanted if f in flags]}


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _versions() -> dict:
    """Package versions from their metadata, without importing them (torch alone would add ~0.5 GB of RSS)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnxruntime", "onnxruntime-gpu", "torch", "rasterio", "shapely", "opencv-python-headless",
                 "pyogrio"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return out


def _git() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "engine_dirty": bool(git("status", "--porcelain", "--", "engine"))}


def gpu_name() -> str | None:
    """Name of the first NVIDIA GPU (from nvidia-smi, so that torch is not imported here), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def busy_processes() -> list[str]:
    """Command lines of other processes that would disturb a timing (training, pytest, QGIS, other benches)."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and "python" in cmd and any(w in cmd for w in BUSY_WORDS):
            found.append(f"{entry.name}: {cmd[:160]}")
    return found


def idle_state(max_load: float = 0.5) -> dict:
    """Load averages, disturbing processes and whether the machine counts as idle (load1 < max_load, none busy)."""
    load = os.getloadavg()
    busy = busy_processes()
    return {"loadavg": [round(v, 2) for v in load], "busy": busy, "max_load": max_load,
            "idle": load[0] < max_load and not busy}


def require_idle(max_load: float, wait_s: float = 0.0) -> dict:
    """Wait up to ``wait_s`` seconds for an idle machine; exit with a message when it does not become idle."""
    deadline = time.monotonic() + wait_s
    while True:
        state = idle_state(max_load)
        if state["idle"]:
            return state
        if time.monotonic() >= deadline:
            sys.exit(f"machine not idle (load {state['loadavg']}, busy: {state['busy'] or 'none'}); timings would "
                     "be invalid. Wait, or pass --no-idle-check to run anyway (results are then marked not idle).")
        time.sleep(15)


def machine_facts(idle: dict | None = None) -> dict:
    """CPU, cores, RAM, GPU, load, library versions, git commit and date, for every result file."""
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _mem_total_gib(),
        "gpu": gpu_name(),
        "load_before": idle or idle_state(),
        "versions": _versions(),
        "git": _git(),
    }


def add_idle_args(parser) -> None:
    """--max-load, --wait-idle and --no-idle-check."""
    parser.add_argument("--max-load", type=float, default=0.5, help="1-minute load average counted as idle")
    parser.add_argument("--wait-idle", type=float, default=0.0, help="wait up to this many seconds for idleness")
    parser.add_argument("--no-idle-check", action="store_true",
                        help="run even when the machine is busy (smoke runs; the result is marked not idle)")


def check_idle_from_args(args) -> dict:
    """Apply the idle arguments: returns the idle state recorded with the results."""
    if args.no_idle_check:
        return idle_state(args.max_load)
    return require_idle(args.max_load, args.wait_idle)


def add_ort_args(parser) -> None:
    """--ort-arena / --ort-spinning: what-if switches for ONNX Runtime session options."""
    parser.add_argument("--ort-arena", choices=("on", "off"), default="on",
                        help="ONNX Runtime CPU memory arena (on = the engine's default); 'off' tries a proposed change")
    parser.add_argument("--ort-spinning", choices=("on", "off"), default="off",
                        help="ONNX Runtime intra-op thread spinning on the CPU (off = the engine's default); 'on' "
                             "tries ONNX Runtime's own default")


def patch_ort(arena: str = "on", spinning: str = "off") -> None:
    """Make every ``onnxruntime.SessionOptions()`` the engine creates use these settings (experiments only)."""
    if arena == "on" and spinning == "off":
        return
    import onnxruntime as ort

    base = ort.SessionOptions

    class Patched(base):
        def __init__(self) -> None:
            super().__init__()
            if arena == "off":
                self.enable_cpu_mem_arena = False

        def add_session_config_entry(self, key: str, value: str) -> None:
            if key == "session.intra_op.allow_spinning" and spinning == "on":
                value = "1"
            super().add_session_config_entry(key, value)

    ort.SessionOptions = Patched


def add_device_args(parser, backend_default: str = "onnx") -> None:
    """--device, --backend and --threads, the same on the CPU machine and on the GPU machine."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto = CUDA when usable, else CPU")
    parser.add_argument("--backend", choices=("onnx", "torch"), default=backend_default,
                        help="onnx = ONNX Runtime on .onnx files; torch = PyTorch on training checkpoints (.pt)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all cores)")


# ---------------------------------------------------------------- files


def write_json(path: str | Path, data) -> Path:
    """Write ``data`` as indented JSON (creating folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def ensemble_members(ensemble_json: Path) -> list[Path]:
    """Member files of an ``ensemble.json``, as absolute paths."""
    spec = json.loads(Path(ensemble_json).read_text(encoding="utf-8"))
    return [(Path(ensemble_json).parent / m["path"]).resolve() for m in spec["members"]]


def checkpoint_for(onnx_path: Path, runs: Path = REPO / "runs" / "final") -> Path | None:
    """The training checkpoint an exported member came from: ``runs/final/<metadata name>/last.pt`` if present."""
    from engine.backends import OnnxMember

    meta = OnnxMember(onnx_path, device="cpu", threads=1).meta
    for name in (meta.name, Path(onnx_path).stem):
        ckpt = runs / name / "last.pt"
        if ckpt.is_file():
            return ckpt
    return None


# ---------------------------------------------------------------- mosaics of real tiles


def mosaic_side(mpx: float) -> int:
    """Edge in px of a square mosaic of ``mpx`` "megapixels" counted as 2^20 px (1 -> 1024, 256 -> 16384)."""
    return round(1024 * math.sqrt(mpx))


def _contest_tiles(kind: str) -> list[np.ndarray]:
    import rasterio

    out = []
    for name in CONTEST_TILES:
        path = CONTEST / ("images" if kind == "image" else "labels") / (
            f"{name}.tif" if kind == "image" else f"{name}_reference.tif")
        if not path.is_file():
            raise SystemExit(f"missing contest tile {path}; set CROPLAND_SHARED_DATA to the shared data folder")
        with rasterio.open(path) as ds:
            a = ds.read()
        out.append(np.clip(a, 0, 255).astype(np.uint8) if kind == "image" else (a[:1] == 1).astype(np.uint8))
    return out


def _naip_tiles() -> list[np.ndarray]:
    import rasterio

    with rasterio.open(NAIP_SAMPLE) as ds:
        return [ds.read()]


def build_mosaic(out: str | Path, side: int, kind: str = "image", source: str = "contest", seed: int = 0,
                 gap: int = 0, log=print) -> Path:
    """Write (or reuse) a ``side`` x ``side`` mosaic of real tiles as a tiled, deflate GeoTIFF.

    Args:
        kind: ``"image"`` (uint8 bands of the source) or ``"label"`` (uint8 0/1 cropland mask; contest only).
        source: ``"contest"`` (the six 600 x 500 tiles, 2 m) or ``"naip"`` (the shipped 934 x 723 NAIP sample, 4
            bands); tiles are drawn at random with random flips; the same ``seed`` gives the same arrangement, so
            the contest label mosaic is the truth of the image mosaic.
        gap: background px drawn around each tile of a label mosaic (``gap // 2`` on each side: roads between
            tiles, so fields do not merge across tiles into one raster-wide component).
    """
    import rasterio
    from affine import Affine

    out = Path(out)
    recipe = f"kind={kind} source={source} seed={seed} gap={gap} side={side} v1"
    if out.is_file():
        with rasterio.open(out) as ds:
            if ds.tags().get("bench_mosaic") == recipe:
                return out
    if kind == "label" and source != "contest":
        raise SystemExit("label mosaics are built from the contest labels only")
    tiles = _contest_tiles(kind) if source == "contest" else _naip_tiles()
    bands, th, tw = tiles[0].shape
    rng = np.random.default_rng(seed)
    nrows, ncols = math.ceil(side / th), math.ceil(side / tw)
    choice = rng.integers(len(tiles), size=(nrows, ncols))
    flips = rng.integers(4, size=(nrows, ncols))
    half = gap // 2

    def tile_at(i: int, j: int) -> np.ndarray:
        t = tiles[choice[i, j]]
        if flips[i, j] & 1:
            t = t[:, :, ::-1]
        if flips[i, j] & 2:
            t = t[:, ::-1, :]
        if gap:
            t = t.copy()
            t[:, :half], t[:, th - (gap - half):] = 0, 0
            t[:, :, :half], t[:, :, tw - (gap - half):] = 0, 0
        return t

    transform = Affine(MOSAIC_PIXEL_M, 0, 500_000.0, 0, -MOSAIC_PIXEL_M, 4_500_000.0)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": bands, "dtype": "uint8",
               "crs": MOSAIC_CRS, "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    if kind == "image" and bands == 3:
        profile["photometric"] = "RGB"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part.tif")
    t0 = time.perf_counter()
    with rasterio.open(tmp, "w", **profile) as ds:
        pending: list[np.ndarray] = []
        row0 = written = 0
        for i in range(nrows):
            band = np.concatenate([tile_at(i, j) for j in range(ncols)], axis=2)[:, :, :side]
            band = band[:, : min(th, side - i * th)]
            pending.append(band)
            row0 += band.shape[1]
            if row0 - written >= 512 or row0 == side:
                data = np.concatenate(pending, axis=1)
                n = data.shape[1] if row0 == side else (data.shape[1] // 512) * 512
                ds.write(data[:, :n], window=rasterio.windows.Window(0, written, side, n))
                pending = [data[:, n:]] if n < data.shape[1] else []
                written += n
        ds.update_tags(bench_mosaic=recipe)
    os.replace(tmp, out)
    log(f"built {out} ({side} x {side} px, {kind}, {source}) in {time.perf_counter() - t0:.1f} s")
    return out


# ---------------------------------------------------------------- child processes and fits


def run_child(cmd: list[str], log_path: Path, timeout_s: float | None = None) -> dict:
    """Run ``cmd`` in a fresh process (cwd = repository); returns exit code and wall seconds.

    stdout and stderr go to ``log_path``. The child reports its own peak RSS with :func:`peak_rss_mib`
    (``ru_maxrss`` from ``os.wait4`` is not used: Linux carries the parent's high-water mark over fork + exec).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=env)
        deadline = None if timeout_s is None else start + timeout_s
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status = os.waitpid(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - start}


def linear_fit(x: list[float], y: list[float]) -> dict:
    """Least-squares ``y = intercept + slope * x`` with R² (needs >= 2 points)."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) < 2:
        return {}
    slope, intercept = np.polyfit(xa, ya, 1)
    pred = intercept + slope * xa
    ss_res = float(((ya - pred) ** 2).sum())
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    return {"slope": float(slope), "intercept": float(intercept), "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def peak_rss_mib() -> float:
    """Peak RSS of this process image so far (``VmHWM``), MiB; unlike ``ru_maxrss`` it starts afresh at exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
