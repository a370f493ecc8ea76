"""The command line: several inputs, the report, stats and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pyogrio.raw
import pytest
import shapely
from affine import Affine
from helpers import field_scene, shared_path, write_raster
from rasterio.crs import CRS

from engine.cli import main
from engine.errors import InputError
from engine.evaluate import evaluate

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)


def test_several_inputs_each_get_outputs_and_a_report_row(tmp_path, green_model, capsys):
    names = []
    for k, (h, w) in enumerate([(100, 120), (80, 90), (60, 200)]):
        image, _ = field_scene(h, w, seed=k)
        names.append(write_raster(tmp_path / f"scene{k}.tif", image, T2M, UTM))
    code = main(["extract", *map(str, names), "--model", str(green_model), "--output",
                 str(tmp_path / "out" / "{stem}_fields.gpkg"), "--mask", str(tmp_path / "mask.tif"),
                 "--report", str(tmp_path / "report.json"), "-q"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 3 and all("ratio" in line for line in out)
    for k in range(3):
        assert (tmp_path / "out" / f"scene{k}_fields.gpkg").exists()
        assert (tmp_path / f"mask_scene{k}.tif").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["input"] for row in report["rows"]] == [str(n) for n in names]
    assert report["total"]["field_count"] == sum(r["field_count"] for r in report["rows"])
    assert report["total"]["cropland_area_m2"] == pytest.approx(sum(r["cropland_area_m2"] for r in report["rows"]))
    assert report["command"].startswith("python -m engine extract")


def test_several_inputs_refused_before_any_work_when_one_output_exists(tmp_path, green_model, capsys):
    image, _ = field_scene(60, 80)
    a = write_raster(tmp_path / "a.tif", image, T2M, UTM)
    b = write_raster(tmp_path / "b.tif", image, T2M, UTM)
    (tmp_path / "f_b.gpkg").write_text("keep")
    code = main(["extract", str(a), str(b), "--model", str(green_model), "-o", str(tmp_path / "f.gpkg"), "-q"])
    assert code == 2 and "f_b.gpkg already exists" in capsys.readouterr().err
    assert not (tmp_path / "f_a.gpkg").exists()


@pytest.mark.shared
def test_stats_on_contest_labels(capsys):
    labels = shared_path("mathorcup2020_cropland", "train", "labels")
    files = sorted(labels.glob("Data*_reference.tif"))
    assert main(["stats", *map(str, files), "--pixel-size", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [round(r["cropland_ratio"], 4) for r in rows] == [0.8329, 0.8423, 0.7468, 0.5534, 0.6802, 0.8389]
    assert all(r["valid_area_m2"] == pytest.approx(1.2e6) for r in rows)


def test_stats_of_polygons_over_a_raster(tmp_path, capsys):
    raster = write_raster(tmp_path / "r.tif", np.ones((100, 100), np.uint8), Affine(10, 0, 0, 0, -10, 1000), UTM)
    poly = shapely.box(0, 500, 500, 1000)  # the top-left quarter
    pyogrio.raw.write(str(tmp_path / "p.gpkg"), shapely.to_wkb([poly]), [], [], geometry_type="Polygon",
                      crs="EPSG:32633", driver="GPKG")
    assert main(["stats", str(raster), "--polygons", str(tmp_path / "p.gpkg"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["cropland_ratio"] == 0.25 and row["cropland_area_m2"] == pytest.approx(250000)


def test_evaluate_prediction_against_reference(tmp_path, green_model, capsys):
    image, truth = field_scene()
    scene = write_raster(tmp_path / "scene.tif", image, T2M, UTM)
    ref = write_raster(tmp_path / "ref.tif", truth, T2M, UTM)
    assert main(["extract", str(scene), "--model", str(green_model), "--opening", "0", "--mask",
                 str(tmp_path / "pred.tif"), "-o", str(tmp_path / "pred.gpkg"), "-q", "--min-area", "0",
                 "--max-hole", "0"]) == 0
    perfect = evaluate(tmp_path / "pred.tif", ref)
    assert perfect["iou"] == 1.0 and perfect["object_f1"] == 1.0 and perfect["ratio_error"] == 0.0
    from_polygons = evaluate(tmp_path / "pred.gpkg", ref)
    assert from_polygons["iou"] == 1.0 and from_polygons["fields_pred"] == from_polygons["fields_ref"] == 6
    worse = truth.copy()
    worse[10:90, 10:140] = 0  # one field missed
    write_raster(tmp_path / "worse.tif", worse, T2M, UTM)
    m = evaluate(tmp_path / "worse.tif", ref)
    missed = int(truth.sum()) - int(worse.sum())
    assert m["recall"] == pytest.approx(worse.sum() / truth.sum())
    assert m["iou"] == pytest.approx(worse.sum() / truth.sum())
    assert m["object_recall"] == pytest.approx(5 / 6) and m["object_precision"] == 1.0
    assert m["ratio_error"] == pytest.approx(-missed / truth.size)
    assert m["pred_area_m2"] == pytest.approx(4.0 * worse.sum())
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "worse.tif"), str(ref), "--json", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert "cropland IoU" in table and "object F1" in table
    assert json.loads((tmp_path / "m.json").read_text())["iou"] == pytest.approx(m["iou"])


def test_evaluate_two_polygon_layers(tmp_path, capsys):
    """Polygons against polygons: rasterised on a grid over both extents; metrics follow from the geometry."""
    def write(path, polys, crs="EPSG:32633"):
        pyogrio.raw.write(str(path), shapely.to_wkb(polys), [], [], geometry_type="Polygon", crs=crs, driver="GPKG")
        return path

    ref = write(tmp_path / "ref.gpkg", [shapely.box(0, 0, 400, 400), shapely.box(600, 0, 1000, 400)])
    pred = write(tmp_path / "pred.gpkg", [shapely.box(0, 0, 400, 300)])  # 3/4 of one field, the other missed
    m = evaluate(pred, ref, cell_size=10)
    assert m["iou"] == pytest.approx(120000 / 320000)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(0.375)
    assert m["ref_area_m2"] == pytest.approx(320000) and m["pred_area_m2"] == pytest.approx(120000)
    assert (m["fields_ref"], m["fields_pred"], m["matched_fields"]) == (2, 1, 1)
    # the prediction in another CRS (UTM 33N -> WGS 84) lands on the same grid
    import pyproj
    from shapely.affinity import translate
    tr = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    ll = [shapely.transform(shapely.segmentize(shapely.box(0, 0, 400, 300), 10),
                            lambda xy: np.column_stack(tr.transform(xy[:, 0] + 500000, xy[:, 1] + 6000000)))]
    ref_m = write(tmp_path / "ref_m.gpkg", [translate(g, 500000, 6000000)
                                            for g in (shapely.box(0, 0, 400, 400), shapely.box(600, 0, 1000, 400))])
    m2 = evaluate(write(tmp_path / "pred_ll.gpkg", ll, crs="EPSG:4326"), ref_m, cell_size=10)
    assert m2["iou"] == pytest.approx(m["iou"], abs=0.01)
    assert main(["evaluate", str(pred), str(ref), "--cell-size", "10", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["iou"] == pytest.approx(m["iou"])
    with pytest.raises(InputError, match="cell-size"):
        evaluate(pred, ref, cell_size=-1)


def test_area_filters_default_to_the_models_gsd_as_in_the_plugin(tmp_path, green_model, capsys):
    """Without --min-area/--max-hole the command line filters as the plugin does (engine.defaults.auto_filters of
    the model's GSD) and says so; 0 keeps everything; one given keeps its value, the other is derived."""
    import pyogrio

    from engine.api import load_model
    from engine.defaults import auto_filters

    image, _ = field_scene()
    scene = write_raster(tmp_path / "scene.tif", image, T2M, UTM)
    auto_min, auto_hole = auto_filters(load_model(green_model).meta.resolution_m)
    runs = {"auto": [], "off": ["--min-area", "0", "--max-hole", "0"], "min": ["--min-area", "7"]}
    logs, areas = {}, {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.gpkg"
        assert main(["extract", str(scene), "--model", str(green_model), "-o", str(out), *extra]) == 0
        logs[name] = capsys.readouterr().err
        meta, _, _, data = pyogrio.raw.read(out)
        areas[name] = np.asarray(data[list(meta["fields"]).index("area_m2")])
    assert f"fields under {auto_min:g} m² dropped, holes under {auto_hole:g} m² filled" in logs["auto"]
    assert "Area filters" not in logs["off"]
    assert f"fields under 7 m² dropped, holes under {auto_hole:g} m² filled" in logs["min"]
    assert areas["auto"].min() >= auto_min and areas["min"].min() >= 7
