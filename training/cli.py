"""``python -m training``: fit (and cross-validate), export to ONNX, build and evaluate ensembles.

Every command checks its inputs before any work and, on bad input, prints one line ``error: ...`` and exits
with status 2 (1 for an unexpected failure, 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from engine.errors import CroplandError

from .errors import DataError

EPILOG = """examples:
  python -m training fit --images train/images --labels train/labels --arch smp:Unet:mobilenet_v2 \\
      --out runs/unet
  python -m training fit --images train/images --labels train/labels --arch fcn_se_resnet50 --width 24 \\
      --folds 6 --out runs/cv/fcn        # leave-one-raster-out cross-validation over 6 rasters
  python -m training export runs/unet/best.pt --onnx model.onnx --fp16
  python -m training evaluate-ensemble runs/cv/fcn runs/cv/unet runs/cv/linknet --out runs/cv/ensemble
  python -m training build-ensemble a.onnx b.onnx c.onnx --out resources/models/ensemble.json
"""


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


class _DefaultsAndRawEpilog(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Option defaults in the help, and the epilog (the architecture list) printed as written."""


def _add_fit(sub) -> None:
    from .models import architecture_help, describe_architectures

    p = sub.add_parser("fit", help="train one model (or cross-validate with --folds)",
                       description="Train a segmentation model on image/label rasters. Images and labels "
                                   "pair by name\n(DataN.tif <-> DataN_reference.tif, or the same name). "
                                   "Labels: 0 other, 1 cropland (0/255 reads 255\nas cropland).",
                       epilog=architecture_help() + "\n\nComparison of all of them on the same data: "
                                                    "docs/BENCHMARKS.md (bench/architectures.py).",
                       formatter_class=_DefaultsAndRawEpilog)
    g = p.add_argument_group("data")
    g.add_argument("--images", required=True, type=Path, help="folder of training images")
    g.add_argument("--labels", required=True, type=Path, help="folder of label rasters")
    g.add_argument("--val-images", type=Path, help="folder of validation images (choose best.pt, early stop)")
    g.add_argument("--val-labels", type=Path, help="folder of validation labels")
    g.add_argument("--val-fraction", type=float, default=0.0,
                   help="without --val-images: keep this share of rows of each training raster as validation")
    g.add_argument("--extra-images", type=Path, help="more training images (never held out in --folds)")
    g.add_argument("--extra-labels", type=Path, help="labels of --extra-images")
    g.add_argument("--extra-scale", type=float, default=1.0,
                   help="resample the extra rasters by this factor when read (0.5: 1 m pixels become 2 m)")
    g.add_argument("--extra-share", type=float, default=0.5,
                   help="share of training crops drawn from the extra rasters")
    g.add_argument("--bands", type=_int_list, help="1-based bands to read, e.g. 1,2,3 (default: all)")
    g.add_argument("--band-names", type=_str_list, help="names of those bands (default red,green,blue for 3)")
    g.add_argument("--input-scale", type=_scale, default=255.0,
                   help="raw values are divided by this first; 'auto': each raster's value range (data type, "
                        "declared NBITS or sampled percentiles) maps onto 0..1, as the engine does for any raster")
    g.add_argument("--ignore-value", type=int, help="label value excluded from loss and metrics")
    g.add_argument("--resolution-m", type=float, help="pixel size in m, stored in the model metadata "
                                                      "(default: from the CRS, if projected)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", required=True, help=f"architecture: {describe_architectures()}")
    g.add_argument("--width", type=int, help="base channel count of the custom (non-smp) architectures")
    g.add_argument("--decoder-channels", type=_int_list, help="smp Unet decoder widths, e.g. 128,64,32,16,16")
    g.add_argument("--weights",
                   help="local file of initial weights (state_dict), loaded with weights_only=True")
    g.add_argument("--name", help="model name in the metadata (default: the --out folder name)")
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, type=Path,
                   help="run folder (checkpoints, metrics.csv, curves.png)")
    g.add_argument("--epochs", type=int, default=20, help="epochs (an epoch = --steps-per-epoch steps)")
    g.add_argument("--steps-per-epoch", type=int, default=50, help="optimizer steps per epoch")
    g.add_argument("--max-steps", type=int, help="stop after this many steps in all (smoke runs)")
    g.add_argument("--tile", type=int, default=256, help="crop size in px (multiple of 32)")
    g.add_argument("--overlap", type=int, default=32, help="tile overlap in px for whole-raster evaluation")
    g.add_argument("--batch-size", type=int, default=8, help="crops per optimizer step")
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    g.add_argument("--schedule", choices=("onecycle", "cosine", "constant"), default="onecycle",
                   help="learning-rate schedule over epochs x steps-per-epoch")
    g.add_argument("--patience", type=int, default=0,
                   help="early stop after this many epochs without a better validation Dice (0 = off)")
    g.add_argument("--dice-weight", type=float, default=1.0, help="weight of the Dice term (CE weight is 1)")
    g.add_argument("--boundary-weight", type=float, default=0.0, help="weight of the boundary CE term")
    g.add_argument("--scale-min", type=float, default=0.5,
                   help="smallest zoom factor of crops (scale jitter)")
    g.add_argument("--scale-max", type=float, default=1.6, help="largest zoom factor of crops")
    g.add_argument("--augment", type=float, default=1.0, help="photometric augmentation strength 0..1")
    g.add_argument("--folds", type=int,
                   help="cross-validate: K spatial folds (K = number of rasters: leave one raster out)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = CUDA when torch sees a GPU (with mixed precision), else CPU")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, crops and augmentation")
    g.add_argument("--resume", help="continue from a last.pt of the same run")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX with the engine's metadata",
                       description="Export a checkpoint to ONNX (opset 17, softmax inside, dynamic batch/"
                                   "height/width) with the engine's metadata, and check ONNX vs PyTorch "
                                   "parity.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="best.pt or last.pt written by fit")
    p.add_argument("--onnx", required=True, type=Path, help="output .onnx file")
    p.add_argument("--fp16", action="store_true",
                   help="store weights as float16 (half the size; computes in fp32)")
    p.add_argument("--tile-size", type=int, default=512, help="inference tile size (px) in the metadata")
    p.add_argument("--overlap", type=int, help="overlap in the metadata (default: tile size / 8)")
    p.add_argument("--name", help="model name in the metadata")
    p.add_argument("--metrics", type=Path,
                   help="JSON file (e.g. cv_summary.json) whose 'mean' goes to the metadata's metrics")
    p.add_argument("--parity-image", type=Path, help="raster for the parity check (default: the first "
                                                     "training image of the checkpoint)")
    p.add_argument("--parity-tol", type=float,
                   help="max abs probability difference (default 1e-4, fp16 1e-2)")


