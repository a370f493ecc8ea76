"""Render the benchmark result files (``runs/bench/*.json``) as the markdown tables of ``docs/BENCHMARKS.md``.

Examples::

    .venv/bin/python -m bench.report                         # every result file found, to stdout
    .venv/bin/python -m bench.report --speed runs/bench/speed_cuda.json --bound runs/bench/bound_cuda.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RUNS


def _load(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path and path.is_file() else None


def machine_line(res: dict) -> str:
    """One line: CPU, cores, RAM, GPU, load before, versions, date, commit."""
    m = res["machine"]
    v = m["versions"]
    ort = v.get("onnxruntime") or v.get("onnxruntime-gpu")
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    idle = m["load_before"]
    return (f"Machine: {m['cpu']['model_name']} (family {m['cpu']['family']} model {m['cpu']['model']}; "
            f"{', '.join(m['cpu']['flags'])}), {m['cores']} cores, {m['ram_gib']} GiB RAM{gpu}; load average "
            f"before {' / '.join(str(x) for x in idle['loadavg'])}{'' if idle['idle'] else ' (NOT idle)'}; "
            f"onnxruntime {ort}, torch {v.get('torch')}, numpy {v['numpy']}, GDAL {v.get('gdal')}, "
            f"Python {v['python']}; {m['date_utc']} UTC, commit {m['git']['commit']}"
            f"{' (engine modified)' if m['git']['engine_dirty'] else ''}.")


def accuracy_tables(acc: dict | None, study: dict | None) -> str:
    """Mean-over-folds table (members, ensemble, +TTA, study baseline) and per-fold IoU table."""
    summary = (acc or {}).get("summary", []) + (study or {}).get("summary", [])
    rows = (acc or {}).get("rows", []) + (study or {}).get("rows", [])
    if not summary:
        return ""
    out = ["| model | TTA | IoU | F1 | precision | recall | boundary F1 (2 px) | mean abs ratio error | "
           "object P / R / F1 (IoU ≥ 0.5) | pooled IoU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        out.append(f"| {s['model']} | {'yes' if s['tta'] else 'no'} | {s['iou']:.4f} | {s['f1']:.4f} | "
                   f"{s['precision']:.4f} | {s['recall']:.4f} | {s['boundary_f1']:.4f} | "
                   f"{s['mean_abs_ratio_error']:.4f} | {s['object_precision']:.2f} / {s['object_recall']:.2f} / "
                   f"{s['object_f1']:.2f} | {s['pooled_iou']:.4f} |")
    keys = list(dict.fromkeys((r["model"], r["tta"]) for r in rows))
    rasters = list(dict.fromkeys(r["raster"] for r in rows))
    out += ["", "IoU per held-out tile (ratio error in brackets):", "",
            "| model | TTA | " + " | ".join(rasters) + " |", "|---|---|" + "---|" * len(rasters)]
    for model, tta in keys:
        cells = []
        for raster in rasters:
            hit = [r for r in rows if (r["model"], r["tta"], r["raster"]) == (model, tta, raster)]
            cells.append(f"{hit[0]['iou']:.4f} ({hit[0]['ratio_error']:+.3f})" if hit else "")
        out.append(f"| {model} | {'yes' if tta else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def speed_tables(speed: dict | None, bound: dict | None) -> str:
    """Per run: size, seconds, Mpx/s, peak RSS, share of the bound, stage shares; then the fitted lines."""
    if not speed:
        return ""
    vs = {(e["model"], e["size"]): e for e in (bound or {}).get("versus_speed", [])}
    out = ["| model | raster (px) | Mpx | tiles | seconds | Mpx/s | share of bound | peak RSS (MiB) | read | inference "
           "| blend | write raster | vectorize | write vector | other |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in speed["rows"]:
        if not r.get("ok"):
            out.append(f"| {r['model']} | {r['size']:g} Mpx | failed | | | | | | | | | | | | |")
            continue
        sh = r["stage_share"]
        e = vs.get((r["model"], r["size"]))
        share = f"{100 * e['share_of_bound']:.1f} %" if e else "–"
        out.append(f"| {r['model']} | {r['width']} × {r['height']} | {r['mpx']:.1f} | {r['tiles']} | {r['e2e_s']:.1f} "
                   f"| {r['mpx_per_s']:.3f} | {share} | {r['peak_rss_mib']:.0f} | "
                   + " | ".join(f"{100 * v:.1f} %" for v in sh.values()) + " |")
    out += ["", "| model | fitted seconds = a + b · Mpx | R² | asymptotic Mpx/s (1/b) |", "|---|---|---|---|"]
    for name, s in speed.get("summary", {}).items():
        if s.get("fit_seconds_per_mpx"):
            out.append(f"| {name} | a = {s['fit_intercept_s']:.2f} s, b = {s['fit_seconds_per_mpx']:.3f} s/Mpx | "
                       f"{s['fit_r2']:.5f} | {s['asymptotic_mpx_per_s']:.3f} |")
    return "\n".join(out)


def bound_table(bound: dict | None) -> str:
    """Per model and member: ms per tile, forward Mpx/s, and the engine's inference call against it."""
    if not bound:
        return ""
    out = ["| model | member | tile / batch | ms per tile | forward Mpx/s (tile px) | engine predict call vs bound |",
           "|---|---|---|---|---|---|"]
    for name, b in bound["models"].items():
        for m in b["members"]:
            out.append(f"| {name} | {m['member']} ({m['label']}) | {b['tile']} / {b['batch']} | "
                       f"{1e3 * m['seconds_per_tile']:.1f} | {m['forward_mpx_per_s']:.3f} | |")
        out.append(f"| **{name}** | **all** | {b['tile']} / {b['batch']} | **{1e3 * b['seconds_per_tile']:.1f}** | "
                   f"**{b['forward_mpx_per_s']:.3f}** | {100 * b['engine_predict_share_of_bound']:.1f} % |")
    return "\n".join(out)


