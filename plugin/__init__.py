"""QGIS side of Cropland Extractor: the Processing provider, its algorithms and the QGIS <-> engine adapters."""
