"""Clean-up defaults an analyst would keep, derived from the model's ground sampling distance (GSD).

At 0 m² (no filter) a run leaves many slivers and pinholes a few pixels big along field edges and roads. The
defaults scale with the GSD the model was trained at, so that they stay a few dozen pixels whatever the imagery,
and never go below the smallest field the Fields of The World baselines keep (500 m²).
"""

from __future__ import annotations

MIN_FIELD_M2 = 500.0
MIN_HOLE_M2 = 200.0
FIELD_PIXELS = 100
HOLE_PIXELS = 50


def auto_filters(resolution_m: float | None) -> tuple[float, float]:
    """``(min_area_m2, max_hole_m2)`` for a model trained at ``resolution_m`` m/px (``None`` = unknown).

    2 m/px gives (500, 200); 10 m/px gives (10 000, 5 000): 100 and 50 pixels of the model's GSD, at least
    :data:`MIN_FIELD_M2` and :data:`MIN_HOLE_M2`.
    """
    gsd2 = float(resolution_m) ** 2 if resolution_m else 0.0
    return max(MIN_FIELD_M2, FIELD_PIXELS * gsd2), max(MIN_HOLE_M2, HOLE_PIXELS * gsd2)


def area_filters(resolution_m: float | None, min_area_m2: float | None, max_hole_m2: float | None
                 ) -> tuple[float, float]:
    """``(min_area_m2, max_hole_m2)``: the values given, and :func:`auto_filters` of the model's GSD
    ``resolution_m`` (m/px) for those left as None (the plugin's and the command line's defaults)."""
    auto_min, auto_hole = auto_filters(resolution_m)
    return (auto_min if min_area_m2 is None else min_area_m2, auto_hole if max_hole_m2 is None else max_hole_m2)
