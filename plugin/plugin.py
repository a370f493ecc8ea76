"""The plugin object QGIS manages: registers the Processing provider and, in the GUI, the install helper."""

from __future__ import annotations

import contextlib

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox, QPushButton

from . import deps, results_viewer
from .algorithms.base import ICON
from .provider import CroplandProvider

MENU = "&Cropland Extractor"


class CroplandPlugin:
    """QGIS plugin interface: ``initProcessing`` (also used by qgis_process), ``initGui`` and ``unload``."""

    def __init__(self, iface):
        deps.activate()  # packages installed into the plugin's own folder
        self.iface = iface
        self.provider: CroplandProvider | None = None
        self.actions: list[QAction] = []
        self.message = None
        self.dialog = None

    def initProcessing(self) -> None:
        """Register the provider (idempotent)."""
        if self.provider is None:
            self.provider = CroplandProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)
            results_viewer.install()

    def initGui(self) -> None:
        """Register the provider, add the menu entries and offer to install missing packages."""
        self.initProcessing()
        if self.iface is None:
            return
        window = self.iface.mainWindow()
        extract = QAction(QIcon(str(ICON)), "Extract Cropland…", window)
        extract.triggered.connect(self.open_extract_dialog)
        install = QAction("Install Python Dependencies…", window)
        install.triggered.connect(self.install_dependencies)
        for action in (extract, install):
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        missing = deps.missing_modules(try_import=False)
        if missing:
            self.offer_install(missing)

    def unload(self) -> None:
        """Remove everything :meth:`initGui` added."""
        if self.iface is not None:
            for action in self.actions:
                self.iface.removePluginMenu(MENU, action)
            if self.message is not None:
                with contextlib.suppress(RuntimeError):  # already closed by the user
                    self.iface.messageBar().popWidget(self.message)
        self.actions.clear()
        self.message = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
            results_viewer.uninstall()

    def open_extract_dialog(self) -> None:
        """Open the Extract Cropland dialog of the Processing framework."""
        import processing

        processing.execAlgorithmDialog("cropland:extractcropland", {})

    def offer_install(self, missing: list[deps.Missing]) -> None:
        """Show a message bar warning with an Install button."""
        names = ", ".join(m.distribution for m in missing)
        bar = self.iface.messageBar()
        self.message = bar.createMessage("Cropland Extractor", f"Python packages missing: {names}.")
        button = QPushButton("Install…", self.message)
        button.clicked.connect(self.install_dependencies)
        self.message.layout().addWidget(button)
        bar.pushWidget(self.message, Qgis.Warning)

    def install_dependencies(self) -> bool:
        """Ask, then run the pip command in a dialog; return whether it was started."""
        from .install_dialog import InstallDialog

        command = deps.install_command("runtime")
        missing = deps.missing_modules(try_import=False)
        status = (f"Missing now: {', '.join(m.distribution for m in missing)}." if missing
                  else "All runtime packages are already importable; this reinstalls the pinned versions.")
        extra = "" if deps.pip_available() else (
            "\n\nThis Python has no pip: install it first (Debian/Ubuntu: sudo apt install python3-pip).")
        answer = QMessageBox.question(
            self.iface.mainWindow(), "Cropland Extractor",
            f"{status}\n\nInstall the Python packages Cropland Extractor needs into its own folder\n"
            f"{deps.private_folder()}\n(only this plugin adds it to QGIS's Python; nothing else changes)? "
            f"The command:\n\n{command}{extra}\n\nThey are loaded right away when possible; otherwise the "
            "installer says that QGIS must be restarted.",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer != QMessageBox.Yes:
            return False
        self.dialog = InstallDialog(deps.install_args("runtime"), self.iface.mainWindow(),
                                    steps=len(deps.RUNTIME_MODULES), on_success=deps.after_install)
        self.dialog.show()
        self.dialog.start()
        if self.message is not None:
            with contextlib.suppress(RuntimeError):
                self.iface.messageBar().popWidget(self.message)
            self.message = None
        return True
