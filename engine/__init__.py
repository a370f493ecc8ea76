"""Cropland Extractor engine: raster in, cropland fields and statistics out. Never imports qgis.

The public API lives in :mod:`engine.api`; ``python -m engine`` is its command line.
"""

__version__ = "0.1.0"
