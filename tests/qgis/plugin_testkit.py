"""Helpers for the plugin tests in real QGIS: synthetic rasters, a tiny ONNX model, qgis_process runs.

Import them in tests as ``from plugin_testkit import ...`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_NAME = "cropland_extractor"
SHARED_DATA = REPO.parent / "shared" / "data"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
SYSTEM_PYTHON = "/usr/bin/python3"
# Modules the plugin must not import before an algorithm runs.
HEAVY_MODULES = ("torch", "onnxruntime", "rasterio", "shapely", "cv2", "pyproj", "pyogrio", "scipy")

# The fields of the synthetic rasters, (row, col, height, width) in pixels; the tiny model finds exactly these.
FIELDS = [(10, 12, 30, 40), (50, 70, 40, 50), (100, 10, 12, 25)]
HEIGHT, WIDTH, PIXEL_M = 128, 160, 2.0


def venv_site_packages() -> str:
    """The site-packages of the Python running the tests (what qgis_process needs on PYTHONPATH)."""
    return sysconfig.get_paths()["purelib"]


def make_rgb_raster(path: Path, fields=FIELDS, crs: str | None = "EPSG:32633", nodata_cols: int = 0,
                    seed: int = 0, bands: int = 3, dtype: str = "uint8") -> Path:
    """A GeoTIFF with green rectangles (fields) on brown ground, 2 m pixels.

    ``nodata_cols`` left columns are 0 in every band with nodata=0; ``bands=1`` writes a grey single band.
    """
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    image = np.empty((3, HEIGHT, WIDTH), dtype="uint8")
    image[0], image[1], image[2] = 150, 95, 60
    for r, c, h, w in fields:
        image[0, r:r + h, c:c + w], image[1, r:r + h, c:c + w] = 70, 165
    image = np.clip(image.astype(int) + rng.integers(-6, 7, image.shape), 1, 255).astype("uint8")
    if nodata_cols:
        image[:, :, :nodata_cols] = 0
    data = image[:bands] if bands <= 3 else np.concatenate([image, image[:bands - 3]])
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": data.shape[0], "dtype": dtype,
               "transform": from_origin(500000.0, 5000000.0, PIXEL_M, PIXEL_M)}
    if crs:
        profile["crs"] = crs
    if nodata_cols:
        profile["nodata"] = 0
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data.astype(dtype))
    return path


def make_mask_raster(path: Path, fields=FIELDS, crs: str | None = "EPSG:32633", nodata_cols: int = 0) -> Path:
    """A uint8 cropland mask (1 in the fields, 0 elsewhere, 255 = nodata in ``nodata_cols`` left columns)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    mask = np.zeros((HEIGHT, WIDTH), dtype="uint8")
    for r, c, h, w in fields:
        mask[r:r + h, c:c + w] = 1
    if nodata_cols:
        mask[:, :nodata_cols] = 255
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 1, "dtype": "uint8", "nodata": 255,
               "transform": from_origin(500000.0, 5000000.0, PIXEL_M, PIXEL_M)}
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(mask, 1)
    return path


def field_pixels(fields=FIELDS, nodata_cols: int = 0) -> int:
    """Cropland pixels of :func:`make_rgb_raster` / :func:`make_mask_raster` outside the nodata columns."""
    return sum(h * (w - max(0, min(c + w, nodata_cols) - c)) for r, c, h, w in fields)


def build_tiny_onnx(path: Path, bands: int = 3, tile_size: int = 64, overlap: int = 8, name: str = "tiny_green"
                    ) -> Path:
    """Export a tiny deterministic cropland model: p(cropland) = softmax([0, 12 (green - red)]) per pixel.

    It carries the engine's metadata (input bands 1..``bands``, scale 255, identity standardisation) and applies
    softmax inside the graph, like the models exported by ``python -m training export``.
    """
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from cropland_extractor.engine.metadata import ModelMetadata

    class GreenMinusRed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(bands, 2, kernel_size=1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                if bands >= 2:
                    self.conv.weight[1, 0] = -12.0
                    self.conv.weight[1, 1] = 12.0
                else:
                    self.conv.weight[1, 0] = 12.0
                    self.conv.bias[1] = -6.0

        def forward(self, x):
            return torch.softmax(self.conv(x), dim=1)

    meta = ModelMetadata(name=name, architecture="test:green_minus_red", input_bands=list(range(1, bands + 1)),
                         mean=[0.0] * bands, std=[1.0] * bands, tile_size=tile_size, overlap=overlap,
                         resolution_m=PIXEL_M, band_names=["red", "green", "blue"][:bands],
                         training_data="none: a hand-set test model")
    model = GreenMinusRed().eval()
    dummy = torch.zeros(1, bands, tile_size, tile_size)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(model, dummy, str(path), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}})
    proto = onnx.load(str(path))
    for key, value in meta.to_onnx_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def run_qgis_process(args: list[str], config_dir: Path, plugins_dir: Path | None = None,
                     pythonpath: str | None = "venv", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``qgis_process.bin`` headless with a throw-away profile (``QGIS_CUSTOM_CONFIG_PATH``).

    ``pythonpath="venv"`` puts this Python's site-packages on PYTHONPATH (qgis_process embeds the system
    Python); ``None`` leaves PYTHONPATH out.
    """
    if not os.path.exists(QGIS_PROCESS):
        pytest.skip("qgis_process.bin is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QGIS_PLUGINPATH", "VIRTUAL_ENV")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(config_dir))
    if plugins_dir is not None:
        env["QGIS_PLUGINPATH"] = str(plugins_dir)
    if pythonpath == "venv":
        env["PYTHONPATH"] = venv_site_packages()
    elif pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def qgis_process_json(args: list[str], config_dir: Path, plugins_dir: Path | None = None, **kwargs) -> dict:
    """Run ``qgis_process.bin --json ...`` and return the parsed output (fails the test on a bad exit)."""
    proc = run_qgis_process(["--json", *args], config_dir, plugins_dir, **kwargs)
    assert proc.returncode == 0, (
        f"qgis_process failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for sign in ("corrupted", "double free", "munmap_chunk", "Segmentation fault", "Traceback"):
        assert sign not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (the shared data folder ../shared/data is absent)")
    return path


def field_polygons_layer(fields=FIELDS, crs: str = "EPSG:32633", name: str = "fields"):
    """A memory polygon layer with the rectangles of ``fields`` (in ``crs``, reprojected from EPSG:32633)."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsFeature,
        QgsGeometry,
        QgsProject,
        QgsRectangle,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer(f"Polygon?crs={crs}&field=name:string", name, "memory")
    transform = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32633"),
                                       QgsCoordinateReferenceSystem(crs), QgsProject.instance())
    features = []
    for i, (r, c, h, w) in enumerate(fields):
        x0, y1 = 500000.0 + c * PIXEL_M, 5000000.0 - r * PIXEL_M
        geometry = QgsGeometry.fromRect(QgsRectangle(x0, y1 - h * PIXEL_M, x0 + w * PIXEL_M, y1))
        geometry.transform(transform)
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        feature["name"] = f"field {i + 1}"
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer
