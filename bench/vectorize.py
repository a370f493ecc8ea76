"""Vectorising a large cropland mask: the engine's strip vectoriser against GDAL's polygonize, whole raster at once.

The mask is a mosaic of the real contest labels (default 256 "Mpx" = 16384² px, 2 m pixels, UTM 50N), with a 2 px
background road around each 600 x 500 tile so fields do not merge across tiles. Each method runs in a fresh process:

* ``engine``: ``engine.pipeline.fields_from_mask`` (strips of ``engine.runtime.STRIP_ROWS`` = 256 rows ->
  4-connected components -> polygons, merged across strip seams; no opening, no filters), i.e. the extraction's
  vectorising stage on a mask file;
* ``gdal``: ``rasterio.features.shapes`` (GDAL polygonize, 4-connected) on the whole band read at once, each
  polygon turned into a shapely geometry;
* ``engine-geos``: the engine with its seam stitcher (``engine.vectorize.stitch_many``) switched off, so every
  field cut by strip seams is merged by the fallback, GEOS's coverage union of its fragments.

``--seams`` is the case the stitcher exists for: the label mosaic without roads between tiles (``--gap 0``), so
fields merge across tiles into components that cross many strips (one spans most of the raster, with its holes);
it compares ``engine`` with ``engine-geos`` (and checks that both give the same polygons and areas).

Reported: wall time (reading included), Mpx/s, peak RSS (``VmHWM``), polygon count and total area, and whether the
two total areas agree to 0.1 % (and with the pixel count x pixel area).

Examples::

    .venv/bin/python -m bench.vectorize                       # 256 Mpx label mosaic
    .venv/bin/python -m bench.vectorize --mpx 1 --no-idle-check   # smoke run
    .venv/bin/python -m bench.vectorize --seams --mpx 64          # stitcher vs GEOS coverage union
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    DATA,
    RUNS,
    add_idle_args,
    build_mosaic,
    check_idle_from_args,
    idle_state,
    machine_facts,
    mosaic_side,
    peak_rss_mib,
    run_child,
    write_json,
)

METHODS = ("engine", "gdal", "engine-geos")


def vectorize_engine(mask: Path) -> tuple[int, float]:
    """(polygon count, total area m²) with the engine's strip vectoriser."""
    from engine.pipeline import fields_from_mask

    records = fields_from_mask(mask)
    return len(records), float(sum(r.area_m2 for r in records))


def vectorize_engine_geos(mask: Path) -> tuple[int, float]:
    """(polygon count, total area m²) with the engine's strip vectoriser, fragments merged by GEOS only."""
    import engine.vectorize

    engine.vectorize.stitch_many = lambda fields, seam_ys: [None] * len(fields)  # then GEOS's fallback
    return vectorize_engine(mask)


def vectorize_gdal(mask: Path) -> tuple[int, float]:
    """(polygon count, total area m²) with GDAL polygonize over the whole raster at once."""
    import rasterio
    import shapely.geometry
    from rasterio.features import shapes

    with rasterio.open(mask) as ds:
        band = ds.read(1)
        transform = ds.transform
    count, area = 0, 0.0
    for geom, _ in shapes(band, mask=band == 1, connectivity=4, transform=transform):
        area += shapely.geometry.shape(geom).area
        count += 1
    return count, area


