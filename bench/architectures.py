"""Every registry architecture trained with one recipe on the same folds, scored and timed the same way.

Which architecture should one train, and why does the shipped ensemble hold the members it does? This script
answers with one table. Every row (the registry's custom architectures and the segmentation_models_pytorch ones, on a
MobileNetV2 encoder as the shipped members) is:

1. trained from random initialisation with **one recipe** for all (``training.loop.fit``: AdamW, one-cycle lr,
   cross-entropy + Dice, the shipped augmentations and scale jitter; ``--steps`` optimizer steps of ``--batch-size``
   random ``--crop`` px crops; custom architectures at ``--width``; the last weights are kept, nothing is chosen on
   the held-out tiles) on the six labelled contest tiles but the held-out ones. ``--holdout`` lists the folds, each a
   comma-separated group of held-out tiles: ``Data1 Data2 Data4 Data5 Data7 Data8`` is the shipped model's leave one
   tile out; the default ``Data5,Data7 Data1,Data8`` is two folds (train on Data1, 2, 4, 8 and score on Data5 and
   Data7, the two tiles where calling everything cropland scores worst; train on Data2, 4, 5, 7 and score on Data1 and
   Data8), which is what fitted a loaded 2-core machine;
   training runs on ``--train-threads`` torch threads (1 by default: see the option);
2. exported to ONNX with float16 weights and the shipped tiling (512 px tiles, 64 px overlap), as the shipped members;
3. run by the engine (``engine.api.extract_array``: tiling, Hann blending, threshold 0.5, the default 1 px opening) on
   each held-out tile and scored with ``bench.accuracy.score``: pixel IoU, F1, object F1 (fields matched at IoU >= 0.5),
   cropland-ratio error; plus the agreement of the masks from one 1024 px tile and from 256 px tiles with 64 px
   overlap (1.0 = the result does not depend on the tile size);
4. timed once (its first fold's ONNX file): parameters, ONNX file size, forward Mpx/s (bare ``session.run`` on a
   batch of 4 real 512 px tiles, 2 threads) and end-to-end Mpx/s (``engine.api.extract`` of a 2048 x 2048 mosaic of real
   contest tiles to a GeoPackage, 2 threads, in this process).

Two fused rows use the same folds' ONNX files through an ``ensemble.json``: the shipped ensemble's three
architectures (mean of probabilities) and the original study's three networks (majority vote). ``--study-baseline``
also runs ``bench.study_baseline`` (the study's own letterboxed pipeline) on the same folds.

Results are written after every (row, fold) to ``--out`` (JSON); a rerun with the same options skips what is done, so
an interrupted run loses at most the row in progress (a finished fit's checkpoint is reused too). ``--report`` only
prints the markdown tables of a result file.

Examples::

    nice -n 10 .venv/bin/python -m bench.architectures > runs/bench/architectures.log 2>&1   # docs/BENCHMARKS.md §7
    .venv/bin/python -m bench.architectures --rows unet icnet --holdout Data5 --steps 2 --out runs/bench/tmp/a.json
    .venv/bin/python -m bench.architectures --report runs/bench/architectures.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import CONTEST, CONTEST_TILES, DATA, RUNS, build_mosaic, idle_state, machine_facts, write_json


@dataclass(frozen=True)
class Row:
    """One architecture of the comparison: registry name, whether ``--width`` applies, smp decoder widths."""

    arch: str
    takes_width: bool = True
    decoder_channels: tuple[int, ...] | None = None
    origin: str = ""

    @property
    def slug(self) -> str:
        return self.arch.replace(":", "_")


#: The nine networks of the original material (see shared/notes/original-study.md) and the smp ones registered.
ROWS = (  # the shipped ensemble's three first, then the study's other two: the fused rows are ready early
    Row("fcn_se_resnet50", origin="study model 1; shipped member (at width 24)"),
    Row("smp:Linknet:mobilenet_v2", False, origin="road comparison's LinkNet; shipped member"),
    Row("smp:Unet:mobilenet_v2", False, (128, 64, 32, 16, 16), origin="shipped member (slim decoder)"),
    Row("fcn_se_resnet101", origin="study model 2"),
    Row("attention_unet", origin="study model 3"),
    Row("unet", origin="U-Net cropland study; road comparison"),
    Row("fcn_resnet34", origin="FCN on ResNet34 (tutorial; road comparison's FCN)"),
    Row("segnet", origin="road comparison"),
    Row("icnet", origin="road comparison"),
    Row("smp:PSPNet:mobilenet_v2", False, origin="road comparison's PSPNet"),
    Row("smp:FPN:mobilenet_v2", False, origin="smp, registered"),
)

#: Fused rows: name -> (file name, member architectures, fusion).
FUSIONS = {
    "shipped ensemble's architectures (mean)": ("shipped", ("fcn_se_resnet50", "smp:Linknet:mobilenet_v2",
                                                            "smp:Unet:mobilenet_v2"), "mean"),
    "study's three networks (majority vote)": ("study", ("fcn_se_resnet50", "fcn_se_resnet101", "attention_unet"),
                                               "vote"),
}

TILE, OVERLAP = 512, 64
E2E_SIDE = 2048


def row_by_name(name: str) -> Row:
    for row in ROWS:
        if row.arch == name:
            return row
    raise SystemExit(f"unknown row {name!r}; known: {', '.join(r.arch for r in ROWS)}")


def recipe_of(args) -> dict:
    """The training recipe shared by every row (stored with the results; a rerun must use the same)."""
    return {"steps": args.steps, "batch_size": args.batch_size, "crop": args.crop, "width": args.width,
            "lr": args.lr, "seed": args.seed, "train_threads": args.train_threads, "threads": args.threads,
            "schedule": "onecycle",
            "scale": [0.5, 1.6], "augment": 1.0, "loss": "cross-entropy + Dice", "tile": TILE, "overlap": OVERLAP,
            "onnx_weights": "float16"}


def load_tiles() -> dict:
    """The six labelled contest rasters (:class:`training.data.Raster`) by name."""
    from training.data import load_pairs, pair_files

    if not (CONTEST / "images").is_dir():
        raise SystemExit(f"contest tiles not found at {CONTEST}; set CROPLAND_SHARED_DATA")
    rasters = {r.name: r for r in load_pairs(pair_files(CONTEST / "images", CONTEST / "labels"))}
    missing = [n for n in CONTEST_TILES if n not in rasters]
    if missing:
        raise SystemExit(f"missing contest tiles {missing} under {CONTEST}")
    return rasters


def fold_dir(held: list[str]) -> str:
    """Folder / file stem of a fold's models: ``holdout_Data5_Data7``."""
    return "holdout_" + "_".join(held)


