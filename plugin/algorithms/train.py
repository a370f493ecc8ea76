"""cropland:trainmodel — train a model with ``python -m training`` in a subprocess and export it to ONNX."""

from __future__ import annotations

import os
import re
from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .. import adapters, deps
from ..runner import ProcessCancelled, run_streaming
from .base import PLUGIN_ROOT, CroplandAlgorithm

TRAINING_MODULE = "training"
DEVICES = ["auto", "cpu", "cuda"]
EPOCH_LINE = re.compile(r"^epoch (\d+)\b")
FIT_SHARE = 90.0  # percent of the progress bar for fitting; the rest is the ONNX export


class TrainModelAlgorithm(CroplandAlgorithm):
    """Train Cropland Model: fit on image/label folders, export the best checkpoint to ONNX."""

    NAME = "trainmodel"
    DISPLAY_NAME = "Train Cropland Model"
    HELP_ANCHOR = "train-cropland-model"
    GROUP = "Training"
    GROUP_ID = "training"
    TAGS = ("cropland", "train", "model", "deep learning", "onnx", "segmentation", "field", "parcel", "label")
    HELP_TEXT = (
        "Trains a cropland segmentation model on your own data and exports it as an ONNX file that "
        "<i>Extract Cropland</i> can use (choose it in its Model parameter).<br><br>"
        "<b>Images</b>: a folder of rasters; <b>Labels</b>: a folder of label rasters of the same size, paired "
        "by name (Data1.tif ↔ Data1_reference.tif, or the same name), 1 = cropland, 0 = other.<br>"
        "<b>Architecture</b>: unet, attention_unet, fcn_se_resnet50, fcn_se_resnet101, or "
        "smp:&lt;Arch&gt;:&lt;encoder&gt; such as smp:Unet:mobilenet_v2 (random initial weights).<br><br>"
        "Training runs <code>python -m training fit</code> then <code>export</code> in a separate Python "
        "process (PyTorch must be installed in QGIS's Python); its log appears here and Cancel stops it "
        "(the last completed epoch stays in the run folder as last.pt). On a CPU expect minutes per epoch."
    )

    IMAGES = "IMAGES"
    LABELS = "LABELS"
    ARCH = "ARCH"
    BANDS = "BANDS"
    EPOCHS = "EPOCHS"
    STEPS_PER_EPOCH = "STEPS_PER_EPOCH"
    TILE = "TILE"
    BATCH_SIZE = "BATCH_SIZE"
    VAL_FRACTION = "VAL_FRACTION"
    RESOLUTION = "RESOLUTION"
    DEVICE = "DEVICE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_MODEL = "OUTPUT_MODEL"

    def initAlgorithm(self, config=None):
        tr = self.tr
        folder = QgsProcessingParameterFile.Folder
        self.addParameter(QgsProcessingParameterFile(self.IMAGES, tr("Training images folder"), folder))
        self.addParameter(QgsProcessingParameterFile(self.LABELS, tr("Training labels folder"), folder))
        self.addParameter(QgsProcessingParameterString(self.ARCH, tr("Architecture"), "unet"))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, tr("Bands, e.g. 1,2,3 (empty = all bands of the images)"), "", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, tr("Epochs"),
                                                       QgsProcessingParameterNumber.Integer, 20, False, 1))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, tr("Device"), DEVICES, defaultValue=0))
        advanced = [
            QgsProcessingParameterNumber(self.STEPS_PER_EPOCH, tr("Optimizer steps per epoch"),
                                         QgsProcessingParameterNumber.Integer, 50, False, 1),
            QgsProcessingParameterNumber(self.TILE, tr("Training crop size (pixels, multiple of 32)"),
                                         QgsProcessingParameterNumber.Integer, 256, False, 32),
            QgsProcessingParameterNumber(self.BATCH_SIZE, tr("Batch size"),
                                         QgsProcessingParameterNumber.Integer, 8, False, 1),
            QgsProcessingParameterNumber(self.VAL_FRACTION,
                                         tr("Validation share of each raster (0 = keep the last epoch)"),
                                         QgsProcessingParameterNumber.Double, 0.0, False, 0.0, 0.49),
            QgsProcessingParameterNumber(self.RESOLUTION, tr("Pixel size (m) stored in the model (empty = "
                                                             "from the CRS)"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, tr("Run folder")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, tr("Exported model"), tr("ONNX models (*.onnx)")))

    def processAlgorithm(self, parameters, context, feedback):
        deps.require("train")
        images = self.parameterAsFile(parameters, self.IMAGES, context)
        labels = self.parameterAsFile(parameters, self.LABELS, context)
        for name, path in ((self.IMAGES, images), (self.LABELS, labels)):
            if not path or not os.path.isdir(path):
                raise QgsProcessingException(f"{name}: folder '{path}' does not exist.")
        run_folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        model = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        adapters.check_extension(model, (".onnx",), self.OUTPUT_MODEL)
        os.makedirs(run_folder, exist_ok=True)
        epochs = self.parameterAsInt(parameters, self.EPOCHS, context)

        fit = ["fit", "--images", images, "--labels", labels,
               "--arch", self.parameterAsString(parameters, self.ARCH, context).strip(),
               "--out", run_folder, "--epochs", str(epochs),
               "--steps-per-epoch", str(self.parameterAsInt(parameters, self.STEPS_PER_EPOCH, context)),
               "--tile", str(self.parameterAsInt(parameters, self.TILE, context)),
               "--batch-size", str(self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
               "--val-fraction", repr(self.parameterAsDouble(parameters, self.VAL_FRACTION, context)),
               "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]]
        bands = adapters.parse_bands(self.parameterAsString(parameters, self.BANDS, context))
        if bands:
            fit += ["--bands", ",".join(map(str, bands))]
        resolution = adapters.optional_number(self, parameters, self.RESOLUTION, context)
        if resolution:
            fit += ["--resolution-m", repr(resolution)]

        def on_fit_line(line: str) -> None:
            feedback.pushConsoleInfo(line)
            match = EPOCH_LINE.match(line)
            if match:
                feedback.setProgress(FIT_SHARE * min(int(match.group(1)), epochs) / epochs)

        self._run(fit, on_fit_line, feedback, "Training")
        checkpoint = Path(run_folder) / "best.pt"
        if not checkpoint.exists():
            raise QgsProcessingException(f"Training finished without writing {checkpoint}.")
        feedback.setProgress(FIT_SHARE)
        self._run(["export", str(checkpoint), "--onnx", model], feedback.pushConsoleInfo, feedback, "Export")
        feedback.setProgress(100)
        feedback.pushInfo(f"Model written to {model}: choose it in Extract Cropland's Model parameter.")
        return {self.OUTPUT_FOLDER: run_folder, self.OUTPUT_MODEL: model}

    def _run(self, arguments, on_line, feedback, stage: str) -> None:
        python = deps.python_executable()
        command = [python, "-u", "-m", TRAINING_MODULE, *arguments]
        feedback.pushCommandInfo(" ".join(command))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            status, tail = run_streaming(command, on_line, feedback.isCanceled, cwd=str(PLUGIN_ROOT), env=env)
        except ProcessCancelled as exc:
            raise QgsProcessingException(
                f"Cancelled: {stage.lower()} stopped; the run folder keeps the last completed epoch.") from exc
        except OSError as exc:
            raise QgsProcessingException(f"{stage}: cannot start {python} ({exc}).") from exc
        if status != 0:
            errors = [line for line in tail if line.startswith(("error:", "stopped"))] or tail[-8:]
            missing = re.search(r"No module named '([\w.]+)'", "\n".join(tail))
            if missing:
                module = missing.group(1).split(".")[0]
                raise QgsProcessingException(deps.missing_message(
                    [deps.Missing(module, deps.TRAINING_MODULES.get(module, module), errors[-1])], "train"))
            raise QgsProcessingException(f"{stage} failed (exit status {status}):\n" + "\n".join(errors))

