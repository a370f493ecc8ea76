"""The run context: everything one run of a plan reads and shares, set up once before its first stage.

A :class:`RunContext` holds the input (``source``), the loaded ``ensemble``, the ``options``, the chosen
:class:`Tiling`, the ``area`` model, the ``timer`` and the :class:`Callbacks`; and what the stages hand on to each
other: the area ``counter``, the field ``spool``, the filters' ``changes`` and the output ``records``. Stages
(:mod:`engine.stages`) take it as their one argument; plans (:mod:`engine.plans`) say which stages run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .areas import AreaCounter, AreaModel, area_model, crs_label
from .errors import PARAM, Cancelled, InputError
from .io import RasterSource, sample_values
from .normalize import Stretch, choose_stretch
from .options import ExtractOptions
from .resample import ResamplePlan, decide
from .result import FieldRecord
from .runtime import StageTimer, iter_strips
from .split import SplitParams, resolve_split
from .spool import FieldSpool
from .tiling import TileGrid, fit_tile


def _noop(*_args) -> None:
    pass


@dataclass
class Callbacks:
    """How a run reports back: ``progress(fraction 0..1, message)``, ``is_cancelled() -> bool``, ``log(line)``, and
    whether to draw a tqdm bar over tiles on stderr (``show_bar``). See :mod:`engine.api`."""

    progress: Callable[[float, str], None] = _noop
    is_cancelled: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = _noop
    show_bar: bool = False
    bar_file: object = field(default_factory=lambda: sys.stderr)

    @classmethod
    def of(cls, progress=None, is_cancelled=None, log=None, show_bar: bool = False) -> Callbacks:
        """Callbacks from optional callables (None = do nothing / never cancelled)."""
        return cls(progress or _noop, is_cancelled or (lambda: False), log or _noop, show_bar)

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` when the caller asked to stop."""
        if self.is_cancelled():
            raise Cancelled("Cancelled; no output was written.")


@dataclass(frozen=True)
class Tiling:
    """Tiles of ``tile`` px overlapping by ``overlap`` px, ``batch_size`` tiles per inference call."""

    tile: int
    overlap: int
    batch_size: int

    def grid(self, height: int, width: int) -> TileGrid:
        """The tile grid over a ``height`` x ``width`` raster (anchored at its top-left corner)."""
        return TileGrid(height, width, self.tile, self.overlap)


def default_batch_size(tile: int, on_gpu: bool) -> int:
    """Tiles per inference call: about 1 x 512² on CPU and 32 x 512² on GPU.

    On a CPU a batch buys no speed (ONNX Runtime already spreads one 512 px tile over the cores) but holds its
    activations: model v2 at 16 Mpx peaks at 806 MiB with 4 tiles a call and 509 MiB with one, in the same time
    (docs/BENCHMARKS.md §12)."""
    per = (512 / tile) ** 2
    return max(1, round((32 if on_gpu else 1) * per))