def train_fold(row: Row, held: list[str], rasters: dict, args, log) -> dict:
    """Fit ``row`` on every contest tile but ``held``; returns {checkpoint, seconds, parameters}."""
    from training.data import channel_stats
    from training.loop import FitConfig, fit

    out = args.work / row.slug / fold_dir(held)
    summary_path = out / "summary.json"
    if summary_path.is_file() and (out / "last.pt").is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("steps") == args.steps:
            return {"checkpoint": out / "last.pt", "seconds": summary["seconds"], "parameters": summary["parameters"]}
    train = [rasters[n] for n in CONTEST_TILES if n not in held]
    mean, std = channel_stats(train)
    cfg = FitConfig(arch=row.arch, out=str(out), epochs=1, steps_per_epoch=args.steps, tile=args.crop,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, device="cpu",
                    width=args.width if row.takes_width else None,
                    decoder_channels=list(row.decoder_channels) if row.decoder_channels else None,
                    mean=mean, std=std, resolution_m=2.0, name=f"{row.slug}_{fold_dir(held)}",
                    threads=args.train_threads)
    summary = fit(cfg, train, log=lambda line: log(f"  {line}"))
    return {"checkpoint": out / "last.pt", "seconds": summary["seconds"], "parameters": summary["parameters"]}


