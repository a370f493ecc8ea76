"""A dialog that runs the pip command installing the plugin's Python packages, with progress, then loads them.

pip runs in a QProcess (QGIS stays responsive). The progress bar counts pip's steps: one per requirement
collected, then the install; the label shows pip's current step. When pip succeeds, ``on_success`` (by default
:func:`plugin.deps.after_install`) loads the packages and says whether QGIS must be restarted.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QVBoxLayout,
)

STEP_WORDS = ("Collecting", "Downloading", "Processing", "Installing collected packages", "Successfully installed")


class InstallDialog(QDialog):
    """Runs ``args`` with QProcess and shows what it prints, a progress bar and the outcome.

    ``steps``: how many requirements pip will collect (for the progress bar; 0 = unknown).
    ``on_success``: called after pip exits 0; returns (restart needed, sentence for the user).
    """

    def __init__(self, args: list[str], parent=None, steps: int = 0,
                 on_success: Callable[[], tuple[bool, str]] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Cropland Extractor: installing Python packages")
        self.resize(760, 440)
        self.args = list(args)
        self.steps = max(int(steps), 0)
        self.on_success = on_success
        self.collected = 0
        self.restart_needed: bool | None = None
        self.status_label = QLabel(f"Running: {' '.join(self.args)}")
        self.status_label.setWordWrap(True)
        self.step_label = QLabel("Starting pip…")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100 if self.steps else 0)  # 0..0 = busy indicator
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.status_label, self.step_label, self.progress, self.output, self.buttons):
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
        if not text:
            return
        self.output.appendPlainText(text.rstrip("\n"))
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(STEP_WORDS):
                self.step_label.setText(line[:160])
            if line.startswith("Collecting"):
                self.collected += 1
            if self.steps:
                done = min(self.collected / self.steps, 1.0) * 80
                if line.startswith("Installing collected packages"):
                    done = 90
                self.progress.setValue(max(self.progress.value(), int(done)))

    def _finished(self, exit_code: int, _status) -> None:
        self._read()
        self.exit_code = exit_code
        self.progress.setRange(0, 100)
        if exit_code != 0:
            self.progress.setValue(0)
            self.status_label.setText(f"pip failed (exit status {exit_code}); see its output below. You can "
                                      f"also run the command in a terminal:\n{' '.join(self.args)}")
            return
        self.progress.setValue(100)
        self.step_label.setText("Done.")
        if self.on_success is None:
            self.restart_needed = True
            self.status_label.setText("Installed. Restart QGIS so that it loads the new packages.")
            return
        self.restart_needed, sentence = self.on_success()
        self.status_label.setText(sentence)

    def _error(self, _error) -> None:
        if self.process.state() == QProcess.NotRunning and self.exit_code is None:
            self.exit_code = -1
            self.status_label.setText(f"Could not start {self.args[0]}: {self.process.errorString()}")

    def reject(self) -> None:
        if self.process.state() != QProcess.NotRunning:
            self.process.kill()
            self.process.waitForFinished(3000)
        super().reject()