def pixel_area(mask: Path) -> tuple[int, float]:
    """(cropland pixel count, their area m²) counted strip by strip (projected CRS: constant pixel area)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(mask) as ds:
        n = 0
        for row0 in range(0, ds.height, 2048):
            h = min(2048, ds.height - row0)
            n += int(np.count_nonzero(ds.read(1, window=Window(0, row0, ds.width, h)) == 1))
        return n, n * abs(ds.transform.a * ds.transform.e)


def child(args) -> int:
    t0 = time.perf_counter()
    run = {"engine": vectorize_engine, "gdal": vectorize_gdal, "engine-geos": vectorize_engine_geos}[args.child]
    count, area = run(Path(args.mask))
    seconds = time.perf_counter() - t0
    write_json(args.out_json, {"seconds": seconds, "polygons": count, "area_m2": area, "peak_rss_mib": peak_rss_mib()})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.vectorize", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mpx", type=float, default=256, help="mosaic size in Mpx of 2^20 px (square)")
    p.add_argument("--mask", type=Path, default=None, help="use this mask raster (1 = cropland) instead of a mosaic")
    p.add_argument("--gap", type=int, default=None, help="background px between mosaic tiles (default 2; 0 with "
                   "--seams)")
    p.add_argument("--seams", action="store_true", help="seam-heavy case: no roads between tiles, engine vs "
                   "engine-geos")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                   help="default: engine gdal (engine engine-geos with --seams)")
    p.add_argument("--repeats", type=int, default=1, help="runs per method (the fastest is reported)")
    p.add_argument("--out", type=Path, default=RUNS / "vectorize.json", help="result JSON")
    add_idle_args(p)
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--out-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.gap is None:
        args.gap = 0 if args.seams else 2
    if args.methods is None:
        args.methods = ["engine", "engine-geos"] if args.seams else ["engine", "gdal"]

    mask = args.mask
    if mask is None:
        side = mosaic_side(args.mpx)
        mask = build_mosaic(DATA / f"contest_label_{side}_gap{args.gap}.tif", side, "label", gap=args.gap)
    pixels, px_area = pixel_area(mask)
    idle = check_idle_from_args(args)
    import rasterio

    with rasterio.open(mask) as ds:
        size = ds.width * ds.height
    result = {"benchmark": "vectorize", "command": "python -m bench.vectorize " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(idle), "mask": str(mask), "pixels": size, "mpx": size / 1e6,
              "seams": args.seams, "gap": args.gap,
              "cropland_pixels": pixels, "pixel_area_m2": px_area, "rows": []}
    for method in args.methods:
        runs = []
        for k in range(args.repeats):
            out_json = RUNS / "tmp" / f"vectorize_{method}.json"
            out_json.unlink(missing_ok=True)
            before = idle_state(args.max_load)
            run = run_child([sys.executable, "-m", "bench.vectorize", "--child", method, "--mask", str(mask),
                             "--out-json", str(out_json)], RUNS / "logs" / f"vectorize_{method}_{k}.log")
            if run["returncode"] != 0:
                print(f"{method}: FAILED (exit {run['returncode']})", flush=True)
                continue
            m = json.loads(out_json.read_text())
            m.update(loadavg_before=before["loadavg"], process_wall_s=run["wall_s"])
            runs.append(m)
        if not runs:
            result["rows"].append({"method": method, "ok": False})
            continue
        best = min(runs, key=lambda r: r["seconds"])
        row = {"method": method, "ok": True, **best, "mpx_per_s": size / 1e6 / best["seconds"],
               "all_seconds": [r["seconds"] for r in runs],
               "area_vs_pixels": best["area_m2"] / px_area - 1.0 if px_area else None}
        result["rows"].append(row)
        print(f"{method}: {best['seconds']:.1f} s ({row['mpx_per_s']:.1f} Mpx/s), peak RSS {best['peak_rss_mib']:.0f} "
              f"MiB, {best['polygons']} polygons, area {best['area_m2'] / 1e6:.3f} km² "
              f"({row['area_vs_pixels']:+.2e} vs pixel count)", flush=True)
    ok = {r["method"]: r for r in result["rows"] if r["ok"]}
    if "engine" in ok and "gdal" in ok:
        rel = abs(ok["engine"]["area_m2"] / ok["gdal"]["area_m2"] - 1.0)
        result["area_rel_diff"] = rel
        result["area_agrees_0_1_percent"] = rel <= 1e-3
        result["speedup_engine_vs_gdal"] = ok["gdal"]["seconds"] / ok["engine"]["seconds"]
        print(f"total areas differ by {rel:.2e} (target <= 1e-3: {'met' if rel <= 1e-3 else 'MISSED'}); engine / GDAL "
              f"speed {result['speedup_engine_vs_gdal']:.2f}x", flush=True)
    if "engine" in ok and "engine-geos" in ok:
        e, g = ok["engine"], ok["engine-geos"]
        result["same_polygons_stitcher_geos"] = (e["polygons"] == g["polygons"]
                                                 and abs(e["area_m2"] / g["area_m2"] - 1.0) <= 1e-9)
        result["speedup_stitcher_vs_geos"] = g["seconds"] / e["seconds"]
        print(f"stitcher vs GEOS coverage union: {result['speedup_stitcher_vs_geos']:.2f}x the speed, peak RSS "
              f"{e['peak_rss_mib']:.0f} vs {g['peak_rss_mib']:.0f} MiB, same polygons and areas: "
              f"{result['same_polygons_stitcher_geos']}", flush=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
