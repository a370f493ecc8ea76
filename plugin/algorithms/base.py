"""What the Cropland Extractor algorithms share: icon, help link, instance creation, translation."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from qgis.core import QgsProcessingAlgorithm, QgsProcessingParameterDefinition
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
    GROUP = ""
    GROUP_ID = ""
    TAGS: tuple[str, ...] = ()

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
        """The help text: HTML in QGIS, plain text in qgis_process (which prints it as it is)."""
        from ..help_page import for_this_application

        return for_this_application(self.tr(self.HELP_TEXT))

    def group(self) -> str:
        return self.tr(self.GROUP)

    def groupId(self) -> str:
        return self.GROUP_ID

    def tags(self) -> list[str]:
        """Words the Toolbox search finds this algorithm by."""
        return [self.tr(tag) for tag in self.TAGS]

    def helpUrl(self) -> str:
        """A rendered HTML help page of this algorithm (see :mod:`plugin.help_page`)."""
        from ..help_page import write

        try:
            return QUrl.fromLocalFile(str(write(self, HELP))).toString()
        except OSError:
            return ""

    def add(self, parameter, help_text: str = "", advanced: bool = False):
        """Add ``parameter`` with its tooltip/help text; ``advanced`` puts it under Advanced Parameters."""
        if help_text:
            parameter.setHelp(self.tr(help_text))
        if advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)
        return parameter

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
