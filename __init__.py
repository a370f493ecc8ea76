"""Cropland Extractor, a QGIS plugin: QGIS loads this folder as a plugin and calls :func:`classFactory`.

The folder also holds the QGIS-free ``engine`` and ``training`` packages; nothing heavy is imported here, so
QGIS starts even when the inference libraries are missing.
"""


def classFactory(iface):
    """Return the plugin instance QGIS manages (``iface`` is None in qgis_process)."""
    from .plugin.plugin import CroplandPlugin

    return CroplandPlugin(iface)
