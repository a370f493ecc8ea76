"""Backends side by side: ONNX Runtime vs PyTorch, fp32 vs fp16 (and bf16), CPU vs CUDA, on one member.

Forward pass only, on the same preloaded batch of real tiles (the engine's tile size and batch), per variant:

* ``onnxruntime fp32``: the exported member, as the engine runs it;
* ``onnxruntime fp16 weights``: the same graph with float16 weights + Cast (``training export --fp16``): half the
  file, float32 compute;
* ``torch fp32``: the training checkpoint through the engine's torch backend (``training.backend.TorchMember``);
* ``torch fp16`` / ``torch bf16``: the same under ``torch.autocast`` (on CPU the engine itself never uses them);
* on CUDA (when usable): ``onnxruntime`` with CUDAExecutionProvider and ``torch`` fp32 (TF32 off) / fp16.

Each row: seconds per tile, forward Mpx/s, and agreement with ONNX Runtime fp32 on the same device family (max
|Δ probability| and the share of pixels whose class flips at 0.5). With ``--e2e-mpx`` the engine's whole extraction
also runs once per backend on a mosaic of that size (fresh process each, as in ``bench.speed``).

Examples::

    .venv/bin/python -m bench.backends                     # first member of the default ensemble, CPU
    .venv/bin/python -m bench.backends --device cuda --out runs/bench/backends_cuda.json    # GPU machine
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.bound import real_tiles, time_calls
from bench.common import (
    DATA,
    DEFAULT_ENSEMBLE,
    RUNS,
    add_idle_args,
    build_mosaic,
    check_idle_from_args,
    checkpoint_for,
    ensemble_members,
    machine_facts,
    mosaic_side,
    run_child,
    write_json,
)


def fp16_weights_copy(onnx_path: Path) -> Path:
    """The member with float16 weights + Cast nodes (as ``training export --fp16`` writes), under runs/bench."""
    import onnx

    from training.export import weights_to_fp16

    out = RUNS / "models" / f"{onnx_path.stem}_fp16w.onnx"
    if not out.is_file() or out.stat().st_mtime < onnx_path.stat().st_mtime:
        proto = onnx.load(str(onnx_path))
        weights_to_fp16(proto)
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(out))
    return out


def ort_variant(path: Path, device: str, threads: int | None, x: np.ndarray):
    """(run, probability) for an ONNX file in the engine's session; ``run()`` returns (N, H, W) probabilities."""
    from engine.backends import OnnxMember

    member = OnnxMember(path, device=device, threads=threads)
    if device == "cuda" and member.device != "cuda":
        raise RuntimeError("onnxruntime has no usable CUDAExecutionProvider here")
    feed = {member._input_name: x.astype(member._input_dtype)}

    def run():
        return member.session.run(None, feed)[0][:, member.meta.cropland_class]

    return run, member.label


