"""The forward-pass bound: the models' bare forward pass on the same device, threads, tile and batch as the engine.

For every member of each model, one preloaded batch of real tiles (the contest mosaic, normalised as the member's
metadata says; ``batch x bands x tile x tile``) is run again and again through the very session the engine builds
(``OnnxMember.session.run`` for ONNX Runtime, ``TorchMember.model`` under ``inference_mode`` for PyTorch, CUDA
synchronised): seconds per tile, and forward Mpx/s in tile pixels. Next to it, the engine's whole inference call on
the same batch (``Ensemble.predict``: normalisation, forward, probability extraction, fusion), to split any gap.

With ``--speed-json`` (the output of ``bench.speed``), each end-to-end run is set against its bound: the same
number of tiles (the engine's grid over the raster, overlaps included) times the ensemble's seconds per tile; the
ratio ``bound seconds / end-to-end seconds`` is the share of the bound reached (target: >= 85 % on CPU and >= 70 %
on GPU for the ensemble at 256 Mpx).

Examples::

    .venv/bin/python -m bench.bound --speed-json runs/bench/speed.json
    .venv/bin/python -m bench.bound --speed-json runs/bench/speed_cuda.json --out runs/bench/bound_cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    DATA,
    DEFAULT_ENSEMBLE,
    RUNS,
    add_device_args,
    add_idle_args,
    add_ort_args,
    build_mosaic,
    check_idle_from_args,
    machine_facts,
    mosaic_side,
    patch_ort,
    write_json,
)


def real_tiles(n: int, tile: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` raw (3, tile, tile) float32 windows of the 16 Mpx contest mosaic, and their validity (all True)."""
    import rasterio
    from rasterio.windows import Window

    path = build_mosaic(DATA / f"contest_image_{mosaic_side(16)}.tif", mosaic_side(16), "image")
    rng = np.random.default_rng(seed)
    with rasterio.open(path) as ds:
        raw = np.stack([ds.read(window=Window(int(c), int(r), tile, tile), out_dtype="float32")
                        for r, c in rng.integers(0, ds.height - tile, size=(n, 2))])
    return raw, np.ones((n, tile, tile), bool)


def time_calls(fn, min_seconds: float, min_runs: int = 3, warmup: int = 2) -> dict:
    """Median / min seconds of ``fn()`` over at least ``min_runs`` calls and ``min_seconds`` seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


def forward_fn(member, x: np.ndarray):
    """A closure running ``member``'s bare forward pass on the preloaded, normalised batch ``x``."""
    if hasattr(member, "session"):
        feed = {member._input_name: x.astype(member._input_dtype)}
        session = member.session
        return lambda: session.run(None, feed)
    torch = member._torch
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(member.device)
    sync = torch.cuda.synchronize if member.device == "cuda" else (lambda: None)

    def run():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=member.fp16):
            member.model(xt)
        sync()

    return run


