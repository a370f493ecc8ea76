"""Dask cluster runs: one process vs a LocalCluster of 1 and 2 workers, for many scenes and for one large mosaic
in row bands; speed-up, overhead per band, peak RSS per worker, and an estimate for a 10 Gpx mosaic.

Each configuration runs in a fresh process (so that the client's peak RSS is its own); the LocalCluster's worker
processes report their own peak RSS (``VmHWM``) before the cluster closes. The band run's mask is compared with
the single run's (it must be equal value for value, with the real models too).

The estimate for a 10 Gpx (100,000 x 100,000 px) mosaic on 16/64/256 workers uses the measured costs: worker
seconds per inferred tile (from the 2-worker band run, one core per worker, the bands' fixed costs included) and
the client's serial seconds per Mpx (stitching, assembling the mask, writing the GeoPackage); the engine's band
plan for that size (hence the tiles inferred twice at seams) is computed, and bands run in rounds over workers.

Examples::

    .venv/bin/python -m bench.cluster                                   # 8 x 4 Mpx scenes, one 64 Mpx mosaic
    .venv/bin/python -m bench.cluster --scene-mpx 1 --mosaic-mpx 4 --no-idle-check   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from bench.common import (
    DATA,
    DEFAULT_ENSEMBLE,
    RUNS,
    add_idle_args,
    build_mosaic,
    check_idle_from_args,
    machine_facts,
    mosaic_side,
    peak_rss_mib,
    run_child,
    write_json,
)

ESTIMATE_SIDE = 100_000  # 10 Gpx
ESTIMATE_WORKERS = (16, 64, 256)


def _band_cost_task(*args, **kwargs):
    """run_band, timed on the worker (wall seconds and tiles inferred ride back in the result)."""
    from engine.bands import run_band

    t0 = time.perf_counter()
    result = run_band(*args, **kwargs)
    result.seconds["band_wall"] = time.perf_counter() - t0
    result.seconds[f"band_{result.index}_wall"] = result.seconds["band_wall"]
    return result


def child(args) -> int:
    """One configuration in this fresh process; writes its measurements to --out-json."""
    import rasterio

    from engine.api import extract, extract_many, load_model
    from engine.options import ExtractOptions, OutputPaths

    inputs = [Path(p) for p in args.inputs]
    out_dir = Path(args.out_dir)
    options = ExtractOptions()

    def outs(path: Path) -> OutputPaths:
        return OutputPaths(vector=out_dir / f"{path.stem}.gpkg", mask=out_dir / f"{path.stem}_mask.tif",
                           overwrite=True)

    row: dict = {"workers": args.workers, "mode": args.mode}
    t0 = time.perf_counter()
    if args.workers == 0:  # one process, as without --cluster
        if args.mode == "scenes":
            extract_many(inputs, args.model, [outs(p) for p in inputs], options)
        else:
            r = extract(inputs[0], load_model(args.model, options), outs(inputs[0]), options, keep_fields=False)
            row["stage_seconds"] = r.stage_seconds
        row["wall_s"] = time.perf_counter() - t0
        row["client_peak_rss_mib"] = peak_rss_mib()
    else:
        from engine.bands import extract_bands
        from engine.cluster import connect

        client = connect(f"local:{args.workers}")
        row["cluster_start_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        if args.mode == "scenes":
            extract_many(inputs, args.model, [outs(p) for p in inputs], options, client=client)
        else:
            r = extract_bands(client, inputs[0], args.model, outs(inputs[0]), options, band_rows=args.band_rows,
                              task=_band_cost_task)
            seconds = dict(r.stage_seconds)
            walls = [v for k, v in seconds.items() if k.startswith("band_") and k != "band_wall"]
            row.update(stage_seconds={k: v for k, v in seconds.items() if not k.startswith("band_")},
                       bands=len(walls), band_wall_s=walls, device=r.device)
        row["wall_s"] = time.perf_counter() - t1
        row["worker_peak_rss_mib"] = sorted(client.run(peak_rss_mib).values())
        row["client_peak_rss_mib"] = peak_rss_mib()
        client.close()
    if args.mode == "mosaic" and args.compare_mask:
        with rasterio.open(out_dir / f"{inputs[0].stem}_mask.tif") as a, rasterio.open(args.compare_mask) as b:
            row["mask_identical"] = bool((a.read(1) == b.read(1)).all())
    write_json(args.out_json, row)
    return 0


def _tiles_and_duplicates(side: int, tile: int, overlap: int, batch: int, band_rows: int) -> dict:
    """Tiles of a ``side`` x ``side`` raster and the tiles its bands infer (seams and batch alignment)."""
    from engine.bands import plan_bands
    from engine.tiling import TileGrid

    grid = TileGrid(side, side, tile, overlap)
    bands = plan_bands(grid, 1, band_rows)
    ncols = len(grid.col_origins)
    inferred = 0
    for b in bands:
        first, end = b.tile_row0 * ncols, (b.tile_row1 + 1) * ncols
        inferred += ((end - 1) // batch - first // batch + 1) * batch
    return {"tiles": len(grid), "inferred": inferred, "bands": len(bands)}


def estimate(mosaic_side_px: int, two: dict, tile: int, overlap: int, batch: int,
             tile_seconds: float | None = None) -> dict:
    """10 Gpx on 16/64/256 workers from the measured 2-worker band run (see the module docstring).

    Worker seconds per inferred tile (band fixed costs included; ``tile_seconds`` replaces the measured value,
    e.g. one taken on an idle machine) x the tiles each band of the engine's default plan infers, bands spread
    over the workers in rounds; plus the client's serial seconds per Mpx.
    """
    from engine.bands import default_band_rows
    from engine.tiling import TileGrid

    measured = _tiles_and_duplicates(mosaic_side_px, tile, overlap, batch, two["band_rows"])
    per_tile = tile_seconds or sum(two["band_wall_s"]) / measured["inferred"]
    stages = two["stage_seconds"]
    client_s = sum(stages.get(k, 0.0) for k in ("stitch", "assemble_rasters", "write_vector"))
    client_per_mpx = client_s / (mosaic_side_px**2 / 1e6)
    rows = []
    for workers in ESTIMATE_WORKERS:
        grid = TileGrid(ESTIMATE_SIDE, ESTIMATE_SIDE, tile, overlap)
        rows_per_band = default_band_rows(grid, workers)
        plan = _tiles_and_duplicates(ESTIMATE_SIDE, tile, overlap, batch, rows_per_band)
        band_s = plan["inferred"] / plan["bands"] * per_tile
        parallel = math.ceil(plan["bands"] / workers) * band_s
        serial = client_per_mpx * ESTIMATE_SIDE**2 / 1e6
        rows.append({"workers": workers, "band_rows": rows_per_band, "bands": plan["bands"],
                     "duplicate_tiles": plan["inferred"] / plan["tiles"] - 1, "band_h": band_s / 3600,
                     "parallel_h": parallel / 3600, "client_serial_h": serial / 3600,
                     "total_h": (parallel + serial) / 3600})
    return {"per_tile_s": per_tile, "client_s_per_mpx": client_per_mpx, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_ENSEMBLE)
    p.add_argument("--scenes", type=int, default=8, help="number of scenes")
    p.add_argument("--scene-mpx", type=float, default=4, help="size of each scene (Mpx = 2^20 px)")
    p.add_argument("--mosaic-mpx", type=float, default=64, help="size of the one large mosaic")
    p.add_argument("--band-rows", type=int, default=None, help="rows per band (default: the engine's)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="LocalCluster sizes to compare")
    p.add_argument("--modes", nargs="+", choices=("scenes", "mosaic"), default=["scenes", "mosaic"],
                   help="which comparisons to run")
    p.add_argument("--out", type=Path, default=RUNS / "cluster.json", help="result JSON")
    p.add_argument("--tile-seconds", type=float, default=None,
                   help="worker-seconds per tile on one core for the 10 Gpx estimate (default: measured here)")
    p.add_argument("--estimate-only", action="store_true",
                   help="recompute the 10 Gpx estimate of an existing --out file (with --tile-seconds), no runs")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per configuration")
    add_idle_args(p)
    g = p.add_argument_group("internal (one configuration in a child process)")
    g.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--mode", help=argparse.SUPPRESS)
    g.add_argument("--inputs", nargs="*", help=argparse.SUPPRESS)
    g.add_argument("--out-dir", help=argparse.SUPPRESS)
    g.add_argument("--out-json", help=argparse.SUPPRESS)
    g.add_argument("--compare-mask", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.workers = args.workers[0]
        return child(args)

    from engine.api import load_model
    from engine.bands import default_band_rows
    from engine.context import default_batch_size
    from engine.options import ExtractOptions
    from engine.tiling import TileGrid

    if args.estimate_only:
        result = json.loads(args.out.read_text())
        two = next(r for r in result["rows"] if r["config"] == "mosaic_2" and r["ok"])
        result["summary"]["estimate_10gpx"] = estimate(result["mosaic"]["side"], two, result["tile"],
                                                       result["overlap"], result["batch"], args.tile_seconds)
        write_json(args.out, result)
        print(json.dumps(result["summary"]["estimate_10gpx"], indent=2))
        return 0
    scene_side, mosaic_px = mosaic_side(args.scene_mpx), mosaic_side(args.mosaic_mpx)
    scenes = [build_mosaic(DATA / f"contest_image_{scene_side}_s{k}.tif", scene_side, "image", "contest", seed=k)
              for k in range(args.scenes)] if "scenes" in args.modes else []
    mosaic = build_mosaic(DATA / f"contest_image_{mosaic_px}.tif", mosaic_px, "image", "contest")
    ens = load_model(args.model, ExtractOptions(threads=1))
    tile, overlap = ens.tile_size, min(ens.overlap, ens.tile_size // 2)
    batch = default_batch_size(tile, False)
    idle = check_idle_from_args(args)
    result = {"benchmark": "cluster", "command": "python -m bench.cluster " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(idle), "model": str(args.model), "tile": tile, "overlap": overlap,
              "batch": batch, "scenes": {"count": args.scenes, "side": scene_side},
              "mosaic": {"side": mosaic_px}, "rows": []}
    out_dir = RUNS / "out" / "cluster"
    single_mask = out_dir / "single" / f"{mosaic.stem}_mask.tif"
    for mode, inputs in (("scenes", scenes), ("mosaic", [mosaic])):
        if mode not in args.modes:
            continue
        for workers in [0, *args.workers]:
            tag = f"{mode}_{workers or 'single'}"
            child_json = RUNS / "tmp" / f"cluster_{tag}.json"
            child_json.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "bench.cluster", "--child", "--mode", mode, "--workers", str(workers),
                   "--model", str(args.model), "--inputs", *map(str, inputs), "--out-json", str(child_json),
                   "--out-dir", str(out_dir / ("single" if workers == 0 else f"w{workers}"))]
            band_rows = args.band_rows or default_band_rows(TileGrid(mosaic_px, mosaic_px, tile, overlap),
                                                            max(workers, 1))
            if mode == "mosaic" and workers:
                cmd += ["--band-rows", str(band_rows), "--compare-mask", str(single_mask)]
            print(f"{tag}: running", flush=True)
            run = run_child(cmd, RUNS / "logs" / f"cluster_{tag}.log", args.timeout)
            row = {"config": tag, "ok": run["returncode"] == 0, "process_wall_s": run["wall_s"]}
            if row["ok"]:
                row.update(json.loads(child_json.read_text()))
                if mode == "mosaic" and workers:
                    row["band_rows"] = band_rows
                print(f"{tag}: {row['wall_s']:.1f} s", flush=True)
            else:
                print(f"{tag}: FAILED; see {RUNS / 'logs' / f'cluster_{tag}.log'}", flush=True)
            result["rows"].append(row)
            write_json(args.out, result)
    rows = {r["config"]: r for r in result["rows"] if r["ok"]}
    summary = {}
    for mode in ("scenes", "mosaic"):
        base = rows.get(f"{mode}_single")
        for workers in args.workers:
            r = rows.get(f"{mode}_{workers}")
            if base and r:
                summary[f"{mode}_{workers}_speedup_vs_single"] = base["wall_s"] / r["wall_s"]
        if rows.get(f"{mode}_1") and rows.get(f"{mode}_2"):
            summary[f"{mode}_2_vs_1_worker"] = rows[f"{mode}_1"]["wall_s"] / rows[f"{mode}_2"]["wall_s"]
    one, base = rows.get("mosaic_1"), rows.get("mosaic_single")
    if one and base:
        summary["overhead_per_band_s"] = (one["wall_s"] - base["wall_s"]) / one["bands"]
        plan = _tiles_and_duplicates(mosaic_px, tile, overlap, batch, one["band_rows"])
        summary["duplicate_tiles_1_worker"] = plan["inferred"] / plan["tiles"] - 1
    two = rows.get("mosaic_2")
    if two:
        summary["estimate_10gpx"] = estimate(mosaic_px, two, tile, overlap, batch, args.tile_seconds)
    result["summary"] = summary
    write_json(args.out, result)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
