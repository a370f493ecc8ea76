"""End-to-end speed: raster file -> field polygons on disk, in megapixels per second, with stage shares and peak RSS.

For each model (the default ensemble and one member) and each size (1, 16, 64, 256 "Mpx" = 1024², 4096², 8192²,
16384² px mosaics of real contest tiles), one fresh process loads the model and runs ``engine.api.extract`` with a
GeoPackage output; the parent records its wall time, the engine's ``stage_seconds`` and the child's peak RSS
(``VmHWM``). A least-squares line ``seconds = a + b * Mpx`` per model shows whether time grows linearly with
pixels; RSS per size shows whether memory stays flat.

Examples::

    .venv/bin/python -m bench.speed                                  # 1..256 Mpx, ensemble + first member, CPU
    .venv/bin/python -m bench.speed --sizes 1 16 --no-idle-check     # smoke run
    .venv/bin/python -m bench.speed --device cuda --out runs/bench/speed_cuda.json   # on the GPU machine

The split's cost (issue 12: splitting and resampling add at most 15 % end to end, peak RSS <= 1.5 GB at 256 Mpx):
``--split none auto`` runs each size with both, one after the other, and prints a table of end-to-end and CPU
seconds, seconds per stage, peak RSS and fields of each, with the difference to the first::

    .venv/bin/python -m bench.speed --sizes 256 --models ensemble --model MODEL --split none auto --wait-idle 600 \
        --out runs/bench/split_cost_256.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import (
    DATA,
    DEFAULT_ENSEMBLE,
    RUNS,
    add_device_args,
    add_idle_args,
    add_ort_args,
    build_mosaic,
    busy_processes,
    check_idle_from_args,
    checkpoint_for,
    ensemble_members,
    idle_state,
    linear_fit,
    machine_facts,
    mosaic_side,
    patch_ort,
    peak_rss_mib,
    run_child,
    write_json,
)

STAGES = ("read", "inference", "blend", "write_raster", "split", "vectorize", "resample_back", "write_vector")


def torch_model_for(model: Path) -> Path:
    """The PyTorch counterpart of an ONNX model or ensemble (checkpoints from ``runs/final``), for --backend torch."""
    if model.suffix in (".pt", ".ckpt", ".pth"):
        return model
    if model.suffix == ".onnx":
        ckpt = checkpoint_for(model)
        if ckpt is None:
            sys.exit(f"no training checkpoint found for {model} under runs/final/<name>/last.pt; pass --model X.pt")
        return ckpt
    spec = json.loads(model.read_text())
    ckpts = [checkpoint_for(m) for m in ensemble_members(model)]
    if any(c is None for c in ckpts):
        sys.exit(f"not every member of {model} has a checkpoint under runs/final/<name>/last.pt")
    spec["members"] = [{"path": str(c), "weight": m.get("weight", 1.0)} for c, m in zip(ckpts, spec["members"],
                                                                                          strict=True)]
    out = RUNS / "models" / f"{model.stem}_torch.json"
    write_json(out, spec)
    return out


def tiling_of(model: Path) -> tuple[int, int]:
    """(tile_size, overlap) the engine uses for an ONNX model or ensemble (read on the CPU)."""
    from engine.api import load_model
    from engine.options import ExtractOptions

    ens = load_model(model, ExtractOptions(device="cpu", backend="onnx", threads=1))
    return ens.tile_size, ens.overlap


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all threads (import and model load included)."""
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def child(args) -> int:
    """One run in this (fresh) process; writes its measurements to --out-json."""
    t0 = time.perf_counter()
    patch_ort(args.ort_arena, args.ort_spinning)
    from engine.api import extract, load_model
    from engine.options import ExtractOptions, OutputPaths
    from engine.tiling import TileGrid

    import_s = time.perf_counter() - t0
    options = ExtractOptions(device=args.device, backend=args.backend, threads=args.threads,
                             batch_size=args.batch_size, tile_size=args.tile_size, overlap=args.overlap,
                             split=args.split, resample=args.resample)
    t1 = time.perf_counter()
    ens = load_model(args.model, options)
    load_s = time.perf_counter() - t1
    vector = Path(args.vector)
    t2 = time.perf_counter()
    result = extract(args.input, ens, OutputPaths(vector=vector, overwrite=True), options, keep_fields=False)
    extract_s = time.perf_counter() - t2
    import rasterio

    with rasterio.open(args.input) as ds:
        h, w = ds.height, ds.width
    tile = args.tile_size or ens.tile_size
    overlap = args.overlap if args.overlap is not None else min(ens.overlap, tile // 2)
    grid = TileGrid(h, w, tile, overlap)
    out = {
        "import_s": import_s, "load_s": load_s, "extract_s": extract_s, "e2e_s": load_s + extract_s,
        "stage_seconds": result.stage_seconds, "engine_seconds": result.seconds, "height": h, "width": w,
        "pixels": h * w, "tiles": len(grid), "tile": tile, "overlap": overlap, "batch": ens.batch_size,
        "members": len(ens.members), "device": result.device, "fields": result.field_count,
        "cropland_ratio": result.cropland_ratio, "vector_bytes": vector.stat().st_size,
        "peak_rss_mib": peak_rss_mib(), "split": result.split, "resampling": result.resampling,
        "cpu_s": cpu_seconds(), "stage_cpu_seconds": result.stage_cpu_seconds,
    }
    if not args.keep_output:
        vector.unlink()
    write_json(args.out_json, out)
    return 0


def summarise(rows: list[dict]) -> dict:
    """Per model (and --split, when several): fitted seconds-per-Mpx line, asymptotic Mpx/s and the RSS range."""
    out = {}
    several = len({r.get("split_arg") for r in rows}) > 1
    for model, split in dict.fromkeys((r["model"], r.get("split_arg")) for r in rows):
        name = f"{model} --split {split}" if several else model
        mine = [r for r in rows if r["model"] == model and r.get("split_arg") == split and r.get("ok")]
        fit = linear_fit([r["mpx"] for r in mine], [r["e2e_s"] for r in mine])
        out[name] = {
            "fit_seconds_per_mpx": fit.get("slope"), "fit_intercept_s": fit.get("intercept"), "fit_r2": fit.get("r2"),
            "asymptotic_mpx_per_s": 1.0 / fit["slope"] if fit.get("slope") else None,
            "mpx_per_s": {r["size"]: r["mpx_per_s"] for r in mine},
            "peak_rss_mib": {r["size"]: r["peak_rss_mib"] for r in mine},
        }
    return out


def split_cost(rows: list[dict]) -> list[dict]:
    """Per model and size, each run against the first ``--split`` run: seconds end to end and of CPU, per stage
    (wall and the process's CPU during it), peak RSS, fields, and the relative cost."""
    out = []
    for key in dict.fromkeys((r["model"], r["size"]) for r in rows):
        runs = [r for r in rows if (r["model"], r["size"]) == key and r.get("ok")]
        if not runs:
            continue
        base = runs[0]
        for r in runs:
            out.append({
                "model": key[0], "size": key[1], "split": r["split_arg"], "method": r["split"].get("method"),
                "e2e_s": r["e2e_s"], "cpu_s": r.get("cpu_s"), "peak_rss_mib": r["peak_rss_mib"],
                "fields": r["fields"], "stage_seconds": r["stage_seconds"],
                "stage_cpu_seconds": r.get("stage_cpu_seconds", {}),
                "e2e_vs_first": r["e2e_s"] / base["e2e_s"] - 1,
                "cpu_vs_first": (r["cpu_s"] / base["cpu_s"] - 1) if r.get("cpu_s") and base.get("cpu_s") else None,
                "rss_vs_first_mib": r["peak_rss_mib"] - base["peak_rss_mib"],
            })
    return out


def split_cost_table(cost: list[dict]) -> str:
    """Markdown table of :func:`split_cost`."""
    stages = [s for s in STAGES if any(c["stage_seconds"].get(s) for c in cost)]
    head = ["model", "Mpx", "--split", "method", "end to end s", "CPU s", *[f"{s} s (CPU s)" for s in stages],
            "peak RSS MiB", "fields", "end to end vs first", "CPU vs first", "RSS vs first MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cost:
        cpu = "–" if c["cpu_s"] is None else f"{c['cpu_s']:.1f}"
        cpu_rel = "–" if c["cpu_vs_first"] is None else f"{c['cpu_vs_first']:+.1%}"
        lines.append("| " + " | ".join([
            c["model"], f"{c['size']:g}", c["split"], str(c["method"]), f"{c['e2e_s']:.1f}", cpu,
            *[f"{c['stage_seconds'].get(s, 0.0):.1f} ({c['stage_cpu_seconds'].get(s, 0.0):.1f})" for s in stages],
            f"{c['peak_rss_mib']:,.0f}",
            str(c["fields"]), f"{c['e2e_vs_first']:+.1%}", cpu_rel, f"{c['rss_vs_first_mib']:+,.0f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 16, 64, 256],
                   help="mosaic sizes in Mpx of 2^20 px (square mosaics of real tiles)")
    p.add_argument("--model", type=Path, default=DEFAULT_ENSEMBLE, help="ensemble.json or .onnx (the 'ensemble' run)")
    p.add_argument("--member", default="first",
                   help="the single-member run: 'first' (first member of --model), a model path, or 'none'")
    p.add_argument("--models", choices=("both", "ensemble", "member"), default="both", help="which runs to do")
    p.add_argument("--source", choices=("contest", "naip"), default="contest", help="tiles the mosaics are made of")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per inference call (default: engine's)")
    p.add_argument("--tile-size", type=int, default=None, help="tile px (default: the model's)")
    p.add_argument("--overlap", type=int, default=None, help="overlap px (default: the model's)")
    p.add_argument("--out", type=Path, default=RUNS / "speed.json", help="result JSON")
    p.add_argument("--split", default=["auto"], nargs="+", choices=("auto", "boundary", "image", "extent", "none"),
                   help="engine --split; several (e.g. 'none auto') run each size with each and print their "
                        "difference (the split's cost)")
    p.add_argument("--resample", default="auto", choices=("auto", "off"), help="engine --resample")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    p.add_argument("--keep-output", action="store_true", help="keep the GeoPackages under runs/bench/out")
    add_device_args(p)
    add_ort_args(p)
    add_idle_args(p)
    g = p.add_argument_group("internal (one run in a child process)")
    g.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--input", help=argparse.SUPPRESS)
    g.add_argument("--vector", help=argparse.SUPPRESS)
    g.add_argument("--out-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.split = args.split[0]
        return child(args)

    if not args.model.exists():
        sys.exit(f"model {args.model} not found (the default ensemble is written by the training job)")
    models = {}
    if args.models in ("both", "ensemble"):
        models["ensemble"] = args.model
    if args.models in ("both", "member") and args.member != "none":
        models["member"] = (ensemble_members(args.model)[0] if args.member == "first" and args.model.suffix == ".json"
                            else args.model if args.member == "first" else Path(args.member))
    tilings = {name: tiling_of(m) for name, m in models.items() if m.suffix in (".json", ".onnx")}
    if args.backend == "torch":
        models = {name: torch_model_for(m) for name, m in models.items()}

    inputs = {}
    for size in args.sizes:
        side = mosaic_side(size)
        inputs[size] = build_mosaic(DATA / f"{args.source}_image_{side}.tif", side, "image", args.source)
    if not args.no_idle_check and args.wait_idle < 300:
        args.wait_idle = 300  # building the mosaics raised the load; let it settle
    idle = check_idle_from_args(args)
    result = {"benchmark": "speed", "command": "python -m bench.speed " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(idle), "device": args.device, "backend": args.backend,
              "threads": args.threads, "source": args.source, "ort_arena": args.ort_arena,
              "ort_spinning": args.ort_spinning, "tile_size": args.tile_size, "overlap": args.overlap,
              "models": {k: str(v) for k, v in models.items()}, "rows": []}
    for name, model in models.items():
        tile, overlap = tilings.get(name, (None, None))
        tile = args.tile_size or tile
        overlap = args.overlap if args.overlap is not None else overlap
        for size, path in inputs.items():
            for split in args.split:
                tag = f"{name}_{mosaic_side(size)}" + (f"_split_{split}" if len(args.split) > 1 else "")
                child_json = RUNS / "tmp" / f"speed_{tag}.json"
                child_json.unlink(missing_ok=True)
                cmd = [sys.executable, "-m", "bench.speed", "--child", "--input", str(path), "--model", str(model),
                       "--vector", str(RUNS / "out" / f"speed_{tag}.gpkg"), "--out-json", str(child_json),
                       "--device", args.device, "--backend", args.backend, "--ort-arena", args.ort_arena,
                       "--ort-spinning", args.ort_spinning, "--split", split, "--resample", args.resample]
                for flag, value in (("--threads", args.threads), ("--batch-size", args.batch_size),
                                    ("--tile-size", tile), ("--overlap", overlap)):
                    if value is not None:
                        cmd += [flag, str(value)]
                if args.keep_output:
                    cmd.append("--keep-output")
                before = idle_state(args.max_load)
                others = busy_processes()
                print(f"{tag}: running ({before['loadavg']} load)", flush=True)
                run = run_child(cmd, RUNS / "logs" / f"speed_{tag}.log", args.timeout)
                row = {"model": name, "size": size, "split_arg": split, "ok": run["returncode"] == 0,
                       "process_wall_s": run["wall_s"],
                       "loadavg_before": before["loadavg"], "others_busy": others}
                if row["ok"]:
                    m = json.loads(child_json.read_text())
                    row.update(m)
                    row["mpx"] = m["pixels"] / 1e6
                    row["mpx_per_s"] = row["mpx"] / m["e2e_s"]
                    staged = sum(m["stage_seconds"].values())
                    row["stage_share"] = {k: m["stage_seconds"].get(k, 0.0) / m["e2e_s"] for k in STAGES}
                    row["stage_share"]["other (model load, setup)"] = max(m["e2e_s"] - staged, 0.0) / m["e2e_s"]
                    print(f"{tag}: {m['e2e_s']:.1f} s, {row['mpx_per_s']:.3f} Mpx/s, peak RSS "
                          f"{m['peak_rss_mib']:.0f} MiB, {m['fields']} fields", flush=True)
                else:
                    print(f"{tag}: FAILED (exit {run['returncode']}); see {RUNS / 'logs' / f'speed_{tag}.log'}",
                          flush=True)
                result["rows"].append(row)
                result["summary"] = summarise(result["rows"])
                write_json(args.out, result)
    print(json.dumps(result["summary"], indent=2))
    if len(args.split) > 1:
        result["split_cost"] = split_cost(result["rows"])
        write_json(args.out, result)
        print(split_cost_table(result["split_cost"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
