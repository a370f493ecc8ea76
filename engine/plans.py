"""Named plans: which stages a run strings together, and what each pass hands on.

A plan is a function ``(ctx, targets) -> Plan`` that wires stage objects (:mod:`engine.stages`) for one kind of
run; :data:`PLANS` names them and :func:`plan_for` picks the one an extraction needs. A new mode of running (a
resampled input, a band of rows of a larger run, a model with an extra output) is a new plan here, not a flag in
the stages.

* ``one-pass``: no area filters, so the mask is final as inference makes it. Pass 1 counts, writes the
  probability when wanted, and streams the thresholded rows through the opening into fields and the final mask.
* ``filtered``: ``min_area_m2`` / ``max_hole_m2`` need a second look at whole fields (a dropped field or a filled
  hole changes mask rows that one pass would already have counted and written). Pass 1 writes the probability
  (uint8 when only the fields' means need it) and the raw thresholded mask to temporary rasters; pass 2 streams them
  back through the opening into filtered fields, counting and writing the opened mask; pass 3, only when a field
  was dropped or a hole filled, burns those changes in, recounting and rewriting the mask.
* Either inference plan reads through the model's grid when the source is resampled (:class:`ResampledInfer`,
  :mod:`engine.resample`), and splits touching fields as ``ctx.split`` says (:mod:`engine.split`; in ``filtered``
  the split's cue goes through a temporary raster too).
* ``mask``: no inference; an existing 0/1/255 mask raster into fields (:func:`engine.pipeline.fields_from_mask`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .context import RunContext
from .split import cue_name
from .stages import (
    BurnChanges,
    CountValid,
    FieldStream,
    FinishFields,
    Infer,
    RasterRows,
    ReleaseMemory,
    RequireValid,
    ResampledInfer,
    VectorizeMask,
    WriteFields,
)


@dataclass
class Targets:
    """What a run leaves behind (None = not wanted): the fused ``probability`` raster (float32, nodata -1), the final
    ``mask`` raster (uint8 1/0/255), the ``vector`` of fields, and whether to keep the field records in memory
    (``keep_fields``). Final outputs or temporary files; the plans do not care which."""

    probability: Path | None = None
    mask: Path | None = None
    vector: Path | None = None
    keep_fields: bool = True


@dataclass
class Plan:
    """A named list of stages, run in order with a cancellation check before each."""

    name: str
    stages: list

    def run(self, ctx: RunContext) -> None:
        """Run every stage on ``ctx``."""
        for stage in self.stages:
            ctx.callbacks.check_cancel()
            stage.run(ctx)


def _infer(ctx: RunContext, sinks: list):
    """Pass 1 on the source's grid, or through the model's grid when the source is resampled (:mod:`engine.resample`);
    either way its sinks get rows of the source's grid."""
    return ResampledInfer(sinks) if ctx.resample is not None else Infer(sinks)


def one_pass(ctx: RunContext, targets: Targets) -> Plan:
    """Inference straight into fields, counts and the final mask (see the module docstring)."""
    sinks = [CountValid(ctx)]
    if targets.probability is not None:
        sinks.append(RasterRows(ctx, targets.probability, "probability"))
    fields = FieldStream(ctx, targets.mask)
    sinks.append(fields)
    return Plan("one-pass", [_infer(ctx, sinks), RequireValid(), ReleaseMemory(), FinishFields(fields),
                             WriteFields(targets.vector, targets.keep_fields)])


def filtered(ctx: RunContext, targets: Targets) -> Plan:
    """Inference into temporary rasters, then fields with the area filters (see the module docstring)."""
    raw = ctx.workdir / "raw_mask.tif"
    if targets.probability is not None:
        prob = targets.probability
        sinks = [CountValid(ctx), RasterRows(ctx, prob, "probability")]
    else:
        prob = ctx.workdir / "probability_u8.tif"
        sinks = [CountValid(ctx), RasterRows(ctx, prob, "probability_u8")]
    sinks.append(RasterRows(ctx, raw, "raw_mask"))
    cue = None
    if cue_name(ctx.split) is not None:  # the split's cue goes through a temporary raster too
        cue = ctx.workdir / "cue_u8.tif"
        sinks.append(RasterRows(ctx, cue, "cue_u8"))
    return Plan("filtered", [_infer(ctx, sinks), RequireValid(), ReleaseMemory(),
                             VectorizeMask(raw, prob, targets.mask, cue_path=cue), BurnChanges(raw, targets.mask),
                             WriteFields(targets.vector, targets.keep_fields)])


def mask_to_fields(ctx: RunContext, targets: Targets, mask_path: Path) -> Plan:
    """No inference: the mask raster ``mask_path`` (1 = cropland, 0 = other, 255 = nodata) into fields."""
    return Plan("mask", [VectorizeMask(Path(mask_path), None, None, count=False, holes_may_hold_nodata=True),
                         WriteFields(targets.vector, targets.keep_fields)])


PLANS: dict[str, Callable[[RunContext, Targets], Plan]] = {"one-pass": one_pass, "filtered": filtered}


def plan_for(ctx: RunContext, targets: Targets) -> Plan:
    """The plan an extraction with ``ctx.options`` needs: ``filtered`` when fields are filtered by area (and areas
    are known), else ``one-pass``."""
    return PLANS["filtered" if ctx.filtered else "one-pass"](ctx, targets)
