"""``python -m engine``: extract cropland, compute mask statistics, evaluate predictions, describe models.

Errors the user can fix (bad input, bad model, existing output) print one ``error:`` line and exit with status 2;
a cancelled run (Ctrl-C) exits with 130, a terminated one (SIGTERM) with 143, and neither leaves a partial file.
When one of several inputs fails or is interrupted, the message says which inputs were written, and the report
keeps their rows. Library warnings become one ``warning:`` line each (none with ``--quiet``).
See docs/BAD_INPUTS.md for what each awkward input gets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import warnings
from pathlib import Path

from .errors import CroplandError

EPILOG = """examples:
  python -m engine extract scene.tif --output fields.gpkg --report report.json
  python -m engine extract Data1.tif Data2.tif --pixel-size 2 --output out/{stem}_fields.gpkg --mask out/{stem}.tif
  python -m engine extract scenes/*.tif --output out/{stem}.gpkg --report report.json --cluster local:4
  python -m engine stats Data1_reference.tif --pixel-size 2
  python -m engine evaluate prediction_mask.tif reference.gpkg --pixel-size 2
  python -m engine info resources/models/ensemble.json
"""


def _bands(text: str) -> list[int]:
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be comma-separated numbers like 1,2,3; got {text!r}") from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"bands are 1-based numbers like 1,2,3; got {text!r}")
    return bands


def _input(text: str):
    from .io import input_path

    return input_path(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m engine`` (all subcommands)."""
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("extract", help="extract cropland fields, areas and ratio from rasters",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("inputs", nargs="+", type=_input,
                   help="raster files (GeoTIFF, COG, VRT, JPEG2000, ...), URLs or GDAL paths (/vsicurl/...)")
    e.add_argument("--model", type=Path, default=None,
                   help="an .onnx model, a training checkpoint (.pt) or an ensemble.json (default: shipped ensemble)")
    out = e.add_argument_group("outputs (with several inputs, '{stem}' in a path is replaced by each input's name; "
                               "without it, '_<stem>' is added before the extension)")
    out.add_argument("--output", "-o", type=Path,
                     help="field polygons: .gpkg (default format), .fgb, .shp, or .geojson (written in one piece: "
                          "every outline in memory at the end; prefer .gpkg for large rasters)")
    out.add_argument("--mask", type=Path, help="uint8 GeoTIFF: 1 cropland, 0 other, 255 nodata")
    out.add_argument("--probability", type=Path, help="float32 GeoTIFF of the fused cropland probability")
    out.add_argument("--report", type=Path, help="JSON report, one row per input")
    out.add_argument("--overwrite", action="store_true", help="replace existing output files")
    m = e.add_argument_group("model and inference")
    m.add_argument("--bands", type=_bands, help="1-based raster bands in model order, e.g. 1,2,3 (default: model's)")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    m.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    m.add_argument("--tile-size", type=int, help="tile size in px (default: model's)")
    m.add_argument("--overlap", type=int, help="overlap between tiles in px (default: model's)")
    m.add_argument("--batch-size", type=int, help="tiles per inference call (default: automatic)")
    m.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help="half precision for PyTorch checkpoints on CUDA (default: on there); ONNX models run as "
                        "exported, whatever this says")
    m.add_argument("--fusion", choices=("mean", "vote"), help="ensemble fusion (default: the ensemble's)")
    m.add_argument("--tta", action="store_true", help="test-time augmentation: 8 flips/rotations per tile")
    m.add_argument("--stretch", choices=("auto", "none", "percentile"), default="auto",
                   help="how values map onto the model's range: auto = the raster's value range (uint8 0..255, "
                        "declared NBITS, or the usual range its sampled values fit: 0..1, 12-bit, x10000...), "
                        "one mapping for all bands; percentile = each band's 2-98 %%; none = raw values")
    m.add_argument("--threads", type=int, help="CPU threads for inference (default: all cores)")
    c = e.add_argument_group("post-processing")
    c.add_argument("--threshold", type=float, help="cropland probability threshold (default: model's)")
    c.add_argument("--min-area", type=float, default=None,
                   help="drop fields smaller than this, m² (default: from the model's GSD as in the plugin, 100 "
                        "of its pixels and at least 500 m², e.g. 500 for v2; 0 keeps every field)")
    c.add_argument("--max-hole", type=float, default=None,
                   help="fill holes smaller than this, m² (default: from the model's GSD, 50 of its pixels and "
                        "at least 200 m²; 0 fills none)")
    c.add_argument("--simplify", type=float, default=0.0,
                   help="simplify outlines by this tolerance, metres (neighbours are simplified together, so all "
                        "outlines are held in memory)")
    c.add_argument("--opening", type=int, default=1, help="radius (px) of the morphological opening; 0 = off")
    c.add_argument("--pixel-size", type=float, help="pixel size in metres, for rasters without a CRS")
    c.add_argument("--split", choices=("auto", "boundary", "image", "extent", "none"), default="auto",
                   help="split touching fields: on the model's boundary output ('boundary'), on the image's edges "
                        "and valleys of the cropland probability ('image'), on those valleys only ('extent'); "
                        "'auto': boundary when the model has that output, else image; 'none': one polygon per "
                        "connected cropland region")
    c.add_argument("--resample", choices=("auto", "off"), default="auto",
                   help="read a raster whose pixel size is outside the model's accepted range resampled to the "
                        "model's resolution, and map the result back to the raster's grid ('off': never)")
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bar, only the summary lines")
    e.add_argument("--cluster", metavar="SPEC",
                   help="run on Dask (requirements/cluster.txt): 'local' or 'local:N' (N worker processes here) or "
                        "a scheduler address tcp://HOST:8786; several inputs = one task each, one input = row bands")
    e.add_argument("--band-rows", type=int, metavar="N",
                   help="with --cluster and one input: rows per band task (default: about 2 bands per worker)")

    s = sub.add_parser("stats", help="cropland area and ratio of mask rasters (1 = cropland, 0 = other)")
    s.add_argument("masks", nargs="+", type=Path)
    s.add_argument("--pixel-size", type=float, help="pixel size in metres, for rasters without a CRS")
    s.add_argument("--polygons", type=Path, help="instead of the mask's values, count these polygons over each raster")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    v = sub.add_parser("evaluate", help="compare a prediction with a reference (mask rasters or polygon layers)")
    v.add_argument("prediction", type=Path)
    v.add_argument("reference", type=Path)
    v.add_argument("--pixel-size", type=float, help="pixel size in metres, for rasters without a CRS")
    v.add_argument("--tolerance", type=int, default=2, help="boundary F1 tolerance in pixels")
    v.add_argument("--iou-threshold", type=float, default=0.5,
                   help="IoU for a predicted field to match a reference (0..1)")
    v.add_argument("--cell-size", type=float, help="grid cell in map units when both are polygon layers "
                   "(default: the longer side of their extent / 2048)")
    v.add_argument("--json", type=Path, help="also write the metrics to this JSON file ('-': print JSON only)")

    i = sub.add_parser("info", help="describe a model or ensemble (bands, normalisation, tiling, metrics)")
    i.add_argument("model", type=Path, nargs="?", default=None)
    return p


def output_for(template: Path | None, input_path: Path, several: bool) -> Path | None:
    """The output path for one input: '{stem}' replaced, or '_<stem>' added when several inputs share a path."""
    if template is None:
        return None
    text = str(template)
    if "{stem}" in text:
        return Path(text.replace("{stem}", _stem(input_path)))
    if several:
        return template.with_name(f"{template.stem}_{_stem(input_path)}{template.suffix}")
    return template


def _stem(input_path) -> str:
    """The input's name without extension, also for URLs and GDAL virtual paths."""
    return Path(str(input_path).rstrip("/").split("?")[0].rsplit("/", 1)[-1]).stem


def _extract(args) -> int:
    from .api import load_model
    from .io import open_input
    from .options import ExtractOptions, OutputPaths
    from .outputs import check_batch, check_outputs

    options = ExtractOptions(
        bands=args.bands, tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
        device=args.device, backend=args.backend, fp16=args.fp16, threshold=args.threshold, fusion=args.fusion,
        tta=args.tta, min_area_m2=args.min_area or 0.0, max_hole_m2=args.max_hole or 0.0, simplify_m=args.simplify,
        opening_px=args.opening, pixel_size_m=args.pixel_size, stretch=args.stretch, threads=args.threads,
        split=args.split, resample=args.resample,
    )
    several = len(args.inputs) > 1
    plans = [(inp, OutputPaths(vector=output_for(args.output, inp, several), mask=output_for(args.mask, inp, several),
                               probability=output_for(args.probability, inp, several), overwrite=args.overwrite))
             for inp in args.inputs]
    every = OutputPaths(report=args.report, overwrite=args.overwrite)
    check_batch(plans, args.report)
    check_outputs(every, args.inputs)
    for _, outputs in plans:  # refuse clashes and existing files for every input before the first one runs
        check_outputs(outputs, args.inputs)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.band_rows is not None and not (args.cluster and len(args.inputs) == 1):
        from .errors import InputError

        raise InputError("--band-rows splits one input into bands on a Dask cluster: give it with --cluster and a "
                         "single input.")
    model = load_model(args.model, options, log=log)  # a bad model fails here, before any task or input
    options = _area_filters(args, options, model, log)
    if args.cluster:
        from .cluster import cli_extract

        return cli_extract(args, plans, options, log)
    for inp in args.inputs:  # every input opens and has the model's bands before the first one runs
        open_input(inp, model.meta, model.name, options.bands).close()
    return _run_batch(args, plans, model, options, log)


def _area_filters(args, options, model, log):
    """``options`` with ``--min-area`` / ``--max-hole`` the user left out taken from the model's GSD, as the
    plugin takes them (:func:`engine.defaults.area_filters`); the choice is logged."""
    import dataclasses

    from .defaults import area_filters

    if args.min_area is not None and args.max_hole is not None:
        return options
    min_area, max_hole = area_filters(model.meta.resolution_m, args.min_area, args.max_hole)
    gsd = f"{model.meta.resolution_m:g} m" if model.meta.resolution_m else "unknown"
    log(f"Area filters: fields under {min_area:g} m² dropped, holes under {max_hole:g} m² filled (from the model's "
        f"{gsd} GSD; --min-area 0 --max-hole 0 keep everything).")
    return dataclasses.replace(options, min_area_m2=min_area, max_hole_m2=max_hole)


def _run_batch(args, plans, model, options, log) -> int:
    """Extract each input in turn; when one fails or the run is interrupted, say exactly what was written and
    still write the report rows of the inputs that finished."""
    from .api import extract
    from .options import OutputPaths
    from .outputs import write_errors
    from .report import write_report

    results = []
    command = "python -m engine " + " ".join(shlex.quote(str(a)) for a in args.argv)
    try:
        for inp, outputs in plans:
            result = extract(inp, model, outputs, options, log=log, show_bar=not args.quiet, keep_fields=False)
            print(result.summary(), flush=True)
            results.append(result)
    except (CroplandError, KeyboardInterrupt) as exc:
        if not results:
            raise
        done = ", ".join(str(r.input) for r in results)
        stopped = plans[len(results)][0]
        report = ""
        if args.report:
            with write_errors(OutputPaths(report=args.report, overwrite=True)):
                write_report(args.report, results, command=command)
            report = f"; the report {args.report} has their {len(results)} row(s)"
        what = {Terminated: "terminated (SIGTERM): ", KeyboardInterrupt: "cancelled: "}.get(type(exc),
                                                                                           f"error: {exc}\n")
        print(f"{what}{stopped} and the inputs after it wrote nothing; the outputs of {done} were written"
              f"{report}.", file=sys.stderr)
        return {Terminated: 143, KeyboardInterrupt: 130}.get(type(exc), 2)
    if args.report:
        with write_errors(OutputPaths(report=args.report, overwrite=True)):
            write_report(args.report, results, command=command)
    return 0


def _stats(args) -> int:
    from .stats import mask_file_statistics, polygon_statistics

    rows = []
    for path in args.masks:
        st = (polygon_statistics(args.polygons, path, args.pixel_size) if args.polygons
              else mask_file_statistics(path, args.pixel_size))
        d = st.to_dict()
        d["source"] = str(path)
        rows.append(d)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'raster':<40} {'ratio':>8} {'cropland ha':>13} {'valid ha':>13} {'cropland px':>12} {'valid px':>12}")
    def ha(v: float | None) -> str:
        return "unknown" if v is None else f"{v:,.4f}"

    for d in rows:
        print(f"{Path(d['source']).name:<40} {d['cropland_ratio']:>8.4f} {ha(d['cropland_area_ha']):>13} "
              f"{ha(d['valid_area_ha']):>13} {d['cropland_pixels']:>12} {d['valid_pixels']:>12}")
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate, format_table

    metrics = evaluate(args.prediction, args.reference, pixel_size_m=args.pixel_size, tolerance_px=args.tolerance,
                       iou_threshold=args.iou_threshold, cell_size=args.cell_size)
    if args.json is not None and str(args.json) == "-":
        print(json.dumps(metrics, indent=2))
        return 0
    print(format_table(metrics))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0


def _info(args) -> int:
    from .api import load_model
    from .options import ExtractOptions

    ens = load_model(args.model, ExtractOptions(device="cpu"))
    doc = {"source": ens.source, "name": ens.name, "fusion": ens.fusion, "threshold": ens.threshold,
           "tile_size": ens.tile_size, "overlap": ens.overlap, "outputs": ens.channels,
           "split": "boundary output" if "boundary" in ens.channels else "image edges and extent valleys",
           "members": [{"file": str(m.path), "weight": w, **m.meta.__dict__}
                       for m, w in zip(ens.members, ens.weights, strict=True)]}
    print(json.dumps(doc, indent=2, default=str))
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM received: handled like Ctrl-C (temporary files removed, nothing half-written)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _library_warnings(quiet: bool):
    """Warnings of rasterio/pyogrio/numpy become one ``warning:`` line each (once per message), or nothing with
    --quiet; those the engine already reports in its own words (no CRS: areas unknown; nodata masks) are
    silenced."""
    from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if not quiet and text not in shown:
            shown.add(text)
            print(f"warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
        warnings.filterwarnings("ignore", category=NodataShadowWarning)
        warnings.filterwarnings("ignore", message=".*'?crs'? was not provided")
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    handler = {"extract": _extract, "stats": _stats, "evaluate": _evaluate, "info": _info}[args.command]
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may set signal handlers
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with _library_warnings(getattr(args, "quiet", False)):
            return handler(args)
    except CroplandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM): no output was written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("cancelled: no output was written", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; try a smaller --tile-size or --batch-size, or split the raster",
              file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
