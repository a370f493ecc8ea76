"""Input formats (VRT, COG, JPEG2000, internal masks), vector output formats, and the PyTorch backend."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from affine import Affine
from helpers import REPO, field_scene, write_raster
from rasterio.crs import CRS

from engine.api import extract, extract_array
from engine.metadata import ModelMetadata
from engine.options import ExtractOptions, OutputPaths

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)
OPTS = ExtractOptions(opening_px=0)


@pytest.fixture
def scene(tmp_path):
    image, truth = field_scene()
    return write_raster(tmp_path / "scene.tif", image, T2M, UTM), image, truth


def test_vrt_cog_and_jpeg2000_inputs(scene, green_model, tmp_path):
    path, _image, truth = scene
    from rasterio.shutil import copy as rio_copy

    vrt = tmp_path / "scene.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="300" rasterYSize="200">
  <SRS>EPSG:32633</SRS><GeoTransform>500000, 2, 0, 6000000, 0, -2</GeoTransform>
  {''.join(f'''<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>
    <SourceFilename relativeToVRT="1">scene.tif</SourceFilename><SourceBand>{b}</SourceBand>
  </SimpleSource></VRTRasterBand>''' for b in (1, 2, 3))}
</VRTDataset>""")
    rio_copy(path, tmp_path / "scene_cog.tif", driver="COG")
    rio_copy(path, tmp_path / "scene.jp2", driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    for name in ("scene.vrt", "scene_cog.tif", "scene.jp2"):
        result = extract(tmp_path / name, green_model, options=OPTS)
        assert result.cropland_pixels == truth.sum(), name
        assert result.crs == "EPSG:32633" and result.field_count == 6, name


def test_internal_mask_is_nodata(green_model, tmp_path):
    image, truth = field_scene()
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", driver="GTiff", width=300, height=200, count=3, dtype="uint8", crs=UTM,
            transform=T2M) as ds:
        ds.write(image)
        valid = np.full((200, 300), 255, np.uint8)
        valid[150:, 200:] = 0
        ds.write_mask(valid)
    result = extract(path, green_model, options=OPTS)
    assert result.valid_pixels == truth.size - 50 * 100
    assert result.cropland_pixels == truth.sum() - truth[150:, 200:].sum()


@pytest.mark.parametrize("suffix,perimeter", [(".geojson", "perimeter_m"), (".shp", "perim_m"),
                                              (".fgb", "perimeter_m")])
def test_vector_formats_by_extension(scene, green_model, tmp_path, suffix, perimeter):
    path, _, truth = scene
    out = tmp_path / f"fields{suffix}"
    extract(path, green_model, OutputPaths(vector=out), OPTS)
    meta, _, geometry, data = pyogrio.raw.read(out)
    assert len(geometry) == 6
    assert perimeter in list(meta["fields"])
    areas = data[list(meta["fields"]).index("area_m2")]
    assert areas.sum() == pytest.approx(4.0 * truth.sum())
    assert not [p for p in tmp_path.iterdir() if ".part-" in p.name]


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".shp", ".fgb"])
def test_fields_are_written_in_chunks_in_order(tmp_path, suffix):
    """Fields written a few at a time (several appends; GeoJSON in one piece) come back complete, in id order
    (FlatGeobuf orders them along its spatial index)."""
    import shapely

    from engine.writers import FieldWriter

    boxes = [shapely.box(500000 + 10 * k, 6000000, 500008 + 10 * k, 6000008) for k in range(30)]
    writer = FieldWriter(tmp_path / f"chunked{suffix}", UTM)
    for k0 in range(0, 30, 3):  # 3 fields a chunk
        chunk = boxes[k0:k0 + 3]
        writer.write(np.arange(k0 + 1, k0 + 4), shapely.to_wkb(chunk),
                     np.array([[g.area, g.length, 0.5, np.nan] for g in chunk]))
    writer.close()
    meta, _, geometry, data = pyogrio.raw.read(tmp_path / f"chunked{suffix}")
    names = list(meta["fields"])
    ids = data[names.index("id")].tolist()
    assert ids == list(range(1, 31)) or (suffix == ".fgb" and sorted(ids) == list(range(1, 31)))  # FGB: by index
    assert all(shapely.from_wkb(g).equals(boxes[k - 1]) for g, k in zip(geometry, ids, strict=True))
    assert data[names.index("area_m2")].tolist() == [64.0] * 30


def test_torch_checkpoint_matches_its_onnx_export(tmp_path):
    """The PyTorch backend (checkpoint, weights_only) and the exported ONNX model give the same probabilities."""
    torch = pytest.importorskip("torch")
    from training.checkpoint import FORMAT, save_checkpoint
    from training.export import export_onnx
    from training.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", 3, 2, width=8).eval()
    meta = ModelMetadata(name="tiny_unet", architecture="unet", input_bands=[1, 2, 3], mean=[0.4] * 3,
                         std=[0.25] * 3, tile_size=64, overlap=16)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", {"state_dict": model.state_dict(),
                                                  "args": {"arch": "unet", "width": 8},
                                                  "metadata": asdict(meta)})
    onnx_path = export_onnx(model, meta, tmp_path / "tiny.onnx")
    image, _ = field_scene(96, 128)
    _, p_torch, _ = extract_array(image, ckpt, options=OPTS)
    _, p_onnx, _ = extract_array(image, onnx_path, options=OPTS)
    assert np.abs(p_torch - p_onnx).max() < 1e-4
    assert FORMAT.startswith("cropland-extractor")


def real_member(name: str = "linknet_mobilenet_v2.onnx"):
    """A member of the shipped default ensemble (LinkNet: its output does not depend on the tile's content far
    away, unlike the FCN's squeeze-and-excitation gates, which pool over the whole tile)."""
    path = REPO / "resources" / "models" / "v1" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: the shipped default ensemble is incomplete")
    return path


def test_tiling_agrees_with_one_tile_on_a_real_model():
    """One 1024 px tile versus many 256 px tiles overlapping by 64 px: masks agree on >= 99.5 % of pixels."""
    sample = REPO / "resources" / "samples" / "naip_nd_2012.tif"
    with rasterio.open(sample) as ds:
        image = ds.read(window=rasterio.windows.Window(0, 0, 700, 600))
    member = real_member()
    _, _, one = extract_array(image, member, options=ExtractOptions(tile_size=1024, overlap=0, opening_px=0))
    _, _, many = extract_array(image, member, options=ExtractOptions(tile_size=256, overlap=64, opening_px=0))
    agreement = (one == many).mean()
    assert agreement >= 0.995, agreement
    assert 0.05 < (many == 1).mean() < 0.995  # the model finds cropland and something else


def test_tile_size_is_rounded_to_the_models_multiple():
    sample = REPO / "resources" / "samples" / "naip_nd_2012.tif"
    with rasterio.open(sample) as ds:
        image = ds.read(window=rasterio.windows.Window(0, 0, 300, 200))
    logs: list[str] = []
    _, _, mask = extract_array(image, real_member(), options=ExtractOptions(tile_size=200, overlap=40),
                               log=logs.append)
    assert any("rounded up to 224 px" in line for line in logs)
    assert mask.shape == (200, 300)
