"""Styles (QML files in resources/styles) applied to result layers when QGIS loads them."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from qgis.core import QgsProcessingContext, QgsProcessingLayerPostProcessorInterface

STYLES = Path(__file__).resolve().parent.parent / "resources" / "styles"
FIELDS_QML = STYLES / "fields.qml"
MASK_QML = STYLES / "mask.qml"
PROBABILITY_QML = STYLES / "probability.qml"


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Loads a QML style into a result layer once QGIS has loaded it into the project."""

    # QGIS holds only a C++ pointer to a post-processor: keep the Python objects alive here.
    _alive: ClassVar[dict[str, StylePostProcessor]] = {}

    def __init__(self, qml: Path):
        super().__init__()
        self.qml = Path(qml)

    def postProcessLayer(self, layer, context, feedback):
        """Apply the style (called by QGIS on the main thread)."""
        message, ok = layer.loadNamedStyle(str(self.qml))
        if not ok and feedback is not None:
            feedback.reportError(f"Could not apply the style {self.qml.name}: {message}")
        layer.triggerRepaint()

    @classmethod
    def attach(cls, context: QgsProcessingContext, path: str, qml: Path) -> bool:
        """Style output ``path`` with ``qml`` if the run loads it on completion; return whether it will."""
        if not path or not context.willLoadLayerOnCompletion(path):
            return False
        processor = cls(qml)
        cls._alive[path] = processor
        context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
        return True
