"""Checks of a default-ensemble candidate beyond the contest cross-validation (used for MODEL_CARD.md).

    python training/recipes/us_checks.py holdout  MODEL [MODEL ...] [--data DIR] [--json OUT]
    python training/recipes/us_checks.py tiling   MODEL [MODEL ...] [--image TIF]
    python training/recipes/us_checks.py overlay  MODEL --out PNG [--image TIF]
    python training/recipes/us_checks.py speed    MODEL [MODEL ...] --image TIF [--threads 2]

MODEL is an ``.onnx`` member or an ``ensemble.json``; everything runs through the engine
(:func:`engine.api.extract_array`, ONNX Runtime), cropland = probability >= the model's threshold, no opening.

holdout: the US held-out set = every 5th tile (5th, 10th, ..., 40th) of the 40 NAIP tiles of
``naip_us_fields_agoro`` in sorted name order; these 8 tiles are never trained on (the training recipe links the
other 32 into its extra-data folder). Each 1024 x 1024 px tile (1 m) is resampled to 512 x 512 px at 2 m (the
training resolution) the way training reads extra data (image: area average, rounded to uint8; label: nearest
neighbour) and scored with :mod:`engine.metrics` (1 = field; water, woodland, farmsteads, roads = other).

tiling: agreement of the masks from one tile covering the whole 934 x 723 NAIP sample (1024 px tiles, no
overlap) with 256 px tiles (64 px overlap) - a tiled engine should not depend on the tile size.

speed: seconds for one whole engine run on --image (e.g. a 600 x 500 contest tile) on --threads CPU threads.

overlay: the NAIP sample beside the same image with non-cropland tinted magenta and the mask outlined in yellow.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "naip_us_fields_agoro"
SAMPLE = ROOT / "resources" / "samples" / "naip_nd_2012.tif"
warnings.filterwarnings("ignore", message=".*Affine.identity.*")  # arrays without a transform


def holdout_tiles(data: Path) -> list[str]:
    """Every 5th tile name (1-based positions 5, 10, ..., 40) of the sorted extent masks."""
    names = sorted(p.stem for p in (data / "derived" / "extent_masks").glob("*.tif"))
    return [n for i, n in enumerate(names, start=1) if i % 5 == 0]


def read_2m(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(3, 512, 512) uint8 image and (512, 512) uint8 label of one tile resampled from 1 m to 2 m."""
    import cv2
    import rasterio

    with rasterio.open(data / "images_png" / f"{name}.png") as ds:
        img = ds.read([1, 2, 3])
    with rasterio.open(data / "derived" / "extent_masks" / f"{name}.tif") as ds:
        lab = ds.read(1)
    size = (img.shape[2] // 2, img.shape[1] // 2)
    img = np.stack([cv2.resize(b.astype(np.float32), size, interpolation=cv2.INTER_AREA) for b in img])
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    lab = cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST)
    return img, lab


def _run(model, array: np.ndarray, **opts) -> tuple[np.ndarray, np.ndarray]:
    from engine.api import ExtractOptions, extract_array

    options = ExtractOptions(opening_px=0, pixel_size_m=opts.pop("pixel_size_m", 2.0), **opts)
    _, prob, mask = extract_array(array, model, options=options)
    return prob, mask


def _load(path: str, threads: int | None = None):
    from engine.api import ExtractOptions, load_model

    return load_model(path, ExtractOptions(opening_px=0, threads=threads))


