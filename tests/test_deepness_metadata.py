"""Our ONNX models' metadata read the way the Deepness QGIS plugin (0.6.5) reads it.

Deepness (PUTvision/qgis-plugin-deepness, ``processing/models/model_base.py``) reads each key of the ONNX
custom metadata map with ``json.loads`` and converts it: ``model_type`` -> ``str(v).capitalize()`` (must name
one of its model types), ``resolution`` -> ``float`` (cm/px), ``tile_size`` and ``tiles_overlap`` -> ``int``,
``seg_thresh`` -> ``float``, ``class_names`` -> dict with consecutive integer keys. The reader below does the
same, so a value Deepness cannot parse fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from engine.metadata import METADATA_KEY, ModelMetadata

SHIPPED = sorted((REPO / "resources" / "models").glob("*.onnx"))
DEEPNESS_MODEL_TYPES = ("Segmentor", "Regressor", "Detector")


def deepness_read(path: Path) -> dict:
    """What Deepness 0.6.5 gets from ``path``'s metadata (raises as Deepness would on a malformed value)."""
    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    conversions = {"resolution": float, "tile_size": int, "tiles_overlap": int, "seg_thresh": float}
    out = {"model_type": str(json.loads(meta["model_type"])).capitalize()}
    for key, convert in conversions.items():
        if key in meta:
            out[key] = convert(json.loads(meta[key]))
    names = json.loads(meta["class_names"])
    ordered = sorted(names.items(), key=lambda kv: int(kv[0]))
    assert [int(k) for k, _ in ordered] == list(range(len(ordered))), "class ids must be consecutive"
    out["class_names"] = [v for _, v in ordered]
    for key in ("standardization_mean", "standardization_std"):
        out[key] = [float(v) for v in json.loads(meta[key])]
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_models_parse_in_deepness(path):
    import onnxruntime as ort

    read = deepness_read(path)
    ours = ModelMetadata.from_onnx_props(
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map,
        str(path))
    assert read["model_type"] in DEEPNESS_MODEL_TYPES and read["model_type"] == "Segmentor"
    assert read["class_names"] == ours.classes == ["other", "cropland"]
    assert read["resolution"] == pytest.approx(ours.resolution_m * 100)  # cm/px
    assert read["tile_size"] == ours.tile_size
    assert read["tiles_overlap"] == round(100 * ours.overlap / ours.tile_size)
    assert read["seg_thresh"] == ours.threshold


def test_exported_model_parses_in_deepness_and_normalises_alike(tmp_path):
    """A 16-bit model (input_scale 10000): Deepness divides by 255, so its mean/std are rescaled to match."""
    pytest.importorskip("torch")
    import torch

    from training.export import export_onnx

    meta = ModelMetadata(name="m16", architecture="test", input_bands=[1, 2, 3], input_scale=10000.0,
                         mean=[0.1, 0.2, 0.3], std=[0.05, 0.06, 0.07], tile_size=256, overlap=32, resolution_m=None,
                         threshold=0.4)
    path = export_onnx(torch.nn.Conv2d(3, 2, 1), meta, tmp_path / "m16.onnx")
    read = deepness_read(path)
    assert read["model_type"] == "Segmentor" and read["tile_size"] == 256 and read["tiles_overlap"] == 12
    assert "resolution" not in read  # unknown: left out rather than null, which float() refuses
    assert read["seg_thresh"] == pytest.approx(0.4)
    raw = np.array([1234.0, 5678.0, 9000.0])
    ours = (raw / meta.input_scale - np.array(meta.mean)) / np.array(meta.std)
    theirs = (raw / 255.0 - np.array(read["standardization_mean"])) / np.array(read["standardization_std"])
    assert theirs == pytest.approx(ours, rel=1e-6)


def test_old_metadata_still_loads_and_restamping_fixes_it(tmp_path):
    """A model with the pre-JSON Deepness keys (bare Segmentor, string numbers) runs in the engine and is
    made Deepness-readable by restamp_metadata without touching its graph."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from helpers import green_threshold_onnx

    from engine.api import ExtractOptions, load_model
    from training.export import restamp_metadata

    path = green_threshold_onnx(tmp_path / "old.onnx")
    proto = onnx.load(str(path))
    record = next(p.value for p in proto.metadata_props if p.key == METADATA_KEY)
    del proto.metadata_props[:]
    for key, value in {METADATA_KEY: record, "model_type": "Segmentor", "tile_size": "64",
                       "class_names": json.dumps({0: "other", 1: "cropland"})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    graph = proto.graph.SerializeToString()

    with pytest.raises(json.JSONDecodeError):
        deepness_read(path)
    assert load_model(path, ExtractOptions(device="cpu")).meta.tile_size == 64
    assert restamp_metadata(path) is True
    assert deepness_read(path)["model_type"] == "Segmentor"
    assert onnx.load(str(path)).graph.SerializeToString() == graph
    assert restamp_metadata(path) is False
    assert load_model(path, ExtractOptions(device="cpu")).meta.tile_size == 64


def test_deepness_copy_has_a_fixed_input_size_and_the_same_outputs(tmp_path):
    """Deepness 0.6.5 takes its tile size from input_shape[-1], which must be an int."""
    pytest.importorskip("torch")
    import onnxruntime as ort
    from helpers import green_threshold_onnx

    from engine.api import ExtractOptions, extract_array
    from training.export import deepness_copy

    original = green_threshold_onnx(tmp_path / "green.onnx", tile_size=64)
    copy = deepness_copy(original, tmp_path / "deepness" / "green_deepness.onnx")
    session = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[-1], int) and shape[-2:] == [64, 64] and shape[1] == 3
    assert deepness_read(copy)["tile_size"] == shape[-1]
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    reference = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0],
                               reference.run(None, {reference.get_inputs()[0].name: x})[0], atol=1e-6)
    image = np.random.default_rng(1).integers(0, 255, (3, 100, 90)).astype(np.uint8)
    options = ExtractOptions(device="cpu", opening_px=0)
    fixed, _, fixed_mask = extract_array(image, copy, options=options)  # the engine runs it at its tile size
    dynamic, _, dynamic_mask = extract_array(image, original, options=options)
    np.testing.assert_array_equal(fixed_mask, dynamic_mask)
    assert fixed.cropland_pixels == dynamic.cropland_pixels
