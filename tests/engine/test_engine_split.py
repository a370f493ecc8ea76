"""Splitting touching fields (engine.split): exact coverages, the same whatever the strip height."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from engine.split import FieldSplitter, SplitParams, resolve_split, split_links
from engine.vectorize import StripVectorizer


def _fields(mask, probs, params, strip_rows, band_rows, seed=0, label_seams=(), strips=None):
    """Push ``mask``/``probs`` in bands of random heights (at most ``band_rows``) through a FieldSplitter handing
    strips of ``strip_rows`` to a StripVectorizer; returns the fields (and appends ``(row0, SplitStrip)`` of each
    strip to ``strips`` when given)."""
    h, w = mask.shape
    vec = StripVectorizer(w)
    out = []

    def sink(row0, m, valid, prob, split):
        assert m.shape == valid.shape == prob.shape == split.right.shape
        if strips is not None:
            strips.append((row0, split))
        vec.add(row0, m, prob, split)
        out.extend(vec.pop_finished())

    splitter = FieldSplitter(params, sink, strip_rows=strip_rows, label_seams=label_seams)
    rng = np.random.default_rng(seed)
    row = 0
    while row < h:
        n = int(rng.integers(1, band_rows + 1))
        splitter(row, mask[row:row + n], np.ones((min(n, h - row), w), bool), probs[row:row + n])
        row += n
    splitter.close()
    out.extend(vec.fields())
    return out


def _layout(seed: int, h: int = 96, w: int = 120, cells: int = 14):
    """Random Voronoi fields: (mask uint8, probs float32 (h, w, 2) = extent, boundary); some cells are not
    cropland, the boundary is high on the pixels next to another cell, and the extent dips there."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform((0, 0), (h, w), size=(cells, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    label = np.argmin((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2, axis=-1)
    crop = rng.random(cells) < 0.8
    mask = crop[label].astype(np.uint8)
    mask[rng.random((h, w)) < 0.01] = 0  # pepper
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:] |= label[1:] != label[:-1]
    boundary = np.where(edge, 0.9, 0.05).astype(np.float32) + rng.uniform(0, 0.05, (h, w)).astype(np.float32)
    extent = np.where(mask > 0, 0.9, 0.1).astype(np.float32) - np.where(edge, 0.35, 0.0).astype(np.float32)
    return mask, np.stack([extent, boundary], axis=-1)


def _key(fields):
    return sorted(shapely.normalize(f.polygon).wkb for f in fields)