def cmd_holdout(args) -> None:
    from engine.metrics import confusion, metrics_from_counts, pixel_metrics

    names = holdout_tiles(args.data)
    tiles = [read_2m(args.data, n) for n in names]
    result = {"tiles": names, "models": {}}
    header = "| model | " + " | ".join(f"t{i + 1}" for i in range(len(names))) + " | mean IoU | pooled IoU | mean F1 |"
    print(header)
    print("|" + "---|" * (len(names) + 4))
    for path in args.models:
        model = _load(path, args.threads)
        rows, total = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        for (img, lab) in tiles:
            _, mask = _run(model, img)
            m = pixel_metrics(mask == 1, lab == 1)
            c = confusion(mask == 1, lab == 1)
            total = {k: total[k] + c[k] for k in total}
            rows.append(m)
        pooled = metrics_from_counts(total)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("iou", "f1", "precision", "recall", "accuracy")}
        p = Path(path)
        label = p.stem if p.suffix == ".onnx" else f"{p.parent.name}/{p.name}"
        result["models"][path] = {"rows": rows, "mean": mean, "pooled": pooled}
        print(f"| {label} | " + " | ".join(f"{r['iou']:.3f}" for r in rows)
              + f" | **{mean['iou']:.3f}** | {pooled['iou']:.3f} | {mean['f1']:.3f} |", flush=True)
    base = [pixel_metrics(np.ones_like(lab), lab == 1)["iou"] for _, lab in tiles]
    result["all_cropland_iou"] = base
    print("| all-cropland baseline | " + " | ".join(f"{b:.3f}" for b in base) + f" | {np.mean(base):.3f} | | |")
    print("tiles: " + ", ".join(f"t{i + 1} = {n}" for i, n in enumerate(names)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def _sample(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read()


def cmd_tiling(args) -> None:
    arr = _sample(args.image)
    print("| model | 1024 px tile vs 256/64 px tiles | cropland share (1024 / 256) |")
    print("|---|---|---|")
    for path in args.models:
        model = _load(path, args.threads)
        _, big = _run(model, arr, tile_size=1024, overlap=0, pixel_size_m=5.0)
        _, small = _run(model, arr, tile_size=256, overlap=64, pixel_size_m=5.0)
        agree = float(np.mean(big == small))
        print(f"| {Path(path).name} | {agree * 100:.2f} % | {np.mean(big == 1):.3f} / {np.mean(small == 1):.3f} |",
              flush=True)


def cmd_overlay(args) -> None:
    import cv2

    arr = _sample(args.image)
    model = _load(args.models[0], args.threads)
    _, mask = _run(model, arr, pixel_size_m=5.0)
    rgb = np.transpose(arr[:3], (1, 2, 0)).astype(np.float32)
    crop = mask == 1
    out = rgb.copy()
    out[~crop] = 0.45 * rgb[~crop] + 0.55 * np.array([200, 0, 200], np.float32)  # other: magenta
    edge = cv2.morphologyEx(crop.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edge] = (255, 255, 0)
    both = np.concatenate([rgb, np.full((rgb.shape[0], 8, 3), 255, np.float32), out], axis=1)
    cv2.imwrite(str(args.out), cv2.cvtColor(both.astype(np.uint8), cv2.COLOR_RGB2BGR))
    print(f"{args.out}: cropland share {crop.mean():.3f}")


def cmd_speed(args) -> None:
    """Whole engine run (read, tiles, members, fusion, mask) on one raster, median of --repeat after a warm-up."""
    import time

    from engine.api import ExtractOptions, extract, load_model

    options = ExtractOptions(device="cpu", threads=args.threads or 2, pixel_size_m=2.0)
    for path in args.models:
        t0 = time.perf_counter()
        model = load_model(path, options)
        t_load = time.perf_counter() - t0
        extract(args.image, model, options=options)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            extract(args.image, model, options=options)
            times.append(time.perf_counter() - t0)
        print(f"{path}: {args.image.name} in {np.median(times):.2f} s (median of {args.repeat}, min "
              f"{min(times):.2f} s; {options.threads} threads; loading {t_load:.2f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("holdout", "tiling", "overlay", "speed"))
    p.add_argument("models", nargs="+", help=".onnx members or ensemble.json files")
    p.add_argument("--data", type=Path, default=DATA, help="naip_us_fields_agoro folder")
    p.add_argument("--image", type=Path, default=SAMPLE, help="raster for tiling/overlay")
    p.add_argument("--out", type=Path, help="overlay PNG")
    p.add_argument("--json", help="holdout: write the numbers here")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (speed: default 2)")
    p.add_argument("--repeat", type=int, default=5, help="speed: timed runs")
    args = p.parse_args(argv)
    {"holdout": cmd_holdout, "tiling": cmd_tiling, "overlay": cmd_overlay, "speed": cmd_speed}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