def choose_tiling(ensemble, options: ExtractOptions, log: Callable[[str], None] = _noop, height: int | None = None,
                  width: int | None = None) -> Tiling:
    """Tile size (shrunk to a ``height`` x ``width`` raster it exceeds, see :func:`engine.tiling.fit_tile`, and
    rounded up to the members' size multiple), overlap and batch size for ``ensemble``.

    Raises :class:`InputError` when the overlap is more than half the tile.
    """
    tile = options.tile_size or ensemble.tile_size
    if height is not None and width is not None:
        tile = fit_tile(tile, height, width, ensemble.tile_size, log)
    multiple = max(int(m.meta.extra.get("size_multiple", 1) or 1) for m in ensemble.members)
    if tile % multiple:
        rounded = -(-tile // multiple) * multiple
        log(f"Tile size {tile} px rounded up to {rounded} px: the model needs a multiple of {multiple} px.")
        tile = rounded
    overlap = options.overlap if options.overlap is not None else min(ensemble.overlap, tile // 2)
    if overlap * 2 > tile:
        raise InputError(f"overlap {overlap} px must be at most half the tile size {tile} px.", param="overlap")
    on_gpu = any(getattr(m, "device", "cpu") == "cuda" for m in ensemble.members)
    return Tiling(tile, overlap, options.batch_size or default_batch_size(tile, on_gpu))


@dataclass
class RunContext:
    """One run: its inputs and settings (fixed once built) and what its stages share (filled as they run).

    Attributes:
        source: the input raster, bands selected; ensemble: the loaded models (None when a plan runs no inference);
        options; tiling (None without inference); area: how pixels and polygons convert to m²; timer; callbacks;
        workdir: a temporary folder that lives as long as the run (set by :meth:`begin`);
        threshold: cropland when the fused score exceeds it; stretch: how the input's values map onto the model's
        range (decided once for the raster, :func:`engine.normalize.choose_stretch`) or None; values_note: that
        choice in words, for the log and the report.
        counter: valid and cropland pixels and areas; spool: finished fields; changes: the filters' changes
        ``(polygon_px, 0 = dropped | 1 = filled)``; records: the numbered fields kept in memory.
        split: how touching fields are split (None: not at all); resample: the model-grid detour (None: none);
        split_info, resample_info: what they did, for the report.
    """

    source: RasterSource
    ensemble: object
    options: ExtractOptions
    tiling: Tiling | None
    area: AreaModel
    timer: StageTimer
    callbacks: Callbacks
    workdir: Path | None = None
    threshold: float = 0.5
    stretch: Stretch | None = None
    values_note: str = ""
    counter: AreaCounter | None = None
    spool: FieldSpool | None = None
    changes: list = field(default_factory=list)
    records: list[FieldRecord] = field(default_factory=list)
    field_count: int = 0
    split: SplitParams | None = None
    resample: ResamplePlan | None = None
    split_info: dict = field(default_factory=lambda: {"method": "none"})
    resample_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.counter is None:
            self.counter = AreaCounter(self.area)

    def begin(self, workdir: Path) -> RunContext:
        """Give the run its temporary folder (which the caller deletes) and open the field spool in it."""
        self.workdir = Path(workdir)
        self.spool = FieldSpool(self.workdir)
        return self

    @property
    def filtered(self) -> bool:
        """True when fields are filtered by area (minimum field area or maximum hole), which needs areas."""
        return self.area.known and (self.options.min_area_m2 > 0 or self.options.max_hole_m2 > 0)

    @property
    def has_nodata(self) -> bool:
        """Whether the counted valid pixels leave out any pixel of the raster."""
        return self.counter.valid_pixels < self.source.width * self.source.height

    def close(self) -> None:
        """Delete the spool (the workdir belongs to the caller)."""
        if self.spool is not None:
            self.spool.close()


def prepare(source: RasterSource, ensemble, options: ExtractOptions, callbacks: Callbacks,
            timer: StageTimer | None = None) -> RunContext:
    """Build the context of an extraction: tiling, area model, threshold and stretch, with their log lines.

    Raises:
        InputError: every pixel is nodata, the overlap does not fit the tile, or the CRS has no linear unit.
    """
    log = callbacks.log
    timer = timer or StageTimer()
    tiling = choose_tiling(ensemble, options, log, source.height, source.width)
    ensemble.batch_size = tiling.batch_size
    threshold = options.threshold if options.threshold is not None else ensemble.threshold
    area = area_model(source.crs, source.transform, source.height, options.pixel_size_m, log, Path(source.name).name)
    with timer("read"):
        sample = sample_values(source)
        if sample.shape[1] == 0 and not _any_valid(source):
            raise InputError(f"{source.name}: every pixel is nodata; there is nothing to classify.")
    meta = ensemble.meta
    stretch = choose_stretch(sample, meta, options.stretch, source) if sample.shape[1] else None
    values_note = stretch.how if stretch is not None else f"raw values / {meta.input_scale:g} (stretch none)"
    log(f"{Path(source.name).name}: {values_note}.")
    try:
        split = resolve_split(options.split, "boundary" in getattr(ensemble, "channels", ()))
    except ValueError as exc:
        raise InputError(str(exc).replace("--split", PARAM), param="split") from None
    resample, resample_info = decide(source, area.pixel_size_m, ensemble, options.resample, log)
    log(f"Input {source.name}: {source.width} x {source.height} px, bands {source.bands}, {source.dtype}, "
        f"CRS {crs_label(source.crs) or 'none'}; tiles {tiling.tile} px, overlap {tiling.overlap} px, "
        f"batch {tiling.batch_size}, threshold {threshold:g}, fusion {ensemble.fusion}"
        f"{', TTA x8' if options.tta else ''}; device {ensemble.device}.")
    how = {"boundary": "by the model's boundary output.",
           "image": "along the image's edges and valleys of the extent probability (--split image).",
           "extent": "along valleys of the extent probability (--split extent).",
           None: "not at all (--split none): a field is a connected cropland region."}
    log(f"Model outputs: {', '.join(getattr(ensemble, 'channels', ['extent']))}; fields split "
        f"{how[split.method if split else None]}")
    return RunContext(source, ensemble, options, tiling, area, timer, callbacks, threshold=threshold,
                      stretch=stretch, values_note=values_note, split=split, resample=resample,
                      split_info={"method": split.method if split else "none"}, resample_info=resample_info)


def _any_valid(source: RasterSource) -> bool:
    return any(source.read_inside(row0, 0, n, source.width)[1].any() for row0, n in iter_strips(source.height))
