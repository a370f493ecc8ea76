"""Result layers as QGIS loads them: named after the input, styled (QML files in resources/styles), and ordered
fields on top, then mask, then probability."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from qgis.core import QgsProcessingContext, QgsProcessingLayerPostProcessorInterface, QgsProject

STYLES = Path(__file__).resolve().parent.parent / "resources" / "styles"
FIELDS_QML = STYLES / "fields.qml"
MASK_QML = STYLES / "mask.qml"
PROBABILITY_QML = STYLES / "probability.qml"


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Names, styles and orders a result layer once QGIS has loaded it into the project.

    ``run`` groups the layers of one run; ``rank`` orders them within it (0 = top of the layer tree).
    """

    # QGIS holds only a C++ pointer to a post-processor: keep the Python objects alive here.
    _alive: ClassVar[dict[str, StylePostProcessor]] = {}
    # run -> {rank: layer id} of the layers of that run loaded so far
    _runs: ClassVar[dict[str, dict[int, str]]] = {}

    def __init__(self, qml: Path, name: str | None = None, rank: int = 0, run: str = ""):
        super().__init__()
        self.qml = Path(qml)
        self.name, self.rank, self.run = name, rank, run

    def postProcessLayer(self, layer, context, feedback):
        """Apply the name and style, then order this run's layers (called by QGIS on the main thread)."""
        message, ok = layer.loadNamedStyle(str(self.qml))
        if not ok and feedback is not None:
            feedback.reportError(f"Could not apply the style {self.qml.name}: {message}")
        if self.name:
            layer.setName(self.name)
        layer.triggerRepaint()
        if self.run:
            project = (context.project() if context is not None else None) or QgsProject.instance()
            self._runs.setdefault(self.run, {})[self.rank] = layer.id()
            order_layers(project, [lid for _, lid in sorted(self._runs[self.run].items())])

    @classmethod
    def attach(cls, context: QgsProcessingContext, path: str | None, qml: Path, name: str | None = None,
               rank: int = 0, run: str = "") -> bool:
        """Name, style and order output ``path`` if the run loads it on completion; return whether it will."""
        if not path or not context.willLoadLayerOnCompletion(path):
            return False
        processor = cls(qml, name, rank, run)
        cls._alive[f"{run}:{path}"] = processor
        details = context.layerToLoadOnCompletionDetails(path)
        if name:
            details.name = name
            if hasattr(details, "forceName"):
                details.forceName = True
        details.setPostProcessor(processor)
        return True


def order_layers(project: QgsProject, layer_ids: list[str]) -> None:
    """Put the tree nodes of ``layer_ids`` in that order (first on top), where the topmost of them is now.

    Only nodes that share one parent group are moved. Clones are inserted before the originals are removed,
    so the layers never leave the project.
    """
    root = project.layerTreeRoot()
    nodes = [node for node in (root.findLayer(lid) for lid in layer_ids) if node is not None]
    if len(nodes) < 2:
        return
    parent = nodes[0].parent()
    if parent is None or any(node.parent() is not parent for node in nodes):
        return
    children = parent.children()
    if [children.index(n) for n in nodes] == sorted(children.index(n) for n in nodes) and \
            max(children.index(n) for n in nodes) - min(children.index(n) for n in nodes) == len(nodes) - 1:
        return  # already in order and together
    top = min(children.index(node) for node in nodes)
    for offset, node in enumerate(nodes):
        parent.insertChildNode(top + offset, node.clone())
    for node in nodes:
        parent.removeChildNode(node)


def drop_unrequested(context: QgsProcessingContext) -> None:
    """Unqueue the layers with an empty name that QGIS queues for optional outputs left empty (it then reports
    them as "The following layers were not correctly generated" with an empty bullet)."""
    queued = context.layersToLoadOnCompletion()
    cleaned = {path: details for path, details in queued.items() if path and path.strip()}
    if len(cleaned) != len(queued):
        context.setLayersToLoadOnCompletion(cleaned)