def backends_table(res: dict | None) -> str:
    """Forward pass per backend / precision / device, and the end-to-end runs."""
    if not res:
        return ""
    out = ["| device | backend | precision | batch × tile | forward Mpx/s | ms per tile | max abs Δp vs first row | "
           "class flips |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if not r["ok"]:
            out.append(f"| {r['device']} | {r['backend']} | {r['precision']} | | n/a: {r['error'][:80]} | | | |")
            continue
        out.append(f"| {r['device']} | {r['backend']} | {r['precision']} | {r['batch']} × {r['tile']} | "
                   f"{r['forward_mpx_per_s']:.3f} | {1e3 * r['seconds_per_tile']:.1f} | "
                   f"{r['max_abs_diff_vs_first']:.1e} | {100 * r['class_flips_vs_first']:.3f} % |")
    if res.get("pending"):
        out.append(f"| cuda | onnxruntime / torch | fp32 / fp16 | | pending: {res['pending']} | | | |")
    if res.get("e2e"):
        out += ["", "| device | backend | end to end Mpx/s | seconds | peak RSS (MiB) | cropland ratio | fields |",
                "|---|---|---|---|---|---|---|"]
        for e in res["e2e"]:
            if e["ok"]:
                out.append(f"| {e['device']} | {e['backend']} | {e['mpx_per_s']:.3f} | {e['e2e_s']:.1f} | "
                           f"{e['peak_rss_mib']:.0f} | {e['cropland_ratio']:.4f} | {e['fields']} |")
    return "\n".join(out)


def vectorize_table(res: dict | None) -> str:
    """Engine strip vectoriser vs GDAL polygonize."""
    if not res:
        return ""
    out = [f"Mask: {res['mpx']:.1f} Mpx, {res['cropland_pixels']} cropland px = {res['pixel_area_m2'] / 1e6:.3f} km².",
           "", "| method | seconds | Mpx/s | peak RSS (MiB) | polygons | total area (km²) | area vs pixel count |",
           "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["ok"]:
            out.append(f"| {r['method']} | {r['seconds']:.1f} | {r['mpx_per_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                       f"{r['polygons']} | {r['area_m2'] / 1e6:.4f} | {r['area_vs_pixels']:+.1e} |")
    if "area_rel_diff" in res:
        out.append(f"\nTotal areas differ by {res['area_rel_diff']:.1e} (target ≤ 1e-3: "
                   f"{'met' if res['area_agrees_0_1_percent'] else 'missed'}); the engine is "
                   f"{res['speedup_engine_vs_gdal']:.2f}× GDAL's speed.")
    if "speedup_stitcher_vs_geos" in res:
        out.append(f"\nThe seam stitcher runs at {res['speedup_stitcher_vs_geos']:.2f}× the speed of GEOS's coverage "
                   f"union; same polygons and areas: {'yes' if res['same_polygons_stitcher_geos'] else 'NO'}.")
    return "\n".join(out)


def cluster_tables(res: dict | None) -> str:
    """bench.cluster: one process vs LocalClusters, and the 10 Gpx estimate."""
    if not res:
        return ""
    out = ["| run | workers | wall s | speed-up vs one process | bands | client peak RSS (MiB) | worker peak RSS (MiB) "
           "| mask identical |", "|---|---|---|---|---|---|---|---|"]
    rows = {r["config"]: r for r in res["rows"] if r.get("ok")}
    for r in res["rows"]:
        if not r.get("ok"):
            out.append(f"| {r['config']} | | failed | | | | | |")
            continue
        mode = r["config"].split("_")[0]
        base = rows.get(f"{mode}_single")
        speedup = f"{base['wall_s'] / r['wall_s']:.2f}" if base else ""
        workers = r["workers"] or "one process"
        rss = ", ".join(f"{v:.0f}" for v in r.get("worker_peak_rss_mib", [])) or "–"
        same = {True: "yes", False: "**no**"}.get(r.get("mask_identical"), "–")
        out.append(f"| {mode} | {workers} | {r['wall_s']:.1f} | {speedup} | {r.get('bands', '–')} | "
                   f"{r['client_peak_rss_mib']:.0f} | {rss} | {same} |")
    summary = res.get("summary", {})
    lines = ["\n".join(out)]
    if "overhead_per_band_s" in summary:
        lines.append(f"Overhead per band (1-worker bands vs one process, over {rows['mosaic_1']['bands']} bands): "
                     f"{summary['overhead_per_band_s']:.1f} s; tiles inferred twice at seams or for the whole "
                     f"run's batches: {100 * summary['duplicate_tiles_1_worker']:.1f} %.")
    est = summary.get("estimate_10gpx")
    if est:
        table = ["| workers | band rows | bands | duplicated tiles | one band (h) | parallel (h) | client, serial (h) "
                 "| total (h) |", "|---|---|---|---|---|---|---|---|"]
        for e in est["rows"]:
            table.append(f"| {e['workers']} | {e['band_rows']} | {e['bands']} | {100 * e['duplicate_tiles']:.1f} % | "
                         f"{e['band_h']:.2f} | {e['parallel_h']:.2f} | {e['client_serial_h']:.2f} | "
                         f"{e['total_h']:.2f} |")
        lines.append(f"Estimate for a 100,000 x 100,000 px mosaic (10 Gpx) from these costs: "
                     f"{est['per_tile_s']:.2f} worker-seconds per inferred tile (one core), client "
                     f"{est['client_s_per_mpx']:.3f} s per Mpx.\n\n" + "\n".join(table))
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--accuracy", type=Path, default=RUNS / "accuracy.json")
    p.add_argument("--study", type=Path, default=RUNS / "study_baseline.json")
    p.add_argument("--speed", type=Path, default=RUNS / "speed.json")
    p.add_argument("--bound", type=Path, default=RUNS / "bound.json")
    p.add_argument("--backends", type=Path, default=RUNS / "backends.json")
    p.add_argument("--vectorize", type=Path, default=RUNS / "vectorize.json")
    p.add_argument("--cluster", type=Path, default=RUNS / "cluster.json")
    args = p.parse_args(argv)
    sections = []
    acc, study = _load(args.accuracy), _load(args.study)
    speed, bound = _load(args.speed), _load(args.bound)
    backends, vec = _load(args.backends), _load(args.vectorize)
    cluster = _load(args.cluster)
    for title, res, table in (("Accuracy", acc or study, accuracy_tables(acc, study)),
                              ("Speed end to end", speed, speed_tables(speed, bound)),
                              ("Forward-pass bound", bound, bound_table(bound)),
                              ("Backends", backends, backends_table(backends)),
                              ("Vectorising", vec, vectorize_table(vec)),
                              ("Dask cluster", cluster, cluster_tables(cluster))):
        if table:
            sections.append(f"## {title}\n\n{machine_line(res)}\nCommand: `{res['command']}`\n\n{table}")
    print("\n\n".join(sections) if sections else "no result files found under runs/bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
