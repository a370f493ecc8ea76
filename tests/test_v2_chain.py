"""CI trains a tiny v2 model end to end: catalogue -> fit -> export -> ensemble.json -> engine.

The data is a synthetic set in the NAIP set's own on-disk format (JPEG-in-PNG tiles + a VIA polygon file), read by
the catalogue's NAIP reader, so the whole chain runs in seconds without ../shared.
"""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.datasets import load_scenes
from training.v2 import main

TILE = 96
#: Four fields per tile (first and last column and row, inclusive); fields 1 and 2 share an edge, roads elsewhere.
FIELDS = [(4, 4, 43, 43), (44, 4, 91, 43), (4, 50, 43, 91), (50, 50, 91, 91)]


def make_naip_like(root, n_tiles: int = 5) -> None:
    """``root/naip_us_fields_agoro`` with ``n_tiles`` 96 x 96 px tiles and their VIA annotations."""
    folder = root / "naip_us_fields_agoro"
    (folder / "images_png").mkdir(parents=True)
    rng = np.random.default_rng(0)
    via = {}
    for t in range(n_tiles):
        name = f"{40 + t}.0--{90 + t}.0"
        img = np.full((TILE, TILE, 3), (90, 80, 70), np.float32)  # roads and yards
        regions = []
        for k, (x0, y0, x1, y1) in enumerate(FIELDS):
            colour = rng.uniform(60, 220, 3)
            img[y0:y1 + 1, x0:x1 + 1] = colour
            img[y0:y1 + 1, x0:x1 + 1, k % 3] += 25 * np.sin(np.arange(x1 - x0 + 1) / 2.0)  # rows of crops
            xs, ys = [x0 - 0.4, x1 + 0.4, x1 + 0.4, x0 - 0.4], [y0 - 0.4, y0 - 0.4, y1 + 0.4, y1 + 0.4]
            regions.append({"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
                            "region_attributes": {}})
        img += rng.normal(0, 4, img.shape)
        cv2.imwrite(str(folder / "images_png" / f"{name}.png"),
                    np.clip(img, 0, 255).astype(np.uint8)[:, :, ::-1])  # OpenCV writes BGR
        via[f"{name}.png123"] = {"filename": f"{name}.png", "size": 123, "regions": regions}
    (folder / "annotations_via.json").write_text(json.dumps(via))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared_data")
    make_naip_like(root)
    return root


FIT = ["--arch", "unet", "--width", "4", "--datasets", "naip", "--tile", "64", "--overlap", "16",
       "--batch-size", "2", "--epochs", "2", "--steps-per-epoch", "3", "--threads", "1", "--lr", "5e-3"]


def test_catalogue_reads_the_fixture_like_the_real_set(data_root):
    scenes = load_scenes(["naip"], data_root, log=lambda _: None)
    assert [s.split for s in scenes] == ["train"] * 4 + ["val"]
    s = scenes[0]
    assert s.instances.max() == 4 and (s.extent == 1).sum() == sum((x1 - x0 + 1) * (y1 - y0 + 1)
                                                                   for x0, y0, x1, y1 in FIELDS)
    assert s.boundary[20, 43] == 1 and s.boundary[20, 44] == 1  # the shared edge of fields 1 and 2