def measure_model(model: Path, args, batch: int | None, cache: dict) -> dict:
    """Bound of one model (ensemble or single file): per member and summed, per tile."""
    from engine.api import load_model
    from engine.context import default_batch_size
    from engine.normalize import normalize
    from engine.options import ExtractOptions

    options = ExtractOptions(device=args.device, backend=args.backend, threads=args.threads,
                             tile_size=args.tile_size)
    ens = load_model(model, options)
    tile = args.tile_size or ens.tile_size
    on_gpu = any(getattr(m, "device", "cpu") == "cuda" for m in ens.members)
    batch = batch or args.batch_size or default_batch_size(tile, on_gpu)
    ens.batch_size = batch
    raw, valid = real_tiles(batch, tile)
    members = []
    for member in ens.members:
        key = (str(member.path), tile, batch)
        if key not in cache:
            x = normalize(raw, valid, member.meta, None)
            t = time_calls(forward_fn(member, x), args.seconds)
            cache[key] = {"member": member.path.name, "label": member.label, **t,
                          "seconds_per_tile": t["median_s"] / batch,
                          "forward_mpx_per_s": batch * tile * tile / 1e6 / t["median_s"]}
        members.append(cache[key])
    engine_call = time_calls(lambda: ens.predict(raw, valid, None, False), args.seconds)
    per_tile = sum(m["seconds_per_tile"] for m in members)
    return {"model": str(model), "tile": tile, "batch": batch, "device": ens.device, "members": members,
            "seconds_per_tile": per_tile, "forward_mpx_per_s": tile * tile / 1e6 / per_tile,
            "engine_predict_seconds_per_tile": engine_call["median_s"] / batch,
            "engine_predict_share_of_bound": per_tile / (engine_call["median_s"] / batch)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bound", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_ENSEMBLE,
                   help="ensemble.json / .onnx / .pt (ignored with --speed-json, which names its models)")
    p.add_argument("--speed-json", type=Path, default=None, help="bench.speed result to set against the bound")
    p.add_argument("--tile-size", type=int, default=None, help="tile px (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per call (default: the engine's)")
    p.add_argument("--seconds", type=float, default=20.0, help="minimum timing seconds per member")
    p.add_argument("--out", type=Path, default=RUNS / "bound.json", help="result JSON")
    add_device_args(p)
    add_ort_args(p)
    add_idle_args(p)
    args = p.parse_args(argv)

    speed = json.loads(args.speed_json.read_text()) if args.speed_json else None
    if speed:
        models = {name: Path(path) for name, path in speed["models"].items()}
        args.device, args.backend = speed.get("device", args.device), speed.get("backend", args.backend)
        args.threads = args.threads or speed.get("threads")
        args.ort_arena, args.ort_spinning = speed.get("ort_arena", "on"), speed.get("ort_spinning", "off")
    else:
        models = {"model": args.model}
    patch_ort(args.ort_arena, args.ort_spinning)
    build_mosaic(DATA / f"contest_image_{mosaic_side(16)}.tif", mosaic_side(16), "image")
    idle = check_idle_from_args(args)
    result = {"benchmark": "bound", "command": "python -m bench.bound " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(idle), "device": args.device, "backend": args.backend,
              "threads": args.threads, "ort_arena": args.ort_arena, "ort_spinning": args.ort_spinning,
              "models": {}, "versus_speed": []}
    cache: dict = {}
    for name, model in models.items():
        batches = {r["batch"] for r in (speed or {}).get("rows", []) if r.get("ok") and r["model"] == name}
        b = result["models"][name] = measure_model(model, args, min(batches) if batches else None, cache)
        print(f"{name}: bound {b['seconds_per_tile'] * 1e3:.1f} ms per {b['tile']} px tile (batch {b['batch']}), "
              f"{b['forward_mpx_per_s']:.3f} Mpx/s forward; engine predict reaches "
              f"{100 * b['engine_predict_share_of_bound']:.1f} % of it", flush=True)
        write_json(args.out, result)
    for row in (speed or {}).get("rows", []):
        if not row.get("ok") or row["model"] not in result["models"]:
            continue
        b = result["models"][row["model"]]
        bound_s = row["tiles"] * b["seconds_per_tile"]
        entry = {"model": row["model"], "size": row["size"], "mpx": row["mpx"], "tiles": row["tiles"],
                 "e2e_s": row["e2e_s"], "bound_s": bound_s, "share_of_bound": bound_s / row["e2e_s"],
                 "e2e_mpx_per_s": row["mpx_per_s"], "bound_mpx_per_s": row["mpx"] / bound_s,
                 "inference_stage_s": row["stage_seconds"].get("inference")}
        result["versus_speed"].append(entry)
        print(f"{row['model']} {row['size']:g} Mpx: end-to-end {row['e2e_s']:.1f} s vs bound {bound_s:.1f} s -> "
              f"{100 * entry['share_of_bound']:.1f} % of the bound", flush=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
