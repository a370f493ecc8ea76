"""``python -m training.v2``: the v2 (extent + boundary) model chain on the dataset catalogue.

    python -m training.v2 catalogue [--datasets contest,gf2,...] [--data-root DIR] [--json OUT]
    python -m training.v2 fit --arch smp:Unet:mobilenet_v2 --out runs/v2/unet [--datasets ...] [--gsd 2] ...
    python -m training.v2 export runs/v2/unet/best.pt --onnx models/unet.onnx [--fp16]
    python -m training.v2 ensemble a.onnx b.onnx --out ensemble.json [--name cropland-default-v2]
    python -m training.v2 evaluate ensemble.json [--datasets ...] [--json OUT]
    python -m training.v2 quantize member_fp32.onnx --out member_int8.onnx [--tiles 64]

``catalogue`` reads every set and prints its splits (scenes, megapixels, extent and boundary ratio, fields);
``fit`` trains one multi-head member (:mod:`training.multihead_fit`; checkpoints, ``--resume``, ``train.log``);
``export`` writes the ONNX with outputs ``extent`` and ``boundary`` (:mod:`training.multihead_export`);
``ensemble`` writes ``ensemble.json`` (:func:`training.ensemble.write_ensemble_json`); ``evaluate`` scores exported
members or an ensemble on every set's validation split through ONNX Runtime (:mod:`training.multihead_eval`);
``quantize`` writes an int8 QDQ copy of an fp32 member calibrated on training tiles (:mod:`training.quantize`).
Errors print one line ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import CroplandError


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _shares(text: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in (item.split("=") for item in _list(text))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected name=weight,..., got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .datasets import READERS

    p = argparse.ArgumentParser(prog="python -m training.v2", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sets = ",".join(READERS)
    c = sub.add_parser("catalogue", help="read every data set and print its splits")
    c.add_argument("--datasets", type=_list, default=list(READERS), help=f"catalogue names (default {sets})")
    c.add_argument("--data-root", type=Path, help="folder holding the data sets (default ../shared/data)")
    c.add_argument("--gsd", type=float, help="resample every set to this GSD (m/px) first")
    c.add_argument("--limit", type=int, help="read at most this many tiles per tiled set")
    c.add_argument("--json", type=Path, help="also write the table as JSON here")

    f = sub.add_parser("fit", help="train one extent + boundary member",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("--arch", required=True, help="registry architecture (see python -m training fit --help)")
    f.add_argument("--out", required=True, type=Path, help="run folder (last.pt, best.pt, train.log, ...)")
    f.add_argument("--datasets", type=_list, default=list(READERS), help="catalogue names, comma-separated")
    f.add_argument("--data-root", type=Path, help="folder holding the data sets (default ../shared/data)")
    f.add_argument("--gsd", type=float, help="train on this GSD (m/px; default: every set at its native GSD)")
    f.add_argument("--gsd-range", type=_floats, default=[1.0, 10.0],
                   help="min,max GSD the engine may feed without resampling (metadata)")
    f.add_argument("--width", type=int, help="base width of custom architectures")
    f.add_argument("--decoder-channels", type=lambda t: [int(v) for v in _list(t)],
                   help="smp decoder widths, e.g. 128,64,32,16,16")
    f.add_argument("--distance", action="store_true", help="add the distance-to-edge head")
    f.add_argument("--epochs", type=int, default=20)
    f.add_argument("--steps-per-epoch", type=int, default=50)
    f.add_argument("--max-steps", type=int, help="stop after this many steps in all (smoke runs)")
    f.add_argument("--tile", type=int, default=256, help="crop size (px, multiple of 32)")
    f.add_argument("--overlap", type=int, default=32, help="tile overlap (px) of whole-scene validation")
    f.add_argument("--batch-size", type=int, default=8)
    f.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, one-cycle)")
    f.add_argument("--boundary-weight", type=float, default=1.0, help="weight of the boundary loss")
    f.add_argument("--boundary-pos-weight", type=float, default=5.0, help="CE weight of edge pixels")
    f.add_argument("--scale-min", type=float, default=0.7, help="smallest crop zoom (scale jitter)")
    f.add_argument("--scale-max", type=float, default=1.4, help="largest crop zoom")
    f.add_argument("--augment", type=float, default=1.0, help="photometric augmentation strength 0..1")
    f.add_argument("--set-shares", type=_shares, default={}, help="crop shares per set, e.g. contest=1,nsw=2")
    f.add_argument("--limit", type=int, help="read at most this many tiles per tiled set (smoke runs)")
    f.add_argument("--val-every", type=int, default=1,
                   help="validate every N epochs (and after the last); whole-scene validation is slow on CPUs")
    f.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    f.add_argument("--threads", type=int, help="CPU threads for torch")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--resume", help="continue from this last.pt (same options)")
    f.add_argument("--name", help="model name in the metadata (default: the --out folder name)")

    e = sub.add_parser("export", help="export a fit checkpoint to ONNX (outputs extent, boundary)")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--onnx", required=True, type=Path)
    e.add_argument("--fp16", action="store_true", help="store weights as float16")
    e.add_argument("--tile-size", type=int, help="inference tile (px) in the metadata (default 512)")
    e.add_argument("--name", help="model name in the metadata")

    v = sub.add_parser("evaluate", help="score exported members / an ensemble.json on the validation splits")
    v.add_argument("model", type=Path, help=".onnx member or ensemble.json exported by this chain")
    v.add_argument("--datasets", type=_list, default=list(READERS), help="catalogue names, comma-separated")
    v.add_argument("--data-root", type=Path, help="folder holding the data sets (default ../shared/data)")
    v.add_argument("--limit", type=int, help="read at most this many tiles per tiled set")
    v.add_argument("--tile", type=int, help="tile size (px; default: the model's)")
    v.add_argument("--overlap", type=int, help="tile overlap (px; default: the model's)")
    v.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime")
    v.add_argument("--json", type=Path, help="also write the metrics as JSON here")

    q = sub.add_parser("quantize", help="int8 static quantisation (QDQ) of an fp32 member, on training tiles")
    q.add_argument("model", type=Path, help="fp32 .onnx member exported by this chain (export without --fp16)")
    q.add_argument("--out", required=True, type=Path, help="the int8 .onnx to write (never overwritten)")
    q.add_argument("--datasets", type=_list, default=list(READERS), help="catalogue names, comma-separated")
    q.add_argument("--data-root", type=Path, help="folder holding the data sets (default ../shared/data)")
    q.add_argument("--limit", type=int, help="read at most this many tiles per tiled set")
    q.add_argument("--tiles", type=int, default=64, help="calibration crops from the training splits")
    q.add_argument("--tile", type=int, default=256, help="calibration crop size (px)")

    n = sub.add_parser("ensemble", help="write ensemble.json over exported members")
    n.add_argument("members", nargs="+", type=Path)
    n.add_argument("--out", required=True, type=Path)
    n.add_argument("--name", default="cropland-default-v2")
    n.add_argument("--description", default="")
    return p


def cmd_catalogue(args) -> int:
    from .datasets import load_scenes, summarise

    table = summarise(load_scenes(args.datasets, args.data_root, args.gsd, args.limit))
    print(f"{'set':9} {'split':6} {'scenes':>6} {'Mpx':>8} {'extent':>7} {'edge':>6} {'fields':>7}")
    for name, per in table.items():
        for split, d in sorted(per.items(), key=lambda kv: kv[0] != "train"):
            print(f"{name:9} {split:6} {d['scenes']:6d} {d['megapixels']:8.3f} {d['extent_ratio']:7.3f} "
                  f"{d['boundary_ratio']:6.3f} {d['fields']:7d}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


def cmd_fit(args) -> int:
    from .datasets import load_scenes
    from .multihead_data import channel_stats
    from .multihead_fit import MultiHeadConfig, fit_multihead

    scenes = load_scenes(args.datasets, args.data_root, args.gsd, args.limit)
    train = [s for s in scenes if s.split == "train"]
    val = [s for s in scenes if s.split == "val"]
    mean, std = channel_stats(train)
    keys = set(MultiHeadConfig.__dataclass_fields__)
    opts = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    cfg = MultiHeadConfig(**{**opts, "out": str(args.out), "gsd_m": args.gsd, "gsd_range_m": args.gsd_range,
                             "mean": mean, "std": std})
    summary = fit_multihead(cfg, train, val)
    print(json.dumps({k: summary[k] for k in ("best_epoch", "best_score", "steps", "seconds")}))
    return 0


def cmd_export(args) -> int:
    from .multihead_export import export_multihead

    r = export_multihead(args.checkpoint, args.onnx, args.fp16, args.tile_size, name=args.name)
    print(f"wrote {r['onnx']} ({r['bytes'] / 2**20:.2f} MiB); parity max |diff| {r['parity_max_abs_diff']}")
    return 0


def cmd_evaluate(args) -> int:
    from .multihead_eval import evaluate_model

    table = evaluate_model(args.model, args.datasets, args.data_root, args.limit, args.tile, args.overlap,
                           args.threads)
    keys = ("iou", "baseline_iou", "ratio_error", "boundary_f1", "object_f1")
    print(f"{'set':9} " + " ".join(f"{k:>12}" for k in keys))
    for name, m in table.items():
        print(f"{name:9} " + " ".join(f"{m[k]:12.4f}" if k in m else f"{'-':>12}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


def cmd_quantize(args) -> int:
    from .datasets import load_scenes
    from .quantize import quantize_member

    train = [s for s in load_scenes(args.datasets, args.data_root, None, args.limit) if s.split == "train"]
    r = quantize_member(args.model, args.out, train, args.tiles, args.tile)
    print(f"wrote {r['onnx']} ({r['bytes'] / 2**20:.2f} MiB, fp32 {r['fp32_bytes'] / 2**20:.2f} MiB); "
          f"max |diff| on a calibration tile {r['max_abs_diff']}")
    return 0


def cmd_ensemble(args) -> int:
    from .ensemble import write_ensemble_json

    data = write_ensemble_json(args.out, args.members, args.name, args.description)
    print(f"wrote {args.out} with {len(data['members'])} member(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return {"catalogue": cmd_catalogue, "fit": cmd_fit, "export": cmd_export, "evaluate": cmd_evaluate,
                "ensemble": cmd_ensemble, "quantize": cmd_quantize}[args.command](args)
    except CroplandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if type(exc).__name__ == "Interrupted" else 2


if __name__ == "__main__":
    sys.exit(main())
