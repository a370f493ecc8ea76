"""The "Cropland Extractor" Processing provider (id ``cropland``)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.base import ICON, plugin_version
from .algorithms.evaluate import EvaluateAlgorithm
from .algorithms.extract import ExtractCroplandAlgorithm
from .algorithms.ratio import CroplandRatioAlgorithm
from .algorithms.train import TrainModelAlgorithm

ALGORITHMS = (ExtractCroplandAlgorithm, CroplandRatioAlgorithm, EvaluateAlgorithm, TrainModelAlgorithm)


class CroplandProvider(QgsProcessingProvider):
    """Provides Extract Cropland, Cropland Area Ratio, Evaluate Against Reference and Train Cropland Model."""

    def id(self) -> str:
        return "cropland"

    def name(self) -> str:
        return "Cropland Extractor"

    def longName(self) -> str:
        return f"Cropland Extractor {plugin_version()}"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:
        return str(ICON)

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