def _add_ensemble(sub) -> None:
    p = sub.add_parser("evaluate-ensemble", help="score the fusion of cross-validation runs fold by fold",
                       description="Fuse the held-out probabilities (pred_*.npy) of several `fit --folds` "
                                   "runs and score them against the labels; writes ensemble_cv.json and a "
                                   "table.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="cross-validation folders (with cv_summary.json)")
    p.add_argument("--labels", required=True, type=Path, help="label folder of the cross-validated rasters")
    p.add_argument("--images", type=Path, help="image folder of the cross-validated rasters (for --engine)")
    p.add_argument("--engine", action="store_true",
                   help="export every fold's model to ONNX and score it through the engine (the shipped "
                        "inference path) instead of the saved PyTorch predictions")
    p.add_argument("--threads", type=int, help="CPU threads for --engine (default: all)")
    p.add_argument("--fusion", choices=("mean", "vote"), default="mean",
                   help="mean of probabilities, or majority vote of the members' masks")
    p.add_argument("--ignore-value", type=int, help="label value excluded from the metrics")
    p.add_argument("--out", required=True, type=Path, help="folder for ensemble_cv.json / ensemble_cv.md")
    p = sub.add_parser("build-ensemble", help="write an ensemble.json over exported ONNX members",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("members", nargs="+", type=Path, help=".onnx members (paths stored relative to --out)")
    p.add_argument("--out", required=True, type=Path, help="ensemble.json to write")
    p.add_argument("--name", default="cropland-default", help="ensemble name")
    p.add_argument("--description", default="", help="one-paragraph description for users")
    p.add_argument("--fusion", choices=("mean", "vote"), default="mean",
                   help="mean of probabilities, or majority vote of the members' masks")
    p.add_argument("--threshold", type=float, default=0.5, help="cropland probability threshold")
    p.add_argument("--weights", type=lambda t: [float(v) for v in t.split(",")],
                   help="member weights, comma-separated (default 1 each)")
    p.add_argument("--metrics", type=Path, help="ensemble_cv.json whose metrics go into ensemble.json")


def _scale(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number or 'auto', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m training``."""
    parser = argparse.ArgumentParser(prog="python -m training",
                                     description="Train, cross-validate and export Cropland Extractor's "
                                                 "segmentation models; `python -m training COMMAND --help` "
                                                 "documents each command.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub)
    _add_export(sub)
    _add_ensemble(sub)
    return parser


def run_fit(args: argparse.Namespace) -> int:
    """The ``fit`` command; returns the exit status."""
    from .data import channel_stats, load_pairs, pair_files, rescale, split_strip
    from .loop import FitConfig, fit
    from .models import build_model

    # fail fast on an unknown architecture, before reading any raster
    build_model(args.arch, 3, 2, width=args.width, decoder_channels=args.decoder_channels)
    if (args.val_images is None) != (args.val_labels is None):
        raise DataError("--val-images and --val-labels go together.")
    if (args.extra_images is None) != (args.extra_labels is None):
        raise DataError("--extra-images and --extra-labels go together.")
    if not 0 <= args.val_fraction < 0.5:
        raise DataError(f"--val-fraction must lie in [0, 0.5), got {args.val_fraction}.")
    for name in ("epochs", "steps_per_epoch", "batch_size", "tile"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be >= 1.")
    read = {"bands": args.bands, "input_scale": args.input_scale, "ignore_value": args.ignore_value,
            "min_size": 32}
    train = load_pairs(pair_files(args.images, args.labels), **read)
    val = load_pairs(pair_files(args.val_images, args.val_labels), **read) if args.val_images else []
    extra = load_pairs(pair_files(args.extra_images, args.extra_labels), **read) if args.extra_images else []
    if not 0.05 <= args.extra_scale <= 4:
        raise DataError(f"--extra-scale must lie in [0.05, 4], got {args.extra_scale}.")
    extra = [rescale(r, args.extra_scale) for r in extra]
    if not 0 <= args.extra_share < 1:
        raise DataError(f"--extra-share must lie in [0, 1), got {args.extra_share}.")
    for r in val + extra:
        if r.image.shape[0] != train[0].image.shape[0]:
            raise DataError(f"{r.image_path} has {r.image.shape[0]} band(s), the training images "
                            f"{train[0].image.shape[0]}.")
    mean, std = channel_stats(train + extra)
    known = {f.name for f in fields(FitConfig)}
    skip = ("out", "images", "labels")
    cfg = FitConfig(**{k: v for k, v in vars(args).items() if k in known and v is not None and k not in skip},
                    out=str(args.out), mean=mean, std=std, images=str(args.images), labels=str(args.labels))
    cfg.input_scale = args.input_scale  # None ('auto') is a choice here, not "unset"
    if cfg.resolution_m is None:
        cfg.resolution_m = train[0].resolution_m
    if args.folds:
        from .crossval import cross_validate

        cross_validate(cfg, train, args.folds, args.val_fraction, extra)
        return 0
    if args.val_fraction > 0 and not val:
        parts = [split_strip(r, args.val_fraction) for r in train]
        train, val = [p[0] for p in parts], [p[1] for p in parts]
    summary = fit(cfg, train, val, extra=extra)
    print(f"done: best epoch {summary['best_epoch']} of {summary['epochs_done']}; {args.out / 'best.pt'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 = bad input, 130 = interrupted)."""
    args = build_parser().parse_args(argv)
    from .loop import Interrupted

    try:
        if args.command == "fit":
            return run_fit(args)
        if args.command == "export":
            from .export import run_export

            return run_export(args)
        from .ensemble import run_build_ensemble, run_evaluate_ensemble

        if args.command == "evaluate-ensemble":
            return run_evaluate_ensemble(args)
        return run_build_ensemble(args)
    except Interrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 130
    except CroplandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
