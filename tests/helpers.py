"""Helpers shared by the tests: synthetic rasters, tiny ONNX models, the location of ../shared data.

Importable from any test as ``import helpers`` (pyproject's pytest ``pythonpath`` holds tests/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared data {path} (../shared beside the repository), which is absent here")
    return path


def write_raster(path: Path, array: np.ndarray, transform=None, crs=None, nodata=None, **extra) -> Path:
    """Write a (bands, H, W) or (H, W) array as a GeoTIFF; returns the path."""
    import rasterio
    from affine import Affine

    array = array[None] if array.ndim == 2 else array
    profile = {"driver": "GTiff", "width": array.shape[2], "height": array.shape[1], "count": array.shape[0],
               "dtype": array.dtype, "crs": crs, "transform": transform or Affine.identity(), "nodata": nodata}
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
    return path


def green_threshold_onnx(path: Path, bands: int = 3, tile_size: int = 64, overlap: int = 16,
                         kernel: int = 1) -> Path:
    """A tiny deterministic ONNX 'model': cropland probability = sigmoid(20 · (green/255 − 0.5)), optionally
    blurred by a ``kernel`` x ``kernel`` mean filter (to have a spatial receptive field), with the metadata the
    engine reads."""
    import torch

    from engine.metadata import ModelMetadata

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(bands, 2, kernel, padding=kernel // 2, bias=True)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                self.conv.weight[1, 1] = 20.0 / kernel**2
                self.conv.bias[1] = -10.0

        def forward(self, x):
            return torch.softmax(self.conv(x), dim=1)

    net = Net().eval()
    torch.onnx.export(net, torch.zeros(1, bands, tile_size, tile_size), str(path), input_names=["image"],
                      output_names=["probabilities"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "probabilities": {0: "n", 2: "h", 3: "w"}})
    import onnx

    model = onnx.load(str(path))
    meta = ModelMetadata(name="green_threshold", architecture="test:green", input_bands=list(range(1, bands + 1)),
                         band_names=["red", "green", "blue", "nir"][:bands], mean=[0.0] * bands, std=[1.0] * bands,
                         tile_size=tile_size, overlap=overlap, resolution_m=2.0)
    for key, value in meta.to_onnx_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def edge_model_onnx(path: Path, tile_size: int = 64, overlap: int = 16, three_class: bool = False) -> Path:
    """A tiny deterministic ONNX 'model' with named outputs (the v2 contract): ``extent`` = sigmoid(20 ·
    (green/255 − 0.5)) and ``boundary`` = sigmoid(20 · (red/255 − 0.5)), so a scene paints its field edges red.

    With ``three_class``, one ``logits`` output of (background, interior, boundary) scores instead, read through
    ``channels`` (extent = interior + boundary)."""
    import torch

    from engine.metadata import ModelMetadata

    class Net(torch.nn.Module):
        def forward(self, x):
            extent = 20.0 * (x[:, 1:2] - 0.5)
            edge = 20.0 * (x[:, 0:1] - 0.5)
            if three_class:
                # softmax of (0, e + ln(1 - s(b)), e + ln s(b)): P(interior or boundary) = s(e), P(boundary) ~ s(b)
                b = torch.sigmoid(edge)
                return torch.cat([torch.zeros_like(extent), extent + torch.log1p(-b + 1e-6),
                                  extent + torch.log(b + 1e-6)], dim=1)
            return torch.sigmoid(extent), torch.sigmoid(edge)

    names = ["logits"] if three_class else ["extent", "boundary"]
    axes = {"image": {0: "n", 2: "h", 3: "w"}, **{n: {0: "n", 2: "h", 3: "w"} for n in names}}
    torch.onnx.export(Net().eval(), torch.zeros(1, 3, tile_size, tile_size), str(path), input_names=["image"],
                      output_names=names, opset_version=17, dynamo=False, dynamic_axes=axes)
    import onnx

    model = onnx.load(str(path))
    outputs = ({"extent": {"tensor": "logits", "activation": "logits", "channels": [1, 2]},
                "boundary": {"tensor": "logits", "activation": "logits", "channels": [2]}} if three_class else
               {"extent": {"tensor": "extent"}, "boundary": {"tensor": "boundary"}})
    meta = ModelMetadata(name="green_red_edges", architecture="test:edges", input_bands=[1, 2, 3],
                         band_names=["red", "green", "blue"], mean=[0.0] * 3, std=[1.0] * 3, tile_size=tile_size,
                         overlap=overlap, resolution_m=2.0, outputs=outputs)
    for key, value in meta.to_onnx_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def field_scene(height: int = 200, width: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic RGB uint8 scene and its truth: 6 rectangular fields (green) separated by 1-2 px roads (grey),
    one with a 6x6 hole. Returns (image (3, H, W) uint8, truth (H, W) uint8 with 1 = field)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), np.uint8)
    truth[10:90, 10:140] = 1
    truth[10:90, 142:290] = 1            # 2 px road between the first two fields
    truth[91:190, 10:100] = 1            # 1 px road below the first field
    truth[91:190, 101:200] = 1           # 1 px road between fields 3 and 4
    truth[91:190, 202:290] = 1
    truth[130:136, 40:46] = 0            # a hole in field 3
    truth[195:199, 5:9] = 1              # a 16 px speck
    image = np.empty((3, height, width), np.uint8)
    image[0] = np.where(truth, 60, 140)
    image[1] = np.where(truth, 200, 90)
    image[2] = np.where(truth, 50, 140)
    image = np.clip(image.astype(int) + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
    return image, truth


def mosaic_scene(height: int = 480, width: int = 256, seed: int = 0, nodata: bool = True) -> np.ndarray:
    """A synthetic RGB uint8 scene for seam tests: ~40 overlapping green ellipses and rectangles (fields that span
    many rows, touch at corners and hold holes of all sizes) on grey, with noise, and, when ``nodata``, a block
    of zeros (nodata 0) cutting into some fields. Returns (3, H, W) uint8."""
    rng = np.random.default_rng(seed)
    field = np.zeros((height, width), bool)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(30):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry, rx = rng.integers(4, height // 6), rng.integers(4, width // 6)
        if rng.random() < 0.5:
            field |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            field[max(cy - ry, 0):cy + ry, max(cx - rx, 0):cx + rx] = True
    for _ in range(60):  # holes of all sizes
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        field[cy:cy + rng.integers(2, 12), cx:cx + rng.integers(2, 12)] = False
    for _ in range(10):  # 2 px roads, some along band seams
        field[:, rng.integers(0, width - 2) + np.arange(2)] = False
        field[rng.integers(0, height - 2) + np.arange(2), :] = False
    image = np.empty((3, height, width), np.uint8)
    image[0] = np.where(field, 60, 140)
    image[1] = np.where(field, 200, 90)
    image[2] = np.where(field, 50, 140)
    image = np.clip(image.astype(int) + rng.integers(-60, 61, image.shape), 1, 255).astype(np.uint8)
    if nodata:
        image[:, height // 3:height // 3 + 20, width // 4:width // 2] = 0
    return image


def patchwork_scene(height: int = 480, width: int = 256, seed: int = 0, nodata: bool = True) -> np.ndarray:
    """A synthetic RGB uint8 scene for split tests: a patchwork of touching fields (Voronoi cells, 40-160 px
    across, so many span several row bands) of different crops (red 30-90, green 190-240, blue 40-160: cropland
    for the green models, a visible edge where two crops meet), each outlined by a 2 px red line (the
    boundary output of :func:`edge_model_onnx`, still cropland), some cells grey (not cropland), 2 px grey roads,
    light noise, and, when ``nodata``, a block of zeros (nodata 0) cutting into some fields. Returns (3, H, W)."""
    rng = np.random.default_rng(seed)
    n = max(4, height * width // 6000)
    cy, cx = rng.integers(0, height, n), rng.integers(0, width, n)
    yy, xx = np.mgrid[:height, :width]
    cell = np.argmin([(yy - y) ** 2 + (xx - x) ** 2 for y, x in zip(cy, cx, strict=True)], axis=0)
    line = np.zeros((height, width), bool)
    line[:, :-1] |= cell[:, :-1] != cell[:, 1:]
    line[:-1] |= cell[:-1] != cell[1:]
    line[:, 1:] |= line[:, :-1].copy()  # 2 px wide
    crop = rng.random(n) > 0.2
    colours = np.stack([rng.choice([30, 60, 90], n), rng.choice([190, 215, 240], n),
                        rng.choice([40, 100, 160], n)])
    field = crop[cell]
    image = np.where(field, colours[:, cell], np.array([140, 90, 140])[:, None, None]).astype(int)
    image[0][field & line] = 230
    for _ in range(3):  # 2 px roads
        image[:, :, rng.integers(0, width - 2) + np.arange(2)] = np.array([140, 90, 140])[:, None, None]
        image[:, rng.integers(0, height - 2) + np.arange(2), :] = np.array([140, 90, 140])[:, None, None]
    image = np.clip(image + rng.integers(-8, 9, image.shape), 1, 255).astype(np.uint8)
    if nodata:
        image[:, height // 3:height // 3 + 20, width // 4:width // 2] = 0
    return image
