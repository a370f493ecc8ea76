"""Every registry architecture as a v2 (extent + boundary) model: one recipe on the v2 data, scored as model v2 is.

The v2 counterpart of :mod:`bench.architectures` (which compares single-output models on contest folds). Every row
(the nine networks of the original material and the segmentation_models_pytorch ones, see :data:`ROWS`) is

1. trained through the ``python -m training.v2 fit`` code path (:func:`training.multihead_fit.fit_multihead`:
   :class:`~training.multihead.MultiHeadNet` with extent + boundary heads, AdamW + one-cycle, the v2 losses,
   augmentations and 0.7-1.4x scale jitter) with **one small recipe for all**: ``--steps`` steps of
   ``--batch-size`` x ``--crop`` px crops drawn from the training splits of the v2 dataset catalogue with the crop
   shares of ``training/recipes/v2.sh`` (read from that file); custom architectures at ``--width`` (16: model v2's
   U-Net width), smp ones at their fixed encoder width (smp U-Net with the v2 recipe's slim decoder); the last
   weights are kept (nothing is chosen on the validation splits);
2. exported as model v2 is (``python -m training.v2 export --fp16``: outputs ``extent`` and ``boundary``, 512 px
   tiles with 64 px overlap; fp32 when the fp16 file fails its parity check). A model that cannot be exported to
   ONNX (smp PSPNet: adaptive pooling to a fixed grid) is scored with its PyTorch checkpoint instead and says so;
3. scored on every set's validation split exactly as ``python -m training.v2 evaluate`` scores model v2
   (:class:`training.multihead_eval.OnnxHeads` in ONNX Runtime, the engine's tiling and Hann blending,
   :func:`training.multihead_fit.score_predictions`): per set extent IoU, ratio error, boundary F1, object F1 at
   IoU >= 0.5; plus their means over the sets;
4. timed with :func:`bench.architectures.speed` (the same code as §7's speed columns): forward Mpx/s on a batch of
   4 real 512 px tiles and end-to-end Mpx/s (``engine.api.extract`` of a 2048 x 2048 contest mosaic to a
   GeoPackage), ``--threads`` (2) ONNX Runtime threads, one model at a time after all training is done.

Fused rows: the v2 recipe's three default members (mean of probabilities, as ``ensemble.json`` fuses) and the
original study's three networks (majority vote: a pixel is field / edge where most members' probability exceeds 0.5),
fused from the members' stored whole-scene probability maps and scored the same way; their speed runs the members
through an ``ensemble.json`` with that fusion. "all field (trivial)" calls every pixel field and no pixel edge.

Architectures train concurrently (``--jobs`` processes of ``--train-threads`` torch threads each: small convolutions
on 128 px crops scale poorly over threads, and §7 saw 2 torch threads run far slower per step than 1 on a shared
machine); each job process reads the data sets once. Stop a run with Ctrl-C (or by killing its process group).
Results are written to ``--out`` (JSON) after every row; a rerun with the same recipe skips the rows done (and
reuses a finished fit's checkpoint or an interrupted one's ``last.pt``, saved every 50 steps). ``--estimate`` times
a 2-step smoke run of every row instead (training step, export, a batch of validation tiles, in wall and CPU
seconds) and prints the estimated time of the full run, at the present load and on idle cores; ``--report`` prints
the docs/BENCHMARKS.md section of a result file.

Examples::

    nice -n 10 .venv/bin/python -m bench.architectures_v2 --estimate            # ~4 min: timings and the estimate
    nice -n 10 .venv/bin/python -m bench.architectures_v2 > runs/bench/architectures_v2.log 2>&1
    .venv/bin/python -m bench.architectures_v2 --report runs/bench/architectures_v2.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.architectures import Row, _fmt, speed
from bench.common import REPO, RUNS, idle_state, machine_facts, write_json

#: The rows: model v2's architecture first, the v2 recipe's other default members, the study's three, the rest.
ROWS = (
    Row("unet", origin="model v2 (the shipped default, width 16); U-Net cropland study; road comparison"),
    Row("smp:Unet:mobilenet_v2", False, (128, 64, 32, 16, 16), origin="v2 recipe member (slim decoder)"),
    Row("smp:Linknet:mobilenet_v2", False, origin="v2 recipe member; road comparison's LinkNet"),
    Row("fcn_se_resnet50", origin="study model 1 (FCN-1s SE-ResNet50)"),
    Row("fcn_se_resnet101", origin="study model 2 (FCN-1s SE-ResNet101)"),
    Row("attention_unet", origin="study model 3"),
    Row("fcn_resnet34", origin="FCN on ResNet34 (tutorial; road comparison's FCN)"),
    Row("segnet", origin="road comparison"),
    Row("icnet", origin="road comparison"),
    Row("smp:PSPNet:mobilenet_v2", False, origin="road comparison's PSPNet"),
    Row("smp:FPN:mobilenet_v2", False, origin="smp, registered"),
)

#: Fused rows: name -> (member architectures, fusion). The first: training/recipes/v2.sh's default MEMBERS.
FUSIONS = {
    "v2 recipe's three members (mean)": (("smp:Unet:mobilenet_v2", "smp:Linknet:mobilenet_v2", "unet"), "mean"),
    "study's three networks (majority vote)": (("fcn_se_resnet50", "fcn_se_resnet101", "attention_unet"), "vote"),
}
TRIVIAL = "all field (trivial)"
RECIPE_SH = REPO / "training" / "recipes" / "v2.sh"
DATASETS = ("contest", "gf2", "naip", "nsw", "denmark")
CHECKPOINT_EVERY = 50
#: A fit's checkpoint is reused (finished) or resumed (interrupted) only when these options are the same.
SAME_FIT = ("arch", "datasets", "epochs", "steps_per_epoch", "max_steps", "tile", "batch_size", "lr", "width",
            "decoder_channels", "set_shares", "limit", "seed", "mean", "std")

# The data of this process: read once by the main process and once by each job process (see jobs_map).
_DATA: dict = {}


def recipe_shares(path: Path = RECIPE_SH) -> dict[str, float]:
    """The crop shares per set of ``training/recipes/v2.sh`` (its ``SHARES`` default), e.g. {"naip": 2.0, ...}."""
    found = re.search(r"SHARES=\$\{SHARES:-([^}]+)\}", path.read_text())
    if not found:
        raise SystemExit(f"{path}: no SHARES=${{SHARES:-...}} default found")
    return {k: float(v) for k, v in (item.split("=") for item in found.group(1).split(","))}


def row_by_name(name: str) -> Row:
    for row in ROWS:
        if row.arch == name:
            return row
    raise SystemExit(f"unknown row {name!r}; known: {', '.join(r.arch for r in ROWS)}")


def recipe_of(args) -> dict:
    """The recipe shared by every row (stored with the results; a rerun resumes only with the same)."""
    return {"steps": args.steps, "batch_size": args.batch_size, "crop": args.crop, "width": args.width,
            "lr": args.lr, "seed": args.seed, "set_shares": args.shares, "datasets": args.datasets,
            "limit": args.limit, "scale": [0.7, 1.4], "augment": 1.0, "losses": "training.v2 defaults",
            "eval_tile": args.eval_tile, "eval_overlap": args.eval_overlap, "onnx_weights": "float16",
            "train_threads": args.train_threads, "threads": args.threads}


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


# ---------------------------------------------------------------- one row: fit, export, predict, score


def _limit_threads(n: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def fit_row(row: Row, args, out: Path, steps: int, say, tick=None) -> dict:
    """Train ``row`` on the catalogue's training scenes for ``steps`` steps (resuming ``out/last.pt``); returns the
    fit summary (``seconds``, ``parameters``, ``steps``). ``tick()`` is called at every line the fit logs (its
    start and the end of every epoch of :data:`CHECKPOINT_EVERY` steps, or of every step for a 2-step fit)."""
    from training.checkpoint import load_checkpoint
    from training.multihead_fit import MultiHeadConfig, fit_multihead

    per_epoch = min(CHECKPOINT_EVERY, steps) if steps > 2 else 1
    cfg = MultiHeadConfig(arch=row.arch, out=str(out), datasets=list(args.datasets),
                          epochs=math.ceil(steps / per_epoch), steps_per_epoch=per_epoch, max_steps=steps,
                          tile=args.crop, overlap=args.crop // 8,
                          batch_size=args.batch_size, lr=args.lr, width=args.width if row.takes_width else None,
                          decoder_channels=list(row.decoder_channels) if row.decoder_channels else None,
                          set_shares=dict(args.shares), limit=args.limit, device="cpu", threads=args.train_threads,
                          seed=args.seed, name=f"v2bench_{row.slug}", mean=_DATA["mean"], std=_DATA["std"])
    last, summary_path = out / "last.pt", out / "summary.json"
    if last.is_file():
        ck = load_checkpoint(last)
        if all(ck["args"].get(k) == getattr(cfg, k) for k in SAME_FIT):
            if ck["step"] >= steps and summary_path.is_file():
                return json.loads(summary_path.read_text())
            cfg.resume = str(last)
            say(f"resuming its fit at step {ck['step']}")
        else:  # another recipe's fit: start afresh
            for name in ("last.pt", "best.pt", "summary.json"):
                (out / name).unlink(missing_ok=True)
    return fit_multihead(cfg, _DATA["train"], [], log=lambda m: tick and tick())


def export_row(checkpoint: Path, path: Path, args) -> dict:
    """Export as model v2 is (fp16 weights, fp32 when fp16 fails parity); ``onnx`` None with ``onnx_error`` when
    PyTorch cannot export the architecture with a dynamic tile size."""
    from training.errors import TrainingError
    from training.multihead_export import export_multihead

    kw = {"tile_size": args.eval_tile, "overlap": args.eval_overlap}
    try:
        r = export_multihead(checkpoint, path, fp16=True, **kw)
        return {"onnx": r["onnx"], "bytes": r["bytes"], "fp16": True, "parity": r["parity_max_abs_diff"]}
    except TrainingError as exc:
        r = export_multihead(checkpoint, path, fp16=False, **kw)
        return {"onnx": r["onnx"], "bytes": r["bytes"], "fp16": False, "fp16_error": str(exc),
                "parity": r["parity_max_abs_diff"]}
    except Exception as exc:  # torch.onnx raises several types for an unsupported operator
        first = str(exc).split(". Please")[0].split("\n")[0][:160]  # torch appends the whole graph
        return {"onnx": None, "bytes": None, "fp16": None, "onnx_error": f"{type(exc).__name__}: {first}"}


def runner_of(exported: dict, checkpoint: Path, threads: int):
    """The tile runner of a row: its ONNX file through OnnxHeads (what ``training.v2 evaluate`` runs), or its
    PyTorch checkpoint (:func:`training.multihead_fit.torch_heads`) when it has no ONNX file."""
    if exported["onnx"]:
        from training.multihead_eval import OnnxHeads

        return OnnxHeads(exported["onnx"], threads)
    import torch

    from training.checkpoint import load_checkpoint
    from training.multihead_fit import model_from_multihead_checkpoint, torch_heads

    ckpt = load_checkpoint(checkpoint)
    return torch_heads(model_from_multihead_checkpoint(ckpt), ckpt["args"]["mean"], ckpt["args"]["std"],
                       torch.device("cpu"))


def predict_all(run, args) -> list[dict[str, np.ndarray]]:
    """Whole-scene extent and boundary probabilities of every validation scene (training.v2 evaluate's tiling)."""
    from training.multihead_fit import predict_scene

    return [{k: v for k, v in predict_scene(run, s.image, args.eval_tile, args.eval_overlap).items()
             if k in ("extent", "boundary")} for s in _DATA["val"]]


def save_maps(path: Path, preds: list[dict[str, np.ndarray]]) -> None:
    """Store the probability maps (float16) for the fused rows; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{f"{k}_{i}": p[k].astype(np.float16) for i, p in enumerate(preds) for k in p})
    tmp.replace(path)


def load_maps(path: Path, n: int) -> list[dict[str, np.ndarray]]:
    with np.load(path) as z:
        return [{k: z[f"{k}_{i}"].astype(np.float32) for k in ("extent", "boundary")} for i in range(n)]


def means(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means over the sets: IoU, |ratio error|, and object / boundary F1 over the sets that have them."""
    def mean(key, fn=float):
        vals = [fn(m[key]) for m in metrics.values() if key in m]
        return float(np.mean(vals)) if vals else None

    return {"iou": mean("iou"), "abs_ratio_error": mean("ratio_error", abs), "object_f1": mean("object_f1"),
            "boundary_f1": mean("boundary_f1"), "f1": mean("f1")}


def run_row(task: tuple[Row, argparse.Namespace]) -> dict:
    """Job: fit, export, predict and score one row (in a job process); returns its result entry."""
    from training.multihead_fit import score_predictions

    row, args = task

    def say(msg: str) -> None:
        log(f"{row.arch}: {msg}")

    try:
        out = args.work / row.slug
        say(f"training {args.steps} steps")
        fit = fit_row(row, args, out, args.steps, say)
        say(f"{fit['parameters'] / 1e6:.2f} M parameters, {fit['seconds']:.0f} s training; exporting")
        exported = export_row(out / "last.pt", args.work / "onnx" / f"{row.slug}.onnx", args)
        if not exported["onnx"]:
            say(f"no ONNX export ({exported['onnx_error']}); scored with its PyTorch checkpoint")
        t0 = time.perf_counter()
        preds = predict_all(runner_of(exported, out / "last.pt", args.train_threads), args)
        metrics = score_predictions(preds, _DATA["val"])
        eval_seconds = time.perf_counter() - t0
        save_maps(args.work / "maps" / f"{row.slug}.npz", preds)
    except Exception as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
        return {"model": row.arch, "error": f"{type(exc).__name__}: {exc}"}
    m = means(metrics)
    say(f"mean IoU {m['iou']:.4f}, object F1 {_fmt(m['object_f1'], '.3f')}, |ratio error| "
        f"{m['abs_ratio_error']:.4f} ({eval_seconds:.0f} s scoring)")
    return {"model": row.arch, "kind": "single", "origin": row.origin, "parameters": fit["parameters"],
            "train_seconds": fit["seconds"], "eval_seconds": eval_seconds,
            "width": args.width if row.takes_width else None,
            "decoder_channels": list(row.decoder_channels) if row.decoder_channels else None,
            "onnx": exported["onnx"], "onnx_bytes": exported["bytes"], "fp16": exported["fp16"],
            "onnx_error": exported.get("onnx_error"), "backend": "onnx" if exported["onnx"] else "torch",
            "checkpoint": str(out / "last.pt"), "metrics": metrics, "mean": m}


# ---------------------------------------------------------------- fused and trivial rows, speed


def fuse_maps(maps: list[list[dict[str, np.ndarray]]], fusion: str) -> list[dict[str, np.ndarray]]:
    """Per scene and head: the members' mean probability (``"mean"``), or the share of members whose probability
    exceeds 0.5 (``"vote"``, :func:`engine.ensemble.fuse`), so >= 0.5 = most members say field / edge."""
    from engine.ensemble import fuse

    return [{k: fuse([m[i][k] for m in maps], [1.0] * len(maps), fusion, [0.5] * len(maps))
             for k in ("extent", "boundary")} for i in range(len(maps[0]))]


def fused_row(name: str, members: tuple[str, ...], fusion: str, result: dict, args) -> dict:
    from training.multihead_fit import score_predictions

    n = len(_DATA["val"])
    maps = [load_maps(args.work / "maps" / f"{row_by_name(m).slug}.npz", n) for m in members]
    metrics = score_predictions(fuse_maps(maps, fusion), _DATA["val"])
    info = [result["models"][m] for m in members]
    onnx = [i["onnx"] for i in info]
    return {"model": name, "kind": "fused", "origin": ", ".join(members) + f"; {fusion}", "fusion": fusion,
            "members": list(members), "parameters": int(sum(i["parameters"] for i in info)),
            "onnx_bytes": int(sum(i["onnx_bytes"] for i in info)) if all(onnx) else None,
            "train_seconds": float(sum(i["train_seconds"] for i in info)), "metrics": metrics, "mean": means(metrics)}


def trivial_row() -> dict:
    from training.multihead_fit import score_predictions

    preds = [{"extent": np.ones(s.extent.shape, np.float32), "boundary": np.zeros(s.extent.shape, np.float32)}
             for s in _DATA["val"]]
    metrics = score_predictions(preds, _DATA["val"])
    return {"model": TRIVIAL, "kind": "trivial", "origin": "every pixel field, no edge", "metrics": metrics,
            "mean": means(metrics)}


def torch_speed(checkpoint: Path, threads: int) -> dict:
    """Forward Mpx/s of a checkpoint without ONNX file (PyTorch, ``threads`` threads, 4 real 512 px tiles); no end
    to end: the engine's PyTorch backend runs single-output checkpoints only."""
    import torch

    from bench.bound import real_tiles, time_calls
    from training.checkpoint import load_checkpoint
    from training.multihead_fit import model_from_multihead_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_multihead_checkpoint(ckpt)
    raw, _ = real_tiles(4, 512)
    m, sd = (np.asarray(ckpt["args"][k], np.float32)[:, None, None] for k in ("mean", "std"))
    x = torch.from_numpy(np.ascontiguousarray((raw / 255.0 - m) / sd, np.float32))

    def fwd():
        with torch.inference_mode():
            model(x)

    per_tile = time_calls(fwd, 3.0)["median_s"] / 4
    return {"forward_mpx_per_s": 512 * 512 / 1e6 / per_tile, "ms_per_tile": 1000 * per_tile, "backend": "torch",
            "e2e_mpx_per_s": None, "loadavg_before": idle_state()["loadavg"]}


def speed_of(name: str, info: dict, result: dict, args) -> dict:
    """The speed columns of a row (single: its ONNX file; fused: an ensemble.json of its members' ONNX files)."""
    if info["kind"] == "single":
        if info["onnx"]:
            return speed(Path(info["onnx"]), args.threads, log)
        return torch_speed(Path(info["checkpoint"]), args.threads)
    members = [result["models"][m] for m in info["members"]]
    if not all(m["onnx"] for m in members):
        return {"forward_mpx_per_s": None, "e2e_mpx_per_s": None, "note": "a member has no ONNX file"}
    spec = args.work / "ensembles" / f"{row_by_name(info['members'][0]).slug}_{info['fusion']}.json"
    write_json(spec, {"name": name, "fusion": info["fusion"], "threshold": 0.5, "tile_size": args.eval_tile,
                      "overlap": args.eval_overlap,
                      "members": [{"path": str(Path(m["onnx"]).resolve()), "weight": 1.0} for m in members]})
    return speed(spec, args.threads, log)


# ---------------------------------------------------------------- the estimate (2-step smoke run per row)


def val_batches(tile: int, overlap: int, batch: int = 4) -> int:
    """How many runner calls (batches of ``batch`` tiles) predicting every validation scene takes."""
    from engine.tiling import TileGrid

    return sum(math.ceil(len(list(TileGrid(*s.shape, tile, overlap).tiles())) / batch) for s in _DATA["val"])


class Clock:
    """Wall and CPU seconds (this process, all its threads) since the last :meth:`lap`. A job runs on one thread,
    so its CPU seconds are the wall seconds it would take on an idle core, whatever the machine's load."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []
        self.lap()

    def lap(self) -> tuple[float, float]:
        now = (time.perf_counter(), time.process_time())
        last = self.marks[-1] if self.marks else now
        self.marks.append(now)
        return now[0] - last[0], now[1] - last[1]


def smoke_row(task: tuple[Row, argparse.Namespace]) -> dict:
    """Job: a 2-step fit, the export and one batch of 4 validation tiles of ``row``, each timed in wall and CPU
    seconds: ``step`` (the 2nd training step), ``first_step`` (building the model and the 1st step), ``export``,
    ``batch`` (the runner on 4 x eval-tile px, after one warm-up call)."""
    row, args = task
    out: dict = {"model": row.arch}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clock = Clock()
            ticks: list[tuple[float, float]] = []
            fit = fit_row(row, args, Path(tmp) / "fit", 2, lambda m: None, tick=lambda: ticks.append(clock.lap()))
            clock.lap()
            # ticks: the fit's start line, the end of step 1, the end of step 2
            out["first_step"] = [ticks[0][i] + ticks[1][i] for i in (0, 1)]
            out["step"] = list(ticks[2])
            exported = export_row(Path(tmp) / "fit" / "last.pt", Path(tmp) / "m.onnx", args)
            out["export"] = list(clock.lap())
            run = runner_of(exported, Path(tmp) / "fit" / "last.pt", args.train_threads)
            xb = np.random.default_rng(0).random((4, 3, args.eval_tile, args.eval_tile), dtype=np.float32)
            run(xb)
            clock.lap()
            run(xb)
            out["batch"] = list(clock.lap())
    except Exception as exc:
        log(f"{row.arch}: smoke run FAILED: {type(exc).__name__}: {exc}")
        return {"model": row.arch, "error": f"{type(exc).__name__}: {exc}"}
    out.update(parameters=fit["parameters"], onnx=bool(exported["onnx"]), onnx_error=exported.get("onnx_error"),
               smoke_wall_s=sum(out[k][0] for k in ("first_step", "step", "export", "batch")))
    log(f"{row.arch}: 2-step smoke run {out['smoke_wall_s']:.1f} s wall; CPU s: step {out['step'][1]:.2f}, first "
        f"step {out['first_step'][1]:.2f}, export {out['export'][1]:.2f}, batch of 4 x {args.eval_tile} px "
        f"{out['batch'][1]:.2f}")
    return out


def estimate(smoke: list[dict], args, load_s: float, overhead_s: float, which: int) -> dict:
    """Estimated wall seconds of the full run from the smoke timings (``which`` 0: their wall seconds, i.e. at the
    load they ran under; 1: their CPU seconds, i.e. on idle cores, one per job). Per row: steps x step + first step
    + export + validation batches x batch + scoring without a model (``overhead_s``); rows spread over ``--jobs``
    lanes, longest first, after each job process read the data (``load_s``); then one model at a time, the speed
    columns (~3 s of forward timing, the 2048 px mosaic's 25 tiles on 2 threads, ~8 s of reading, splitting,
    vectorising and writing) and the fused rows (scoring, and the members' speed through one ensemble)."""
    ok = [s for s in smoke if "error" not in s]
    n_batches = val_batches(args.eval_tile, args.eval_overlap)
    per_row = {s["model"]: (args.steps - 1) * s["step"][which] + s["first_step"][which] + s["export"][which]
               + n_batches * s["batch"][which] + overhead_s for s in ok}
    lanes = [0.0] * max(1, min(args.jobs, len(per_row)))
    for seconds in sorted(per_row.values(), reverse=True):
        lanes[lanes.index(min(lanes))] += seconds
    e2e = {s["model"]: 25 / 4 * s["batch"][which] / 1.7 for s in ok}  # 2 threads: ~1.7x one
    speed_s = sum(4.0 + e2e[m] + 8.0 for m in e2e)
    for members, _ in (v for v in FUSIONS.values() if all(m in per_row for m in v[0])):
        speed_s += overhead_s + 4.0 + sum(e2e[m] for m in members) + 8.0
    total = 2 * load_s + max(lanes) + speed_s
    return {"per_row_s": per_row, "validation_batches": n_batches, "scoring_overhead_s": overhead_s,
            "load_s": load_s, "training_phase_s": max(lanes), "speed_phase_s": speed_s, "total_s": total}


# ---------------------------------------------------------------- report


def render(result: dict) -> str:
    """The docs/BENCHMARKS.md section of a result file: recipe, command, machine, summary and per-set tables."""
    rec, models = result["recipe"], result["models"]
    mach = result.get("machine", {})
    order = [TRIVIAL] + [r.arch for r in ROWS] + list(FUSIONS)
    names = [n for n in order if n in models] + [n for n in models if n not in order]
    sets = [s for s in DATASETS if any(s in models[n].get("metrics", {}) for n in names)]
    shares = ", ".join(f"{k} {v:g}" for k, v in rec["set_shares"].items())
    widths = " (model v2's U-Net width; the papers' is 64)" if rec["width"] == 16 else " (the papers' is 64)"
    lines = [
        "## Architectures on the v2 data",
        "",
        "Every registry architecture trained as a v2 model (extent + boundary heads, `training.v2 fit`'s code path) "
        f"with **one recipe**: {rec['steps']} steps of {rec['batch_size']} random {rec['crop']} px crops from the "
        f"training splits of the v2 catalogue ({', '.join(rec['datasets'])}; crop shares {shares}, as "
        "`training/recipes/v2.sh`), AdamW + one-cycle (peak lr "
        f"{rec['lr']:g}), the v2 losses and augmentations, scale jitter {rec['scale'][0]}-{rec['scale'][1]}x, seed "
        f"{rec['seed']}; the last weights (nothing chosen on validation). Custom architectures at width "
        f"{rec['width']}{widths}, smp ones at their encoder's fixed width "
        "(MobileNetV2; smp U-Net with the v2 recipe's slim decoder 128-64-32-16-16). Exported as model v2 "
        f"(fp16 ONNX, {rec['eval_tile']} px tiles, {rec['eval_overlap']} px overlap) and scored as "
        "`python -m training.v2 evaluate` scores it, on every set's validation split (ONNX Runtime, the engine's "
        "tiling and Hann blending). A recipe this short ranks architectures by how fast they learn, not by what "
        "they reach with model v2's full budget.",
        "",
        "Columns: means over the sets of extent IoU, object F1 (fields at IoU >= 0.5; sets with fields: all but "
        "contest), |cropland-ratio error| and boundary F1 (sets with labelled edges); parameters and ONNX size "
        "(fused rows: the sum); *forward Mpx/s*: bare `session.run` on 4 real 512 px tiles; *end to end Mpx/s*: "
        "`engine.api.extract` of a 2048 x 2048 contest mosaic to a GeoPackage (the boundary split included), both on "
        f"{rec['threads']} ONNX Runtime threads; *training s*: wall time of the fit on {rec['train_threads']} torch "
        "thread(s), with another fit running beside it. Fused rows fuse the members' whole-scene probabilities "
        "(mean; vote = share of members above 0.5).",
        "",
    ]
    if mach:
        cpu = mach.get("cpu", {})
        vers = mach.get("versions", {})
        lines += [f"Machine: {cpu.get('model_name', '?')}, {mach.get('cores_usable', '?')} cores; "
                  f"onnxruntime {vers.get('onnxruntime', '?')}, torch {vers.get('torch', '?')}; "
                  f"{mach.get('date_utc', '?')} UTC, commit {mach.get('git', {}).get('commit', '?')}. "
                  f"1-minute load average before the speed measurements: {_loads(models)}.", ""]
    lines += [f"Command: `{result['command']}`, then `python -m bench.architectures_v2 --report {result['out']}`.", "",
              "| model | params (M) | ONNX (MiB) | IoU | object F1 | abs ratio error | boundary F1 | forward Mpx/s | "
              "end to end Mpx/s | training s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        r = models[n]
        m, sp = r.get("mean", {}), r.get("speed") or {}
        params, size = r.get("parameters"), r.get("onnx_bytes")
        label = n + (" (no ONNX: PyTorch)" if r.get("kind") == "single" and not r.get("onnx") else "")
        lines.append(f"| {label} | {_fmt(params / 1e6 if params else None, '.2f')} | "
                     f"{_fmt(size / 2**20 if size else None, '.1f')} | {_fmt(m.get('iou'), '.4f')} | "
                     f"{_fmt(m.get('object_f1'), '.3f')} | {_fmt(m.get('abs_ratio_error'), '.4f')} | "
                     f"{_fmt(m.get('boundary_f1'), '.3f')} | {_fmt(sp.get('forward_mpx_per_s'), '.2f')} | "
                     f"{_fmt(sp.get('e2e_mpx_per_s'), '.2f')} | {_fmt(r.get('train_seconds'), '.0f')} |")
    lines += ["", "Rows (every architecture took the boundary head, 4 output channels"
              + ("; failures are listed at the end" if result.get("failures") else "") + "):", ""]
    lines += [f"- `{n}`: {models[n]['origin']}" for n in names if models[n].get("kind") == "single"]
    lines += ["", "Per set: extent IoU / object F1 / ratio error (contest has no fields; `–` = not labelled):", "",
              "| model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for n in names:
        met = models[n].get("metrics", {})
        cells = [f"{met[s]['iou']:.3f} / {_fmt(met[s].get('object_f1'), '.3f')} / {met[s]['ratio_error']:+.3f}"
                 if s in met else "–" for s in sets]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    notes = [f"{n}: no ONNX export ({r['onnx_error']}); scored through its PyTorch checkpoint, forward speed in "
             "PyTorch, no end-to-end figure (the engine's PyTorch backend runs single-output checkpoints only)"
             for n, r in models.items() if r.get("kind") == "single" and not r.get("onnx")]
    notes += [f"{n}: exported with fp32 weights (fp16 failed parity)" for n, r in models.items()
              if r.get("fp16") is False]
    notes += [f"{f['model']}: FAILED: {f['error']}" for f in result.get("failures", [])]
    if notes:
        lines += ["", *[f"- {t}" for t in notes]]
    return "\n".join(lines)


def _loads(models: dict) -> str:
    loads = [m["speed"]["loadavg_before"][0] for m in models.values() if (m.get("speed") or {}).get("loadavg_before")]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not measured"


# ---------------------------------------------------------------- main


def load_data(args, quiet: bool = False) -> tuple[float, float]:
    """Read the catalogue (train and validation scenes, channel statistics) into :data:`_DATA`; (wall, CPU) s."""
    from training.datasets import load_scenes
    from training.multihead_data import channel_stats

    clock = Clock()
    scenes = load_scenes(list(args.datasets), args.data_root, None, args.limit, log=lambda m: None)
    _DATA["train"] = [s for s in scenes if s.split == "train"]
    _DATA["val"] = [s for s in scenes if s.split == "val"]
    if not _DATA["train"] or not _DATA["val"]:
        raise SystemExit(f"no training or validation scenes in {args.datasets} "
                         f"(data root {args.data_root or 'default'})")
    _DATA["mean"], _DATA["std"] = channel_stats(_DATA["train"])
    seconds = clock.lap()
    if not quiet:
        log(f"read {len(_DATA['train'])} training / {len(_DATA['val'])} validation scenes of "
            f"{', '.join(args.datasets)} ({sum(s.extent.size for s in _DATA['val']) / 1e6:.2f} validation Mpx) "
            f"in {seconds[0]:.0f} s")
    return seconds


def _init_job(args) -> None:
    _limit_threads(args.train_threads)
    load_data(args, quiet=True)


def jobs_map(fn, tasks: list, jobs: int, args):
    """Yield ``fn(task)`` for every task, ``jobs`` processes at a time, as they finish.

    The processes are spawned, not forked (forked children of a process that had used OpenCV and PyTorch hung in
    their first call to them), and each reads the data once."""
    import multiprocessing as mp

    if not tasks:
        return
    with mp.get_context("spawn").Pool(max(1, min(jobs, len(tasks))), initializer=_init_job, initargs=(args,)) as pool:
        yield from pool.imap_unordered(fn, tasks)


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.architectures_v2", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", nargs="+", default=[r.arch for r in ROWS], help="architectures to compare")
    p.add_argument("--datasets", type=_list, default=list(DATASETS), help="catalogue names, comma-separated")
    p.add_argument("--data-root", type=Path, help="folder holding the data sets (default ../shared/data)")
    p.add_argument("--limit", type=int, help="read at most this many tiles per tiled set (smoke runs)")
    p.add_argument("--steps", type=int, default=400,
                   help="optimizer steps per fit (400: ~27 min for all rows on 2 idle cores by --estimate)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step")
    p.add_argument("--crop", type=int, default=128, help="training crop in px, multiple of 32 (model v2: 256)")
    p.add_argument("--width", type=int, default=16, help="--width of every custom architecture (model v2: 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (model v2's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shares", type=lambda t: {k: float(v) for k, v in (i.split("=") for i in _list(t))},
                   default=None, help="crop shares per set (default: training/recipes/v2.sh's SHARES)")
    p.add_argument("--eval-tile", type=int, default=512, help="inference tile in px (model v2's export: 512)")
    p.add_argument("--eval-overlap", type=int, default=64, help="inference overlap in px (model v2's: 64)")
    p.add_argument("--jobs", type=int, default=2, help="rows trained and scored at once (processes)")
    p.add_argument("--train-threads", type=int, default=1, help="torch / ONNX Runtime threads of each job")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the speed columns")
    p.add_argument("--no-fusions", action="store_true", help="skip the fused rows")
    p.add_argument("--no-speed", action="store_true", help="skip the speed columns (smoke runs)")
    p.add_argument("--estimate", action="store_true",
                   help="only time a 2-step smoke run of every row and print the estimated time of the full run "
                        "(-> <out stem>_estimate.json)")
    p.add_argument("--out", type=Path, default=RUNS / "architectures_v2.json", help="result JSON (resumed if present)")
    p.add_argument("--work", type=Path, help="checkpoints, ONNX files, probability maps (default: <out stem>_work/)")
    p.add_argument("--report", type=Path, help="only print the docs/BENCHMARKS.md section of this result JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        print(render(json.loads(args.report.read_text())))
        return 0
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    args.shares = args.shares or recipe_shares()
    args.work = args.work or args.out.with_name(args.out.stem + "_work")
    rows = [row_by_name(n) for n in args.rows]
    command = "python -m bench.architectures_v2 " + " ".join(argv if argv is not None else sys.argv[1:])
    load = load_data(args)
    if args.estimate:
        return run_estimate(rows, args, load)

    recipe = recipe_of(args)
    shown_out = args.out.resolve()
    shown_out = shown_out.relative_to(REPO) if shown_out.is_relative_to(REPO) else args.out
    result = {"benchmark": "architectures_v2", "command": command.strip(), "out": str(shown_out), "recipe": recipe,
              "models": {}, "failures": [], "machine": machine_facts()}
    if args.out.is_file():
        old = json.loads(args.out.read_text())
        if old.get("recipe") == recipe:
            result["models"] = old["models"]
            log(f"resuming {args.out}: {', '.join(old['models'])} done")
        else:
            log(f"{args.out} holds another recipe; starting afresh")

    def save() -> None:
        write_json(args.out, result)

    result["models"].setdefault(TRIVIAL, trivial_row())
    save()
    todo = [r for r in rows if r.arch not in result["models"]]
    order = _estimated_order(args)
    todo.sort(key=lambda r: -order.get(r.arch, 0.0))
    for entry in jobs_map(run_row, [(r, args) for r in todo], args.jobs, args):
        if "error" in entry:
            result["failures"].append(entry)
        else:
            result["models"][entry["model"]] = entry
        save()
    if not args.no_fusions:
        for name, (members, fusion) in FUSIONS.items():
            if name not in result["models"] and all(m in result["models"] for m in members):
                result["models"][name] = entry = fused_row(name, members, fusion, result, args)
                log(f"{name}: mean IoU {entry['mean']['iou']:.4f}, object F1 {_fmt(entry['mean']['object_f1'], '.3f')}")
                save()
    if not args.no_speed:
        for name, info in result["models"].items():
            if info["kind"] != "trivial" and "speed" not in info:
                log(f"{name}: timing")
                try:
                    info["speed"] = sp = speed_of(name, info, result, args)
                except Exception as exc:  # keep the other rows' timings; a rerun retries this one
                    log(f"{name}: timing FAILED: {type(exc).__name__}: {exc}")
                    result["failures"].append({"model": name, "error": f"speed: {type(exc).__name__}: {exc}"})
                    save()
                    continue
                log(f"{name}: forward {_fmt(sp.get('forward_mpx_per_s'), '.2f')} Mpx/s, end to end "
                    f"{_fmt(sp.get('e2e_mpx_per_s'), '.2f')} Mpx/s")
                save()
    print(render(result))
    log(f"wrote {args.out}")
    return 0


def _estimated_order(args) -> dict[str, float]:
    path = args.out.with_name(args.out.stem + "_estimate.json")
    if path.is_file():
        return json.loads(path.read_text()).get("estimate", {}).get("idle", {}).get("per_row_s", {})
    return {}


def run_estimate(rows: list[Row], args, load: tuple[float, float]) -> int:
    """``--estimate``: smoke-run every row (``--jobs`` at a time), print the timings and the estimated total."""
    from training.multihead_fit import predict_scene, score_predictions

    clock = Clock()
    const = [np.full((4, 2, args.eval_tile, args.eval_tile), 0.5, np.float32)] * 2  # extent, boundary
    preds = [predict_scene(lambda xb: const, s.image, args.eval_tile, args.eval_overlap)
             for s in _DATA["val"]]
    score_predictions(preds, _DATA["val"])
    overhead = clock.lap()  # blending and scoring the validation scenes without a model
    smoke = list(jobs_map(smoke_row, [(r, args) for r in rows], args.jobs, args))
    smoke_wall = clock.lap()[0]
    loadavg = idle_state()["loadavg"]
    est = {name: estimate(smoke, args, load[i], overhead[i], i) for i, name in enumerate(("loaded", "idle"))}
    print(f"\nSmoke runs: 2 steps of {args.batch_size} x {args.crop} px, export, a batch of 4 x {args.eval_tile} px "
          f"tiles; {args.jobs} job(s) of {args.train_threads} thread(s); {smoke_wall:.0f} s wall; load average "
          f"{loadavg}. Seconds as wall / CPU:")
    print(f"{'architecture':26} {'step':>11} {'1st step':>11} {'export':>11} {'batch':>11} {'row est. (idle)':>16}")
    for s in smoke:
        if "error" in s:
            print(f"{s['model']:26} FAILED: {s['error']}")
            continue
        cells = " ".join(f"{s[k][0]:5.1f}/{s[k][1]:5.2f}" for k in ("step", "first_step", "export", "batch"))
        print(f"{s['model']:26} {cells} {est['idle']['per_row_s'][s['model']]:14.0f} s"
              + ("" if s["onnx"] else "  (no ONNX: PyTorch)"))
    for name, e in est.items():
        where = ("on idle cores (from CPU seconds)" if name == "idle"
                 else f"at the smoke run's load (from wall seconds; load average {loadavg[0]})")
        print(f"Estimate {where}: {args.steps} steps per row, {e['validation_batches']} validation batches; reading "
              f"{2 * e['load_s']:.0f} s + training and scoring {e['training_phase_s'] / 60:.1f} min ({args.jobs} "
              f"jobs) + fusions and speed {e['speed_phase_s'] / 60:.1f} min = {e['total_s'] / 60:.1f} min")
    write_json(args.out.with_name(args.out.stem + "_estimate.json"),
               {"recipe": recipe_of(args), "smoke": smoke, "smoke_wall_s": smoke_wall, "loadavg": loadavg,
                "estimate": est, "machine": machine_facts()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
