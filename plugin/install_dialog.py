"""A dialog that runs the pip command installing the plugin's Python packages and shows its output."""

from __future__ import annotations

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout


class InstallDialog(QDialog):
    """Runs ``args`` with QProcess (QGIS stays responsive) and shows what it prints."""

    def __init__(self, args: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Cropland Extractor: installing Python packages")
        self.resize(760, 420)
        self.args = list(args)
        self.status_label = QLabel(f"Running: {' '.join(self.args)}")
        self.status_label.setWordWrap(True)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.status_label, self.output, self.buttons):
            layout.addWidget(widget)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.setProcessEnvironment(QProcessEnvironment.systemEnvironment())
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.exit_code: int | None = None

    def start(self) -> None:
        """Start the command."""
        self.process.start(self.args[0], self.args[1:])

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.output.appendPlainText(text.rstrip("\n"))

    def _finished(self, exit_code: int, _status) -> None:
        self._read()
        self.exit_code = exit_code
        if exit_code == 0:
            self.status_label.setText("Installed. Restart QGIS so that it loads the new packages.")
        else:
            self.status_label.setText(f"pip failed (exit status {exit_code}); see its output below. You can "
                                      f"also run the command in a terminal:\n{' '.join(self.args)}")

    def _error(self, _error) -> None:
        if self.process.state() == QProcess.NotRunning and self.exit_code is None:
            self.exit_code = -1
            self.status_label.setText(f"Could not start {self.args[0]}: {self.process.errorString()}")

    def reject(self) -> None:
        if self.process.state() != QProcess.NotRunning:
            self.process.kill()
            self.process.waitForFinished(3000)
        super().reject()
