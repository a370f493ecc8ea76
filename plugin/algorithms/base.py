"""What the Cropland Extractor algorithms share: icon, help link, instance creation, translation."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtGui import QIcon

PLUGIN_ROOT = Path(__file__).resolve().parent.parent.parent
ICON = PLUGIN_ROOT / "resources" / "icons" / "icon.svg"
HELP = PLUGIN_ROOT / "docs" / "PLUGIN.md"


def plugin_version() -> str:
    """The version in metadata.txt."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(PLUGIN_ROOT / "metadata.txt", encoding="utf-8")
    return parser.get("general", "version", fallback="?")


class CroplandAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY_NAME and HELP_TEXT and define the parameters and the run."""

    NAME = ""
    DISPLAY_NAME = ""
    HELP_TEXT = ""
    HELP_ANCHOR = ""

    def tr(self, text: str) -> str:
        """Translate ``text`` in the plugin's context."""
        return QCoreApplication.translate("CroplandExtractor", text)

    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.tr(self.DISPLAY_NAME)

    def shortHelpString(self) -> str:
        return self.tr(self.HELP_TEXT)

    def helpUrl(self) -> str:
        if not HELP.exists():
            return ""
        url = QUrl.fromLocalFile(str(HELP))
        if self.HELP_ANCHOR:
            url.setFragment(self.HELP_ANCHOR)
        return url.toString()

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def checkParameterValues(self, parameters, context):
        """QGIS's check, with a clearer message for an existing file that is not a layer QGIS can open."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            for definition in self.parameterDefinitions():
                value = parameters.get(definition.name())
                if (definition.type() in ("raster", "layer", "source", "vector") and isinstance(value, str)
                        and os.path.isfile(value) and definition.name() in message):
                    kind = "raster" if definition.type() == "raster" else "layer"
                    return False, (f"{definition.name()}: '{value}' is not a {kind} QGIS can open "
                                   "(the file exists, but no data provider reads it).")
        return ok, message