def torch_variant(ckpt: Path, device: str, threads: int | None, x: np.ndarray, dtype: str):
    """(run, label) for a checkpoint in the engine's ``TorchMember`` under autocast ``dtype`` (fp32 = none)."""
    import torch

    from training.backend import TorchMember

    member = TorchMember(ckpt, device=device, threads=threads, fp16=False)
    if device == "cuda" and member.device != "cuda":
        raise RuntimeError("torch sees no usable CUDA device here")
    if member.device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(member.device)
    cast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype)
    cls = member.meta.cropland_class

    def run():
        with torch.inference_mode(), torch.autocast(member.device, dtype=cast or torch.float32,
                                                    enabled=cast is not None):
            out = member.model(xt).float().softmax(1)[:, cls]
        return out.cpu().numpy()

    return run, member.label


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx", type=Path, default=None, help="member .onnx (default: first member of the ensemble)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="its training checkpoint (default: runs/final/<metadata name>/last.pt)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="cpu rows always run; cuda rows run when CUDA is usable (auto) or must (cuda)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per call (default: the engine's per device)")
    p.add_argument("--seconds", type=float, default=15.0, help="minimum timing seconds per variant")
    p.add_argument("--e2e-mpx", type=float, default=16.0, help="also run the engine end to end per backend on a "
                   "mosaic of this many Mpx (0 = skip)")
    p.add_argument("--out", type=Path, default=RUNS / "backends.json", help="result JSON")
    add_idle_args(p)
    args = p.parse_args(argv)

    from engine.backends import OnnxMember
    from engine.context import default_batch_size

    onnx_path = args.onnx or ensemble_members(DEFAULT_ENSEMBLE)[0]
    ckpt = args.checkpoint or checkpoint_for(onnx_path)
    meta = OnnxMember(onnx_path, device="cpu", threads=1).meta
    tile = meta.tile_size
    fp16w = fp16_weights_copy(onnx_path)
    import torch

    devices = ["cpu"]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append("cuda")
    e2e_input = None
    if args.e2e_mpx:
        side = mosaic_side(args.e2e_mpx)
        e2e_input = build_mosaic(DATA / f"contest_image_{side}.tif", side, "image")
    idle = check_idle_from_args(args)
    result = {"benchmark": "backends", "command": "python -m bench.backends " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(idle), "onnx": str(onnx_path), "checkpoint": str(ckpt) if ckpt else None,
              "tile": tile, "rows": [], "e2e": []}
    if "cuda" not in devices:
        result["pending"] = "CUDA rows: no usable CUDA device in this run; run with --device cuda on the GPU machine"

    for device in devices:
        batch = args.batch_size or default_batch_size(tile, device == "cuda")
        raw, valid = real_tiles(batch, tile)
        from engine.normalize import normalize

        x = normalize(raw, valid, meta, None)
        variants = [("onnxruntime", "fp32", lambda d=device, x=x: ort_variant(onnx_path, d, args.threads, x)),
                    ("onnxruntime", "fp16 weights, fp32 compute",
                     lambda d=device, x=x: ort_variant(fp16w, d, args.threads, x))]
        if ckpt is not None:
            variants += [("torch", dt, lambda d=device, dt=dt, x=x: torch_variant(ckpt, d, args.threads, x, dt))
                         for dt in ("fp32", "fp16", "bf16")]
        reference = None
        for backend, precision, make in variants:
            row = {"backend": backend, "precision": precision, "device": device, "batch": batch, "tile": tile}
            try:
                run, label = make()
                prob = run()
                t = time_calls(run, args.seconds)
            except Exception as exc:  # a variant the platform cannot run is reported, not fatal
                row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
                result["rows"].append(row)
                print(f"{device} {backend} {precision}: n/a ({row['error']})", flush=True)
                continue
            if reference is None:
                reference = prob
            row.update(ok=True, label=label, **t, seconds_per_tile=t["median_s"] / batch,
                       forward_mpx_per_s=batch * tile * tile / 1e6 / t["median_s"],
                       max_abs_diff_vs_first=float(np.max(np.abs(prob - reference))),
                       class_flips_vs_first=float(np.mean((prob > 0.5) != (reference > 0.5))))
            result["rows"].append(row)
            print(f"{device} {backend} {precision}: {row['forward_mpx_per_s']:.3f} Mpx/s forward, "
                  f"max |Δp| {row['max_abs_diff_vs_first']:.1e}, flips {100 * row['class_flips_vs_first']:.3f} %",
                  flush=True)
            write_json(args.out, result)

        if e2e_input is not None:
            for backend, model in (("onnx", onnx_path), ("torch", ckpt)):
                if model is None:
                    continue
                child_json = RUNS / "tmp" / f"backends_e2e_{device}_{backend}.json"
                child_json.unlink(missing_ok=True)
                cmd = [sys.executable, "-m", "bench.speed", "--child", "--input", str(e2e_input), "--model", str(model),
                       "--vector", str(RUNS / "out" / f"backends_{device}_{backend}.gpkg"),
                       "--out-json", str(child_json), "--device", device, "--backend", backend,
                       "--tile-size", str(tile), "--overlap", str(meta.overlap)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                run = run_child(cmd, RUNS / "logs" / f"backends_e2e_{device}_{backend}.log")
                entry = {"device": device, "backend": backend, "ok": run["returncode"] == 0}
                if entry["ok"]:
                    m = json.loads(child_json.read_text())
                    entry.update(e2e_s=m["e2e_s"], mpx=m["pixels"] / 1e6, mpx_per_s=m["pixels"] / 1e6 / m["e2e_s"],
                                 peak_rss_mib=m["peak_rss_mib"], stage_seconds=m["stage_seconds"],
                                 fields=m["fields"], cropland_ratio=m["cropland_ratio"], batch=m["batch"])
                    print(f"{device} end to end, {backend}: {entry['mpx_per_s']:.3f} Mpx/s, ratio "
                          f"{m['cropland_ratio']:.4f}, {m['fields']} fields", flush=True)
                result["e2e"].append(entry)
                write_json(args.out, result)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