def test_chain_catalogue_fit_export_engine(data_root, tmp_path, capsys):
    from engine.api import extract_array, load_model
    from engine.metadata import METADATA_KEY

    assert main(["catalogue", "--datasets", "naip", "--data-root", str(data_root),
                 "--json", str(tmp_path / "catalogue.json")]) == 0
    table = json.loads((tmp_path / "catalogue.json").read_text())
    assert table["naip"]["train"]["fields"] == 16 and table["naip"]["val"]["scenes"] == 1

    run = tmp_path / "run"
    assert main(["fit", *FIT, "--val-every", "2", "--data-root", str(data_root), "--out", str(run)]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2 and "val_naip_object_f1" in rows[0] and "train_boundary_tversky" in rows[0]
    assert rows[0]["val_score"] == "" and float(rows[1]["val_score"]) >= 0  # validated every 2nd epoch
    log = (run / "train.log").read_text()
    assert "epoch 1 step 3 loss" in log and "not validated" in log and "epoch 2 step 6" in log

    onnx = tmp_path / "models" / "tiny.onnx"
    assert main(["export", str(run / "best.pt"), "--onnx", str(onnx), "--tile-size", "64"]) == 0
    assert main(["ensemble", str(onnx), "--out", str(tmp_path / "models" / "ensemble.json")]) == 0

    assert main(["evaluate", str(tmp_path / "models" / "ensemble.json"), "--datasets", "naip", "--data-root",
                 str(data_root), "--tile", "64", "--overlap", "16", "--json", str(tmp_path / "eval.json")]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())["naip"]
    field_px = sum((x1 - x0 + 1) * (y1 - y0 + 1) for x0, y0, x1, y1 in FIELDS)
    assert scores["baseline_iou"] == pytest.approx(field_px / TILE**2, abs=1e-4)  # the val tile's field share
    assert {"iou", "boundary_f1", "object_f1", "ratio_error"} <= set(scores)

    ens = load_model(tmp_path / "models" / "ensemble.json")
    member = ens.members[0]
    outputs = [o.name for o in member.session.get_outputs()]
    assert outputs == ["extent", "boundary"]
    props = member.session.get_modelmeta().custom_metadata_map
    record = json.loads(props[METADATA_KEY])
    assert record["outputs"] == ["extent", "boundary"]
    assert record["resolution_range_m"] == [1.0, 10.0] and record["resolution_m"] == 1.0
    assert record["stretch"] == "percentile"

    img = cv2.imread(str(next((data_root / "naip_us_fields_agoro" / "images_png").glob("*.png"))))[:, :, ::-1]
    raw = np.ascontiguousarray(img.transpose(2, 0, 1))
    # the engine reads training's contract: named outputs, percentile stretch, accepted resolutions
    assert member.meta.channels == ens.channels == ["extent", "boundary"]
    assert member.meta.stretch == "percentile" and member.meta.resolution_range_m == [1.0, 10.0]
    result, prob, mask = extract_array(raw, model=ens)
    assert prob.shape == (TILE, TILE) and np.isfinite(prob).all() and set(np.unique(mask)) <= {0, 1}
    assert result.cropland_ratio == pytest.approx(float((mask == 1).mean()))
    assert result.models == ["run (tiny.onnx)"]  # member name = the run folder
    assert "as the model was trained" in result.normalization  # --stretch auto took the metadata's percentile
    assert result.split["method"] == "boundary"  # --split auto splits on the model's boundary output
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    extent, boundary = member.session.run(None, {"input": x})
    assert extent.shape == boundary.shape == (1, 2, 64, 64)
    np.testing.assert_allclose(extent.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(boundary.sum(1), 1, atol=1e-5)
    channels = member(x)  # the engine's channels: training's extent and boundary, cropland / edge probability
    np.testing.assert_allclose(channels[:, 0], extent[:, 1], atol=1e-6)
    np.testing.assert_allclose(channels[:, 1], boundary[:, 1], atol=1e-6)

    # the engine splits on that boundary output: a session whose boundary marks a line drawn in the image (band 1
    # up, band 2 down in columns 47-48) cuts one all-cropland field in two there; without the split it stays one
    from engine.options import ExtractOptions

    meta = member.meta
    mean, std = (np.asarray(v, np.float32)[None, :, None, None] for v in (meta.mean, meta.std))

    class LineSession:
        get_inputs = member.session.get_inputs  # the real graph's input, for the engine's memory release

        def run(self, names, feeds, *args):
            unit = feeds["input"] * std + mean  # back to 0..1 (stretch none)
            edge = np.clip((unit[:, 0] - unit[:, 1]) * 2, 0, 1)[:, None]
            return [np.concatenate([0.1 + 0 * edge, 0.9 + 0 * edge], 1), np.concatenate([1 - edge, edge], 1)]

    member.session = LineSession()
    line = np.full((3, TILE, TILE), 120, np.uint8)
    line[0, :, 47:49], line[1, :, 47:49] = 250, 0
    counts = {}
    for split in ("boundary", "none"):
        options = ExtractOptions(split=split, stretch="none", min_area_m2=0, max_hole_m2=0)
        res, _, cut_mask = extract_array(line, model=ens, options=options)
        assert (cut_mask == 1).all()  # the cut pixels are grown back: the fields cover the whole mask
        counts[split] = (res.field_count, res.split["method"])
    assert counts == {"boundary": (2, "boundary"), "none": (1, "none")}


def test_resume_continues_the_same_run(data_root, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["fit", *FIT, "--data-root", str(data_root), "--out", str(straight)]) == 0
    assert main(["fit", *FIT, "--max-steps", "3", "--data-root", str(data_root), "--out", str(split)]) == 0
    assert load_checkpoint(split / "last.pt")["step"] == 3
    assert main(["fit", *FIT, "--data-root", str(data_root), "--out", str(split),
                 "--resume", str(split / "last.pt")]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert a["step"] == b["step"] == 6
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(v, b["state_dict"][k], atol=1e-5, rtol=1e-4)


def test_resume_refuses_other_options(data_root, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["fit", *FIT, "--max-steps", "1", "--data-root", str(data_root), "--out", str(run)]) == 0
    other = [a if a != "3" else "4" for a in FIT]  # steps-per-epoch 4
    assert main(["fit", *other, "--data-root", str(data_root), "--out", str(run),
                 "--resume", str(run / "last.pt")]) == 2
    assert "steps_per_epoch" in capsys.readouterr().err


def test_engine_and_training_stretch_a_v2_scene_alike():
    """A v2 model's ``stretch: percentile``: the engine's ``--stretch auto`` applies the same per-band stretch
    (engine.normalize.choose_stretch) that training's readers apply (training.datasets.scene.unit_stretch)."""
    from engine.errors import ModelError
    from engine.metadata import ModelMetadata
    from engine.normalize import choose_stretch
    from training.datasets.scene import unit_stretch

    rng = np.random.default_rng(3)
    raw = (rng.gamma(2.0, 300.0, (3, 60, 70)) + np.array([0, 200, 400])[:, None, None]).clip(0, 4095)
    raw = raw.astype(np.uint16)  # a 12-bit scene, bands of different ranges
    record = {"name": "v2", "architecture": "unet", "input_bands": [1, 2, 3], "input_scale": 255.0,
              "mean": [0.5] * 3, "std": [0.25] * 3, "stretch": "percentile", "outputs": ["extent", "boundary"]}
    meta = ModelMetadata.from_dict(record)
    assert meta.stretch == "percentile" and meta.channels == ["extent", "boundary"]
    sample = raw.reshape(3, -1).astype(np.float32)
    stretch = choose_stretch(sample, meta, "auto", "scene")
    assert "as the model was trained" in stretch.how
    engine_unit = stretch.apply(raw.astype(np.float32)) / np.float32(meta.input_scale)
    np.testing.assert_allclose(engine_unit, unit_stretch(raw), atol=1e-6)
    assert not np.allclose(unit_stretch(raw)[0], raw[0] / 4095, atol=0.05)  # not a plain value-range scaling

    v1 = ModelMetadata.from_dict({k: v for k, v in record.items() if k not in ("stretch", "outputs")})
    assert choose_stretch(sample, v1, "auto", "scene").how.startswith("value range")  # v1 models as before
    assert choose_stretch(sample, meta, "none", "scene") is None  # the user's explicit choice still wins
    with pytest.raises(ModelError, match="'stretch' must be one of"):
        ModelMetadata.from_dict({**record, "stretch": "minmax"})
    with pytest.raises(ModelError, match="not one of"):
        ModelMetadata.from_dict({**record, "outputs": ["extent", "instances"]})


def test_quantize_writes_an_int8_member_the_engine_runs(data_root, tmp_path, capsys):
    """fit -> fp32 export -> int8 QDQ on training tiles: smaller, metadata kept (int8 recorded), outputs close to
    fp32 on a validation tile through the engine; fp16 members and existing outputs are refused."""
    import onnx as onnx_lib

    from engine.api import load_model
    from engine.metadata import METADATA_KEY

    run, models = tmp_path / "run", tmp_path / "models"
    assert main(["fit", *FIT, "--epochs", "1", "--data-root", str(data_root), "--out", str(run)]) == 0
    fp32, int8, fp16 = models / "m.onnx", models / "m_int8.onnx", models / "m16.onnx"
    assert main(["export", str(run / "best.pt"), "--onnx", str(fp32), "--tile-size", "64"]) == 0
    assert main(["export", str(run / "best.pt"), "--onnx", str(fp16), "--tile-size", "64", "--fp16"]) == 0
    assert main(["quantize", str(fp32), "--out", str(int8), "--datasets", "naip", "--data-root", str(data_root),
                 "--tiles", "8", "--tile", "64"]) == 0
    assert int8.stat().st_size < fp32.stat().st_size
    q = onnx_lib.load(str(int8))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    record = json.loads({p.key: p.value for p in q.metadata_props}[METADATA_KEY])
    assert record["extra"]["int8"]["calibration_tiles"] == 8 and record["outputs"] == ["extent", "boundary"]

    val = next(s for s in load_scenes(["naip"], data_root, log=lambda _: None) if s.split == "val")
    x = val.image[None, :, :64, :64].astype(np.float32)
    a, b = (load_model(p).members[0] for p in (fp32, int8))
    assert b.meta.outputs == a.meta.outputs and b.meta.stretch == a.meta.stretch
    from engine.normalize import normalize

    feed = {"input": normalize(x * np.float32(a.meta.input_scale), np.ones((1, 64, 64), bool), a.meta, None)}
    pa, pb = a.session.run(None, feed), b.session.run(None, feed)
    for oa, ob in zip(pa, pb, strict=True):
        assert np.abs(oa - ob).max() < 0.1  # int8 rounding, not another model
    assert main(["quantize", str(fp16), "--out", str(models / "x.onnx"), "--datasets", "naip", "--data-root",
                 str(data_root), "--tiles", "2", "--tile", "64"]) == 2
    assert "float16 weights" in capsys.readouterr().err
    assert main(["quantize", str(fp32), "--out", str(int8), "--datasets", "naip", "--data-root",
                 str(data_root), "--tiles", "2", "--tile", "64"]) == 2
    assert "nothing is overwritten" in capsys.readouterr().err