@pytest.mark.parametrize(("method", "grow"), [("boundary", 4), ("extent", 4), ("image", 12), ("boundary", 12)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_a_coverage_and_the_same_for_any_strip_height(method, grow, seed):
    mask, probs = _layout(seed)
    params = SplitParams(method=method, grow_px=grow)
    whole = _fields(mask, probs, params, strip_rows=mask.shape[0], band_rows=mask.shape[0])
    polys = [f.polygon for f in whole]
    assert all(p.is_valid and p.geom_type == "Polygon" for p in polys)
    # a coverage: areas add up to the cropland, no two fields overlap
    assert sum(p.area for p in polys) == mask.sum()
    assert shapely.union_all(polys).area == mask.sum()
    tree = shapely.STRtree(polys)
    left, right = tree.query(polys, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i < j:
            assert polys[i].intersection(polys[j]).area == 0
    # the split really splits: more fields than 4-connected cropland regions
    import cv2

    regions = cv2.connectedComponents(mask, connectivity=4)[0] - 1
    assert len(whole) > regions
    assert sum(f.pixels for f in whole) == mask.sum()
    for strip_rows, band_rows in ((1, 3), (5, 17), (16, 40), (33, 7)):
        streamed = _fields(mask, probs, params, strip_rows, band_rows, seed=strip_rows)
        assert _key(streamed) == _key(whole), (strip_rows, band_rows)
        if method == "boundary":
            a = sorted((round(f.mean_boundary, 9), f.edge_pixels) for f in streamed)
            b = sorted((round(f.mean_boundary, 9), f.edge_pixels) for f in whole)
            assert a == b


def test_two_fields_sharing_an_edge_become_two_polygons_sharing_it():
    h, w = 30, 50
    mask = np.zeros((h, w), np.uint8)
    mask[5:25, 5:45] = 1  # one cropland region...
    boundary = np.full((h, w), 0.05, np.float32)
    boundary[5:25, 24:26] = 0.95  # ...with a field edge down its middle (2 px wide, as a model draws it)
    extent = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    probs = np.stack([extent, boundary], axis=-1)
    for strip_rows in (4, 7, 30):
        fields = _fields(mask, probs, SplitParams(method="boundary"), strip_rows, 9)
        assert len(fields) == 2
        a, b = sorted((f.polygon for f in fields), key=lambda p: p.bounds[0])
        assert a.area + b.area == 20 * 40
        assert a.intersection(b).area == 0
        shared = a.intersection(b)
        assert shared.length == 20 and shared.bounds == (25.0, 5.0, 25.0, 25.0)  # the edge, both polygons
        assert a.bounds == (5.0, 5.0, 25.0, 25.0) and b.bounds == (25.0, 5.0, 45.0, 25.0)
        # the outline of each field runs along the boundary line, so its mean boundary confidence is higher
        # than the background's 0.05 but not 1 (the outer outline is no edge in the boundary output)
        for f in fields:
            assert 0.2 < f.mean_boundary < 0.6


def test_extent_split_separates_a_thin_low_probability_neck_but_not_a_uniform_field():
    h, w = 40, 80
    mask = np.zeros((h, w), np.uint8)
    mask[5:35, 5:35] = 1
    mask[5:35, 45:75] = 1
    mask[18:21, 35:45] = 1  # a 3 px neck joining the two
    extent = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    extent[18:21, 35:45] = 0.6
    fields = _fields(mask, extent[..., None], SplitParams(method="extent"), 8, 11)
    assert len(fields) == 2
    assert sum(f.pixels for f in fields) == mask.sum()
    uniform = np.zeros((h, w), np.uint8)
    uniform[5:35, 5:75] = 1
    flat = np.where(uniform > 0, 0.9, 0.1).astype(np.float32)
    assert len(_fields(uniform, flat[..., None], SplitParams(method="extent"), 8, 11)) == 1


def test_split_links_link_every_cropland_pixel_of_a_field_without_cuts():
    mask = np.ones((10, 12), np.uint8)
    right, down, edge, cut = split_links(mask, np.full((10, 12), 0.9, np.float32), None, SplitParams("extent"))
    assert right[:, :-1].all() and down[:-1].all() and not cut.any()
    assert edge.sum() == 0  # the raster edge is no field edge


def test_resolve_split():
    assert resolve_split("none", True) is None
    assert resolve_split("auto", True).method == "boundary"
    assert resolve_split("auto", False).method == "image"
    assert resolve_split("extent", True).method == "extent"
    with pytest.raises(ValueError, match="boundary"):
        resolve_split("boundary", False)


# --- through the whole pipeline, with a model that has a boundary output --------------------------------------

def _edge_scene(tmp_path):
    """Two fields of one green block, a red (boundary) line 2 px wide between them, a third field apart, and
    their truth (labels 1, 2, 3)."""
    from helpers import write_raster
    from test_engine_pipeline import T2M, UTM

    h, w = 150, 170
    labels = np.zeros((h, w), np.uint8)
    labels[10:130, 10:80] = 1
    labels[10:130, 80:150] = 2
    labels[135:145, 20:60] = 3
    image = np.zeros((3, h, w), np.uint8)
    image[0], image[1], image[2] = 120, 60, 120
    image[1][labels > 0] = 210
    image[0][labels > 0] = 40
    image[0][10:130, 79:81] = 230  # the field edge: still cropland (green), and boundary (red)
    return write_raster(tmp_path / "edges.tif", image, T2M, UTM), labels


@pytest.fixture(scope="module")
def edge_model(tmp_path_factory):
    from helpers import edge_model_onnx

    return edge_model_onnx(tmp_path_factory.mktemp("models") / "edges.onnx")


@pytest.mark.parametrize("three_class", [False, True])
def test_boundary_output_splits_two_touching_fields_into_a_coverage(tmp_path, edge_model, three_class):
    import json

    import pyogrio
    import rasterio

    from engine.api import extract
    from engine.options import ExtractOptions, OutputPaths

    model = edge_model
    if three_class:
        from helpers import edge_model_onnx

        model = edge_model_onnx(tmp_path / "three.onnx", three_class=True)
    path, labels = _edge_scene(tmp_path)
    out = OutputPaths(vector=tmp_path / "f.gpkg", mask=tmp_path / "m.tif", report=tmp_path / "r.json")
    result = extract(path, model, out, ExtractOptions(tile_size=64, overlap=16))
    with rasterio.open(out.mask) as ds:
        mask = ds.read(1)
    np.testing.assert_array_equal(mask, (labels > 0).astype(np.uint8))  # splitting never changes the mask
    assert result.field_count == 3
    polys = [f.geometry for f in result.fields]
    assert sum(p.area for p in polys) == pytest.approx(result.cropland_area_m2)
    assert shapely.union_all(polys).area == pytest.approx(result.cropland_area_m2)
    top = sorted((f for f in result.fields if f.area_m2 > 4 * 1000), key=lambda f: f.geometry.bounds[0])
    left, right = top[0].geometry, top[1].geometry
    assert left.intersection(right).area == 0
    shared = left.intersection(right)
    assert shared.length == pytest.approx(120 * 2)  # the whole edge, 120 px of 2 m, in both polygons
    # the edge lies on the boundary line (columns 79-80), and each field is about its own half
    x_edge = 500000 + 2 * 80
    assert shared.bounds[0] == shared.bounds[2] and abs(shared.bounds[0] - x_edge) <= 2
    assert top[0].area_m2 == pytest.approx(4 * 120 * 70, rel=0.02)
    # per-field outline confidence: the two touching fields' outlines run partly along the red line
    assert all(f.mean_boundary is not None for f in result.fields)
    assert min(top[0].mean_boundary, top[1].mean_boundary) > max(f.mean_boundary for f in result.fields
                                                                 if f not in top)
    info = pyogrio.read_info(out.vector)
    assert "edge_conf" in list(info["fields"])
    row = json.loads(out.report.read_text())["rows"][0]
    assert row["split"]["method"] == "boundary"
    assert row["split"]["regions"] == 2 and row["split"]["fields_added_by_split"] == 1
    # --split none: today's behaviour, one polygon per connected region
    none = extract(path, model, OutputPaths(), ExtractOptions(tile_size=64, overlap=16, split="none"))
    assert none.field_count == 2 and none.cropland_pixels == result.cropland_pixels
    assert all(f.mean_boundary is None for f in none.fields)


def test_filtered_run_splits_like_the_one_pass_run(tmp_path, edge_model):
    from engine.api import extract
    from engine.options import ExtractOptions, OutputPaths

    path, _ = _edge_scene(tmp_path)
    one = extract(path, edge_model, OutputPaths(), ExtractOptions(tile_size=64, overlap=16))
    filtered = extract(path, edge_model, OutputPaths(), ExtractOptions(tile_size=64, overlap=16, min_area_m2=1e-6))
    assert [f.geometry.wkb for f in one.fields] == [f.geometry.wkb for f in filtered.fields]
    assert [round(f.mean_boundary, 4) for f in one.fields] == [round(f.mean_boundary, 4) for f in filtered.fields]


def test_split_boundary_without_a_boundary_output_is_refused(tmp_path, green_model):
    from engine.api import extract
    from engine.errors import InputError
    from engine.options import ExtractOptions, OutputPaths

    path, _ = _edge_scene(tmp_path)
    with pytest.raises(InputError, match="boundary"):
        extract(path, green_model, OutputPaths(), ExtractOptions(split="boundary"))


def test_info_shows_the_outputs(edge_model, capsys):
    import json

    from engine.cli import main

    assert main(["info", str(edge_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"] == ["extent", "boundary"]
    assert doc["members"][0]["outputs"]["boundary"] == {"tensor": "boundary"}


def test_v1_model_splits_along_a_visible_edge_and_none_keeps_todays_fields(tmp_path, green_model):
    """An extent-only (v1) model sees one cropland block; the image shows two crops meeting along a line:
    --split auto (image edges) gives two fields sharing that line, --split none today's single field."""
    from helpers import write_raster
    from test_engine_pipeline import T2M, UTM

    from engine.api import extract
    from engine.options import ExtractOptions, OutputPaths

    h, w = 140, 160
    image = np.zeros((3, h, w), np.uint8)
    image[:] = np.array([140, 80, 140], np.uint8)[:, None, None]
    image[:, 10:130, 10:70] = np.array([40, 200, 50], np.uint8)[:, None, None]   # one crop...
    image[:, 10:130, 70:150] = np.array([150, 230, 60], np.uint8)[:, None, None]  # ...and another, touching it
    path = write_raster(tmp_path / "v1.tif", image, T2M, UTM)
    auto = extract(path, green_model, OutputPaths(), ExtractOptions())
    none = extract(path, green_model, OutputPaths(), ExtractOptions(split="none"))
    assert none.field_count == 1 and none.fields[0].area_m2 == pytest.approx(4 * 120 * 140)
    assert auto.cropland_pixels == none.cropland_pixels == 120 * 140
    assert auto.field_count == 2
    left, right = sorted((f.geometry for f in auto.fields), key=lambda g: g.bounds[0])
    shared = left.intersection(right)
    assert left.intersection(right).area == 0 and left.area + right.area == pytest.approx(4 * 120 * 140)
    assert shared.length == pytest.approx(2 * 120)
    assert abs(shared.bounds[0] - (500000 + 2 * 70)) <= 2 * 2  # on the line where the crops meet
    assert auto.split["method"] == "image" and auto.split["fields_added_by_split"] == 1


@pytest.mark.parametrize("seed", [0, 3])
def test_field_labels_are_the_components_of_the_links(seed):
    """split.field_labels (seeds and unreached cropland labelled, handed down the parent chains) partitions the
    cropland exactly as the connected components of split_links' links do."""
    from engine.split import _grow, field_labels
    from engine.vectorize import _link_components

    mask, probs = _layout(seed, h=120, w=140, cells=24)
    for method in ("boundary", "image", "extent"):
        params = SplitParams(method=method, grow_px=6)
        cue = None if method == "extent" else probs[..., 1]
        right, down, _, _ = split_links(mask, probs[..., 0], cue, params)
        n, want = _link_components(mask, right, down)
        m, _, dist, parent = _grow(mask, probs[..., 0], cue, params)
        got = field_labels(m, dist, parent)
        assert ((got > 0) == (mask > 0)).all()
        pairs = set(zip(got[mask > 0].tolist(), want[mask > 0].tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == n - 1  # one to one


@pytest.mark.parametrize("seed", [0, 1])
def test_fields_whose_pieces_touch_inside_a_strip_are_merged_exactly(seed, monkeypatch):
    """With the least label context (label_rows=0: only the parents' chains), pieces of one field in one strip
    that are joined only rows away touch along edges inside the strip; the vectoriser merges them (coverage union
    per strip, then the seam stitcher) into the polygons of the whole raster."""
    import engine.vectorize as vectorize

    merged = []
    real = vectorize._union_within_strips
    monkeypatch.setattr(vectorize, "_union_within_strips", lambda frags: merged.append(len(frags)) or real(frags))
    mask, probs = _layout(seed, h=160, w=160, cells=30)
    params = SplitParams(method="boundary", grow_px=4, label_rows=0)
    whole = _fields(mask, probs, params, strip_rows=mask.shape[0], band_rows=mask.shape[0])
    for strip_rows, band_rows in ((1, 3), (5, 17), (16, 40)):
        assert _key(_fields(mask, probs, params, strip_rows, band_rows, seed=strip_rows)) == _key(whole)
    assert merged  # the path ran


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_seams_label_each_band_by_its_own_links(seed):
    """A band of a Dask run traces only its own rows: with ``label_seams`` at its edges, strips end there and
    equal labels are linked within the band's rows (never only through the next band's, which the band would
    trace as one field of pieces apart); the fields are still those of the whole raster."""
    import itertools

    from engine.vectorize import _link_components

    mask, probs = _layout(seed, h=120, w=140, cells=24)
    params = SplitParams(method="boundary", grow_px=6)
    seams = (37, 80)
    right, down, _, _ = split_links(mask, probs[..., 0], probs[..., 1], params)
    strips = []
    fields = _fields(mask, probs, params, strip_rows=32, band_rows=20, seed=seed, label_seams=seams, strips=strips)
    assert _key(fields) == _key(_fields(mask, probs, params, strip_rows=mask.shape[0], band_rows=mask.shape[0]))
    severed = 0
    for lo, hi in itertools.pairwise((0, *seams, mask.shape[0])):
        _, within = _link_components(mask[lo:hi], right[lo:hi], down[lo:hi])  # the links inside the band only
        _, whole = _link_components(mask, right, down)
        inside = [(row0, s) for row0, s in strips if lo <= row0 < hi]
        assert sum(s.labels.shape[0] for _, s in inside) == hi - lo  # strips end at the seams
        for row0, s in inside:
            on = mask[row0:row0 + s.labels.shape[0]] > 0
            assert (s.labels[on] > 0).all()
            pairs = set(zip(s.labels[on].tolist(), within[row0 - lo:row0 - lo + len(on)][on].tolist(), strict=True))
            assert len(pairs) == len({a for a, _ in pairs})  # one label = one field of the band's own links
        on = mask[lo:hi] > 0
        cut = set(zip(within[on].tolist(), whole[lo:hi][on].tolist(), strict=True))
        severed += len(cut) - len({b for _, b in cut})  # pieces of a field joined only outside the band
    assert severed  # the layout has them


def test_a_pixel_left_alone_where_two_fronts_meet_joins_a_neighbour():
    """A 1-px corridor between two seeds 26 px apart, cut everywhere between them, grown 12 steps from each: the
    pixel in the middle (13 steps from both) joins the left field (first of up, left, right, down) instead of
    becoming a field of one pixel."""
    mask = np.ones((1, 27), np.uint8)
    boundary = np.full((1, 27), 0.9, np.float32)
    boundary[0, [0, 26]] = 0.1
    params = SplitParams(method="boundary", grow_px=12, seed_opening_px=0)
    right, _, _, _ = split_links(mask, np.full((1, 27), 0.9, np.float32), boundary, params)
    assert right[0].tolist() == [True] * 13 + [False] + [True] * 12 + [False]


@pytest.mark.parametrize("seed", [0, 1])
def test_no_one_pixel_fields_where_fronts_meet_and_the_same_for_any_strip_height(seed):
    """Cropland cut all over but for many small seed squares: where the fronts of two seeds meet diagonally just
    past grow_px, pixels are left alone (no unreached 4-neighbour); each joins a neighbour's field, none becomes a
    field of one pixel, and the fields are the same whatever the strip height."""
    from engine.split import _grow

    rng = np.random.default_rng(seed)
    h, w = 90, 110
    mask = np.ones((h, w), np.uint8)
    boundary = np.full((h, w), 0.9, np.float32)
    for y, x in rng.integers(0, (h - 3, w - 3), size=(120, 2)):
        boundary[y:y + 3, x:x + 3] = 0.1
    probs = np.stack([np.full((h, w), 0.9, np.float32), boundary], axis=-1)
    params = SplitParams(method="boundary", grow_px=5, seed_opening_px=1)
    _, _, dist, _ = _grow(mask, probs[..., 0], boundary, params)
    assert (dist == params.grow_px + 1).sum() > 5  # the pixels the rule is for are there
    whole = _fields(mask, probs, params, strip_rows=h, band_rows=h)
    assert sum(f.polygon.area for f in whole) == mask.sum()
    assert min(f.pixels for f in whole) > 1
    for strip_rows in (7, 13, 40):
        assert _key(_fields(mask, probs, params, strip_rows=strip_rows, band_rows=17, seed=seed)) == _key(whole)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_counter_fed_strips_counts_the_whole_masks_regions(seed):
    """The report's `regions` (4-connected cropland regions, what --split none gives) from strips of random heights
    equal the whole mask's count, with regions that wind through many strips."""
    import cv2

    from engine.split import RegionCounter

    rng = np.random.default_rng(seed)
    mask = (rng.random((120, 80)) < 0.55).astype(np.uint8)
    counter, row = RegionCounter(), 0
    while row < mask.shape[0]:
        n = int(rng.integers(1, 12))
        counter.add(mask[row:row + n])
        row += n
    assert counter.regions == cv2.connectedComponents(mask, connectivity=4)[0] - 1 > 20