def export_fold(checkpoint: Path, row: Row, held: list[str], args) -> dict:
    """fp16-weight ONNX export of a fold's checkpoint (fp32 when fp16 fails its parity check); returns the report.

    A model that PyTorch cannot export with a dynamic height and width (smp's PSPNet: its pyramid pooling's adaptive
    average pool needs a fixed input size) is reported with ``onnx`` None: the engine then runs its checkpoint with its
    PyTorch backend."""
    from training.errors import TrainingError
    from training.export import export_checkpoint

    path = args.work / "onnx" / row.slug / f"{fold_dir(held)}.onnx"
    image = CONTEST / "images" / f"{held[0]}.tif"
    if path.is_file() and path.stat().st_mtime >= checkpoint.stat().st_mtime:
        return {"onnx": str(path), "bytes": path.stat().st_size, "fp16": True}
    try:
        report = export_checkpoint(checkpoint, path, fp16=True, tile_size=TILE, overlap=OVERLAP, parity_image=image)
        return {"onnx": report["onnx"], "bytes": report["bytes"], "fp16": True,
                "parity_max_abs_diff": report["parity_max_abs_diff"]}
    except TrainingError as exc:
        report = export_checkpoint(checkpoint, path, fp16=False, tile_size=TILE, overlap=OVERLAP, parity_image=image)
        return {"onnx": report["onnx"], "bytes": report["bytes"], "fp16": False, "fp16_error": str(exc),
                "parity_max_abs_diff": report["parity_max_abs_diff"]}
    except Exception as exc:  # torch.onnx raises several types for an unsupported operator
        return {"onnx": None, "bytes": None, "fp16": None, "onnx_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def engine_scores(model: Path, image: np.ndarray, label: np.ndarray, threads: int) -> dict:
    """Score ``model`` (ONNX file, checkpoint or ensemble.json) on one tile through the engine (image (3, H, W) raw
    values, label (H, W) uint8), and its tile-size agreement."""
    from bench.accuracy import score
    from engine.api import extract_array, load_model
    from engine.options import ExtractOptions

    base = ExtractOptions(device="cpu", threads=threads, pixel_size_m=2.0, tile_size=TILE, overlap=OVERLAP)
    ens = load_model(model, base)
    t0 = time.perf_counter()
    _, _, mask = extract_array(image, ens, options=base)
    seconds = time.perf_counter() - t0
    out = {**score(mask == 1, label), "seconds": seconds}
    one = extract_array(image, ens, options=ExtractOptions(**{**base.__dict__, "tile_size": 1024, "overlap": 0,
                                                             "opening_px": 0}))[2]
    many = extract_array(image, ens, options=ExtractOptions(**{**base.__dict__, "tile_size": 256, "overlap": 64,
                                                              "opening_px": 0}))[2]
    out["tile_agreement"] = float((one == many).mean())
    return out


def speed(model: Path, threads: int, log) -> dict:
    """Forward Mpx/s (4 x 512 px real tiles, bare session.run) and end-to-end Mpx/s (2048^2 mosaic -> GeoPackage)."""
    import tempfile

    from bench.bound import forward_fn, real_tiles, time_calls
    from engine.api import extract, load_model
    from engine.normalize import normalize
    from engine.options import ExtractOptions, OutputPaths

    load = idle_state()["loadavg"]
    opts = ExtractOptions(device="cpu", threads=threads, tile_size=TILE, overlap=OVERLAP)
    ens = load_model(model, opts)
    raw, valid = real_tiles(4, TILE)
    per_tile = 0.0
    for member in ens.members:
        x = normalize(raw, valid, member.meta, None)
        per_tile += time_calls(forward_fn(member, x), 3.0)["median_s"] / 4
    mosaic = build_mosaic(DATA / f"contest_image_{E2E_SIDE}.tif", E2E_SIDE, "image", log=log)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract(mosaic, model, OutputPaths(vector=Path(tmp) / "fields.gpkg"), opts)
        e2e = time.perf_counter() - t0
    return {"forward_mpx_per_s": TILE * TILE / 1e6 / per_tile, "ms_per_tile": 1000 * per_tile,
            "e2e_seconds": e2e, "e2e_mpx_per_s": E2E_SIDE**2 / 1e6 / e2e, "loadavg_before": load}


def onnx_bytes(paths: list[str]) -> int:
    return int(sum(os.path.getsize(p) for p in paths))


def summarise(result: dict) -> list[dict]:
    """Per model: mean over its held-out tiles of IoU, F1, object F1, |ratio error|, tile agreement; pooled IoU; the
    model's size and speed."""
    from engine.metrics import metrics_from_counts

    out = []
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["model"] == name]
        counts = {c: int(sum(r[c] for r in mine)) for c in ("tp", "fp", "fn", "tn")}
        info = result["models"].get(name, {})
        out.append({"model": name, "rasters": [r["raster"] for r in mine],
                    **{k: float(np.mean([r[k] for r in mine])) for k in ("iou", "f1", "object_f1", "ratio_error")},
                    "mean_abs_ratio_error": float(np.mean([abs(r["ratio_error"]) for r in mine])),
                    "tile_agreement": float(np.mean([r.get("tile_agreement", np.nan) for r in mine])),
                    "pooled_iou": metrics_from_counts(counts)["iou"], **info})
    return out


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def render(result: dict) -> str:
    """Markdown tables of a result file: the summary and IoU per held-out tile."""
    lines = ["| model | params (M) | ONNX (MiB) | IoU | pooled IoU | F1 | object F1 | mean abs ratio error | "
             "tile agreement | forward Mpx/s | end to end Mpx/s | training s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summarise(result):
        sp = r.get("speed") or {}
        params, size = r.get("parameters"), r.get("onnx_bytes")
        lines.append(
            f"| {r['model']} | {_fmt(params / 1e6 if params else None, '.2f')} | "
            f"{_fmt(size / 2**20 if size else None, '.1f')} | {r['iou']:.4f} | {r['pooled_iou']:.4f} | {r['f1']:.4f} "
            f"| {r['object_f1']:.3f} | {r['mean_abs_ratio_error']:.4f} | {_fmt(r['tile_agreement'], '.4f')} | "
            f"{_fmt(sp.get('forward_mpx_per_s'), '.2f')} | {_fmt(sp.get('e2e_mpx_per_s'), '.2f')} | "
            f"{_fmt(r.get('train_seconds'), '.0f')} |")
    rasters = list(dict.fromkeys(r["raster"] for r in result["rows"]))
    lines += ["", "IoU per held-out tile (ratio error in brackets):", "",
              "| model | " + " | ".join(rasters) + " |", "|---|" + "---|" * len(rasters)]
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        cells = []
        for raster in rasters:
            hit = [r for r in result["rows"] if r["model"] == name and r["raster"] == raster]
            cells.append(f"{hit[0]['iou']:.4f} ({hit[0]['ratio_error']:+.3f})" if hit else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("failures"):
        lines += ["", "Failed: " + "; ".join(f"{f['model']} (fold {f['fold']}): {f['error']}"
                                             for f in result["failures"])]
    return "\n".join(lines)


def parse_holdout(groups: list[str]) -> list[list[str]]:
    """``["Data5,Data7"]`` -> ``[["Data5", "Data7"]]``; every name must be a labelled contest tile."""
    folds = [[n.strip() for n in g.split(",") if n.strip()] for g in groups]
    for names in folds:
        bad = [n for n in names if n not in CONTEST_TILES]
        if bad or not names or len(names) == len(CONTEST_TILES):
            raise SystemExit(f"--holdout {','.join(names)}: each group holds out 1-5 of {', '.join(CONTEST_TILES)}")
    return folds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.architectures", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", nargs="+", default=[r.arch for r in ROWS], help="architectures to compare")
    p.add_argument("--holdout", nargs="+", default=["Data5,Data7", "Data1,Data8"],
                   help="folds: each a comma-separated group of held-out contest tiles (Data1 Data2 Data4 Data5 Data7 "
                        "Data8 = leave one tile out)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per fit (the shipped recipe: 200)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (the shipped recipe: 8)")
    p.add_argument("--crop", type=int, default=128,
                   help="training crop in px, multiple of 32 (the shipped recipe: 224 / 192)")
    p.add_argument("--width", type=int, default=16, help="--width of every custom architecture (papers: 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (scoring and speed columns)")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch threads for training (on a machine shared with other jobs, 2 threads were ~35x "
                        "slower per step than 1: they wait for each other)")
    p.add_argument("--no-fusions", action="store_true", help="skip the fused rows")
    p.add_argument("--no-speed", action="store_true", help="skip the speed columns (smoke runs)")
    p.add_argument("--study-baseline", action="store_true",
                   help="also run bench.study_baseline (the study's letterboxed pipeline) on the held-out tiles "
                        "(-> <out stem>_study.json)")
    p.add_argument("--out", type=Path, default=RUNS / "architectures.json", help="result JSON (resumed if present)")
    p.add_argument("--work", type=Path, default=None, help="checkpoints and ONNX files (default: <out stem>_work/)")
    p.add_argument("--report", type=Path, help="only print the markdown tables of this result JSON")
    args = p.parse_args(argv)
    if args.report:
        print(render(json.loads(args.report.read_text())))
        return 0
    args.work = args.work or args.out.with_name(args.out.stem + "_work")
    rows = [row_by_name(n) for n in args.rows]
    folds = parse_holdout(args.holdout)
    import warnings

    import torch
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    torch.set_num_threads(args.train_threads)

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    recipe = recipe_of(args)
    command = "python -m bench.architectures " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"benchmark": "architectures", "command": command, "recipe": recipe, "holdout": folds,
              "rows": [], "models": {}, "machine": machine_facts()}
    if args.out.is_file():
        old = json.loads(args.out.read_text())
        if old.get("recipe") == recipe:
            # keep the rows of folds that are still asked for (renumbered), so folds can be added run by run
            number = {",".join(g): k for k, g in enumerate(folds, start=1)}
            kept = []
            for r in old["rows"]:
                key = ",".join(old["holdout"][r["fold"] - 1])
                if key in number:
                    kept.append({**r, "fold": number[key]})
            result.update(rows=kept, models=old["models"])
            log(f"resuming {args.out}: {len(kept)} row(s) kept")
        else:
            log(f"{args.out} holds another recipe; starting afresh")

    def done(model: str, fold: int) -> bool:
        return any(r["model"] == model and r["fold"] == fold for r in result["rows"])

    def save() -> None:
        result["summary"] = summarise(result)
        write_json(args.out, result)

    def add_rows(model: str, fold: int, per_raster: dict, extra: dict) -> None:
        result["rows"] = [r for r in result["rows"] if not (r["model"] == model and r["fold"] == fold)]
        for raster, scores in per_raster.items():
            result["rows"].append({"fold": fold, "raster": raster, "model": model, **extra, **scores})
            log(f"  {model} on {raster}: IoU {scores['iou']:.4f}, object F1 {scores['object_f1']:.3f}, ratio error "
                f"{scores['ratio_error']:+.4f}, tile agreement {scores['tile_agreement']:.4f}")

    rasters = load_tiles()
    from bench.accuracy import read_tile, score

    tiles = {n: read_tile(n) for n in CONTEST_TILES}
    onnx_files: dict[tuple[str, int], str] = {}

    def fuse(fold: int, held: list[str]) -> None:
        for name, (slug, members, fusion) in FUSIONS.items():
            if args.no_fusions or done(name, fold) or not all((m, fold) in onnx_files for m in members):
                continue
            spec = args.work / "ensembles" / f"{slug}_{fold_dir(held)}.json"
            write_json(spec, {"name": f"{name} fold {fold}", "fusion": fusion, "threshold": 0.5, "tile_size": TILE,
                              "overlap": OVERLAP,
                              "members": [{"path": str(Path(onnx_files[(m, fold)]).resolve()), "weight": 1.0}
                                          for m in members]})
            add_rows(name, fold, {n: engine_scores(spec, *tiles[n], args.threads) for n in held}, {})
            info = result["models"].setdefault(name, {"origin": ", ".join(members) + f"; {fusion}"})
            info.update(parameters=int(sum(result["models"][m]["parameters"] for m in members)),
                        onnx_bytes=onnx_bytes([onnx_files[(m, fold)] for m in members]),
                        train_seconds=float(sum(result["models"][m]["train_seconds"] for m in members)))
            if not args.no_speed and "speed" not in info:
                info["speed"] = speed(spec, args.threads, log)
            save()

    for fold, held in enumerate(folds, start=1):
        for n in held:
            if not any(r["model"] == "all cropland (trivial)" and r["raster"] == n for r in result["rows"]):
                result["rows"].append({"fold": fold, "raster": n, "model": "all cropland (trivial)",
                                       **score(np.ones(tiles[n][1].shape, bool), tiles[n][1]), "tile_agreement": 1.0})
        for row in rows:
            onnx_path = args.work / "onnx" / row.slug / f"{fold_dir(held)}.onnx"
            ckpt_path = args.work / row.slug / fold_dir(held) / "last.pt"
            if done(row.arch, fold) and (onnx_path.is_file() or ckpt_path.is_file()):
                onnx_files[(row.arch, fold)] = str(onnx_path if onnx_path.is_file() else ckpt_path)
                fuse(fold, held)
                continue
            log(f"fold {fold} (hold out {', '.join(held)}) {row.arch}: training")
            try:
                trained = train_fold(row, held, rasters, args, log)
                exported = export_fold(trained["checkpoint"], row, held, args)
                model_file = Path(exported["onnx"] or trained["checkpoint"])
                if exported["onnx"] is None:
                    log(f"  {row.arch}: no ONNX export ({exported['onnx_error']}); scored with the engine's PyTorch "
                        "backend")
                per_raster = {n: engine_scores(model_file, *tiles[n], args.threads) for n in held}
            except Exception as exc:
                log(f"fold {fold} {row.arch}: FAILED: {type(exc).__name__}: {exc}")
                result.setdefault("failures", []).append({"fold": fold, "model": row.arch, "error": repr(exc)})
                save()
                continue
            onnx_files[(row.arch, fold)] = str(model_file)
            result["failures"] = [f for f in result.get("failures", []) if (f["model"], f["fold"]) != (row.arch, fold)]
            add_rows(row.arch, fold, per_raster, {"fp16": exported["fp16"],
                                                  "backend": "onnx" if exported["onnx"] else "torch"})
            info = result["models"].setdefault(row.arch, {"origin": row.origin})
            info.setdefault("train_seconds_per_fold", {})[",".join(held)] = trained["seconds"]
            seconds = list(info["train_seconds_per_fold"].values())
            info.update(parameters=trained["parameters"], onnx_bytes=exported["bytes"],
                        onnx_error=exported.get("onnx_error"),
                        train_seconds=float(np.mean(seconds)), width=args.width if row.takes_width else None,
                        decoder_channels=list(row.decoder_channels) if row.decoder_channels else None)
            log(f"{row.arch}: {trained['parameters'] / 1e6:.2f} M parameters, {trained['seconds']:.0f} s training")
            if not args.no_speed and "speed" not in info:
                info["speed"] = speed(model_file, args.threads, log)
                log(f"{row.arch}: forward {info['speed']['forward_mpx_per_s']:.2f} Mpx/s, end to end "
                    f"{info['speed']['e2e_mpx_per_s']:.2f} Mpx/s")
            save()
            fuse(fold, held)
    save()
    if args.study_baseline:
        from bench import study_baseline

        study_out = args.out.with_name(args.out.stem + "_study.json")
        numbers = sorted({CONTEST_TILES.index(n) + 1 for held in folds for n in held})
        study_baseline.main(["--folds", *map(str, numbers), "--threads", str(args.train_threads), "--device", "cpu",
                             "--out", str(study_out)])
    print(render(result))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
