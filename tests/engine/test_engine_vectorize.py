"""Vectorisation and statistics stages on synthetic and real masks."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from helpers import field_scene, shared_path, write_raster
from rasterio.crs import CRS

from engine.pipeline import fields_from_mask
from engine.stats import mask_file_statistics
from engine.vectorize import StripVectorizer, simplify_fields, to_map

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)


def truth_fields(truth: np.ndarray) -> list[int]:
    """Pixel counts of the 4-connected components of a truth mask, sorted."""
    import cv2

    _n, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=4)
    return sorted(np.bincount(labels.ravel())[1:].tolist())


def fields_in_strips(mask: np.ndarray, rows: int) -> list:
    """The mask's fields, vectorised in strips of ``rows`` rows."""
    vec = StripVectorizer(mask.shape[1])
    for r in range(0, mask.shape[0], rows):
        vec.add(r, mask[r:r + rows])
    return vec.fields()


def test_synthetic_fields_exact_count_and_areas(tmp_path):
    _, truth = field_scene()
    mask = truth.copy()
    mask[:20, :30] = 255  # a nodata corner, cutting into field 1
    path = write_raster(tmp_path / "mask.tif", mask, T2M, UTM, nodata=255)
    records = fields_from_mask(path)
    expected = truth_fields(np.where(mask == 1, 1, 0))
    assert len(records) == len(expected) == 6
    got = sorted(r.area_m2 for r in records)
    for g, e in zip(got, sorted(4.0 * px for px in expected), strict=True):
        assert g == pytest.approx(e, rel=0.01)
    assert all(r.geometry.is_valid for r in records)
    assert sum(len(r.geometry.interiors) for r in records) == 1  # the 6x6 hole
    stats = mask_file_statistics(path)
    assert stats.valid_pixels == mask.size - 20 * 30
    assert stats.cropland_pixels == int((mask == 1).sum())
    assert stats.cropland_area_m2 == pytest.approx(4.0 * (mask == 1).sum())
    assert stats.cropland_ratio == pytest.approx((mask == 1).sum() / (mask != 255).sum())


def test_min_area_and_hole_filling(tmp_path):
    _, truth = field_scene()
    path = write_raster(tmp_path / "mask.tif", truth, T2M, UTM)
    all_fields = fields_from_mask(path)
    assert len(all_fields) == 6
    cleaned = fields_from_mask(path, min_area_m2=100, max_hole_m2=200)  # speck is 64 m², hole 144 m²
    assert len(cleaned) == 5
    assert sum(len(r.geometry.interiors) for r in cleaned) == 0
    assert sum(r.area_m2 for r in cleaned) == pytest.approx(4.0 * truth.sum() - 64 + 144)
    kept_hole = fields_from_mask(path, max_hole_m2=100)
    assert sum(len(r.geometry.interiors) for r in kept_hole) == 1


def test_hole_holding_nodata_is_not_filled(tmp_path):
    _, truth = field_scene()
    mask = truth.copy()
    mask[130:136, 40:46] = 255  # the hole is nodata
    path = write_raster(tmp_path / "mask.tif", mask, T2M, UTM, nodata=255)
    records = fields_from_mask(path, max_hole_m2=1000)
    assert sum(len(r.geometry.interiors) for r in records) == 1


def test_strip_seams_leave_no_trace():
    """Vectorising in strips of 7 rows gives the same fields as one strip."""
    _, truth = field_scene()
    whole, strips = fields_in_strips(truth, truth.shape[0]), fields_in_strips(truth, 7)
    assert len(whole) == len(strips) == len(truth_fields(truth))
    for a, b in zip(whole, strips, strict=True):
        assert a.polygon.equals(b.polygon)
        assert a.pixels == b.pixels


def test_simplification_keeps_valid_nonoverlapping_geometry():
    rng = np.random.default_rng(3)
    mask = np.zeros((120, 160), np.uint8)
    for _ in range(40):  # ragged blobs separated by thin gaps
        r, c = rng.integers(0, 110), rng.integers(0, 150)
        mask[r:r + rng.integers(3, 30), c:c + rng.integers(3, 30)] = 1
    mask[:, ::13] = 0
    mask[::11, :] = 0
    vec = StripVectorizer(mask.shape[1])
    vec.add(0, mask)
    polys = [f.polygon for f in vec.fields()]
    simple = simplify_fields(polys, 2.5, mask.shape[1], mask.shape[0])
    assert len(simple) == len(polys)
    assert all(p.is_valid and not p.is_empty for p in simple)
    assert sum(shapely.get_num_coordinates(s) for s in simple) < sum(shapely.get_num_coordinates(p) for p in polys)
    tree = shapely.STRtree(simple)
    left, right = tree.query(simple, predicate="intersects")
    overlap = sum(simple[i].intersection(simple[j]).area for i, j in zip(left, right, strict=True) if i < j)
    assert overlap == 0


def _lpis(base):
    import pyogrio.raw

    meta, _, geom, data = pyogrio.raw.read(base / "marker2016_small.shp", encoding="latin1")
    parcels = shapely.from_wkb(geom)
    gb_ha = np.asarray(data[list(meta["fields"]).index("GB")], float)
    # 78 parcels are clipped by the tile edge (GB is then the whole field's area): whole ones keep their area.
    whole = np.abs(shapely.area(parcels) / 1e4 - gb_ha) < 0.02 * gb_ha
    return parcels, gb_ha, whole


@pytest.mark.shared
def test_denmark_parcel_areas_match_lpis_gb():
    """Each LPIS parcel wholly inside the tile, vectorised from the 10 m instance raster, has its declared area
    (GB, ha) within 2 %, or within the rasterisation error (half a 10 m pixel along its outline) for small ones;
    all of them together within 0.5 %."""
    import rasterio

    base = shared_path("denmark_lpis2016_s2")
    parcels, gb_ha, whole = _lpis(base)
    assert whole.sum() >= 190
    with rasterio.open(base / "derived" / "field_instances.tif") as ds:
        instances, transform = ds.read(1), ds.transform
    ours, declared, strict = 0.0, 0.0, 0
    for k in np.flatnonzero(whole) + 1:
        vec = StripVectorizer(instances.shape[1])
        for r in range(0, instances.shape[0], 100):  # strips, so seams are crossed too
            vec.add(r, instances[r:r + 100] == k)
        area = sum(to_map(f.polygon, transform).area for f in vec.fields())
        gb = gb_ha[k - 1] * 1e4
        assert abs(area - gb) <= max(0.02 * gb, 0.5 * 10 * parcels[k - 1].length), (k, area, gb)
        strict += abs(area - gb) <= 0.02 * gb
        ours, declared = ours + area, declared + gb
    assert ours == pytest.approx(declared, rel=0.005)
    assert strict >= 0.9 * whole.sum()


@pytest.mark.shared
def test_denmark_mask_vectorised_area():
    """The merged LPIS mask vectorised: total field area equals the parcels' area within 0.5 %, polygons are
    valid and lie where the parcels are."""
    base = shared_path("denmark_lpis2016_s2")
    parcels, _, _ = _lpis(base)
    records = fields_from_mask(base / "derived" / "fields_mask.tif")
    assert all(r.geometry.is_valid for r in records)
    union = shapely.union_all(parcels)
    assert sum(r.area_m2 for r in records) == pytest.approx(union.area, rel=0.005)
    mismatch = shapely.union_all([r.geometry for r in records]).symmetric_difference(union).area
    assert mismatch < 0.5 * 10 * union.length  # outlines differ by less than half a pixel on average


CONTEST_RATIOS = {"Data1": 0.8329, "Data2": 0.8423, "Data4": 0.7468, "Data5": 0.5534, "Data7": 0.6802,
                  "Data8": 0.8389}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(CONTEST_RATIOS))
def test_contest_label_ratios_and_areas(name):
    label = shared_path("mathorcup2020_cropland", "train", "labels", f"{name}_reference.tif")
    stats = mask_file_statistics(label, pixel_size_m=2.0)
    assert round(stats.cropland_ratio, 4) == CONTEST_RATIOS[name]
    assert stats.valid_pixels == 600 * 500
    assert stats.area_method == "pixel_size"
    assert stats.valid_area_m2 == pytest.approx(600 * 500 * 4.0)
    assert stats.cropland_area_m2 == pytest.approx(stats.cropland_pixels * 4.0)
    no_size = mask_file_statistics(label)
    assert no_size.cropland_area_m2 is None and no_size.cropland_ratio == stats.cropland_ratio


def test_geographic_areas_match_utm(tmp_path):
    """The same mask in EPSG:4326 and reprojected to UTM gives the same areas within 0.5 %."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _, truth = field_scene(400, 600)
    geo_transform = Affine(0.0001, 0, 15.0, 0, -0.0001, 52.0)  # ~7 x 11 m pixels at 52° N
    geo = write_raster(tmp_path / "geo.tif", truth, geo_transform, CRS.from_epsg(4326))
    utm_crs = CRS.from_epsg(32633)
    transform, w, h = calculate_default_transform(CRS.from_epsg(4326), utm_crs, 600, 400,
                                                  *(15.0, 52.0 - 0.04, 15.06, 52.0), resolution=2.0)
    out = np.zeros((h, w), np.uint8)
    reproject(truth, out, src_transform=geo_transform, src_crs=CRS.from_epsg(4326), dst_transform=transform,
              dst_crs=utm_crs, resampling=Resampling.nearest, dst_nodata=255, src_nodata=None)
    utm = write_raster(tmp_path / "utm.tif", out, transform, utm_crs, nodata=255)
    g, u = mask_file_statistics(geo), mask_file_statistics(utm)
    assert g.area_method == "geodesic" and u.area_method == "projected"
    assert g.cropland_area_m2 == pytest.approx(u.cropland_area_m2, rel=0.005)
    assert g.valid_area_m2 == pytest.approx(u.valid_area_m2, rel=0.005)
    gf, uf = fields_from_mask(geo), fields_from_mask(utm)
    assert len(gf) == len(uf)
    assert sorted(r.area_m2 for r in gf)[-1] == pytest.approx(sorted(r.area_m2 for r in uf)[-1], rel=0.005)


def test_strip_seams_on_a_ragged_mask_spanning_every_strip():
    """A noisy mask (one field spanning all strips, with holes, notches and corner-only contacts) vectorised in
    strips of 5 rows gives exactly the polygons of one whole strip, valid and without extra seam vertices."""
    rng = np.random.default_rng(7)
    mask = (rng.random((240, 180)) < 0.8).astype(np.uint8)  # speckled: many holes and pinches
    mask[:, 60:62] = 1  # a spine, so that one field spans every strip
    mask[100:140, 20:90] = 0  # a pond, then an island in it
    mask[110:130, 40:60] = 1

    whole, strips = fields_in_strips(mask, mask.shape[0]), fields_in_strips(mask, 5)
    assert len(whole) == len(strips) == len(truth_fields(mask))
    assert sum(f.pixels for f in strips) == int(mask.sum())
    big = max(strips, key=lambda f: f.pixels)
    assert big.polygon.bounds[1] == 0 and big.polygon.bounds[3] == mask.shape[0]
    assert len(big.polygon.interiors) > 100
    for a, b in zip(sorted(whole, key=lambda f: f.pixels), sorted(strips, key=lambda f: f.pixels), strict=True):
        assert b.polygon.is_valid
        assert b.polygon.area == b.pixels
        assert a.polygon.equals(b.polygon)
        assert shapely.get_num_coordinates(a.polygon) == shapely.get_num_coordinates(b.polygon)


@pytest.mark.parametrize("seed", range(6))
def test_strips_of_any_height_give_the_whole_mask_polygons(seed):
    """Random masks (pinches, holes touching shells, fields touching only at corners across a seam) cut into
    strips of 1, 2, 3 and 7 rows give exactly the polygons of the unbroken mask, with the same vertices."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = rng.integers(5, 60, size=2)
        mask = (rng.random((h, w)) < rng.uniform(0.3, 0.9)).astype(np.uint8)
        whole = sorted(fields_in_strips(mask, h), key=lambda f: (f.pixels, f.polygon.bounds))
        for rows in (1, 2, 3, 7):
            got = sorted(fields_in_strips(mask, rows), key=lambda f: (f.pixels, f.polygon.bounds))
            assert len(got) == len(whole)
            for a, b in zip(whole, got, strict=True):
                assert b.polygon.is_valid and a.pixels == b.pixels
                assert a.polygon.equals(b.polygon)
                assert shapely.get_num_coordinates(a.polygon) == shapely.get_num_coordinates(b.polygon)


def test_vectorizer_holds_only_fields_still_open():
    """Fields are handed over as soon as no later strip can touch them, so what the vectorizer holds does not
    grow with the raster's height: the same at 160 and at 1,600 rows of fields."""
    def most_held(rows: int) -> tuple[int, int]:
        mask = np.zeros((rows, 120), np.uint8)
        for r in range(0, rows, 20):
            for c in range(0, 120, 30):
                mask[r + 2:r + 17, c + 2:c + 27] = 1
                mask[r + 6:r + 9, c + 8:c + 11] = 0  # a hole in each
        vec, most, count = StripVectorizer(mask.shape[1]), 0, 0
        for r in range(0, rows, 16):
            vec.add(r, mask[r:r + 16])
            most = max(most, vec.held_vertices)
            count += len(vec.pop_finished())
        return most, count + len(vec.fields())

    small, large = most_held(160), most_held(1600)
    assert small[1] == 8 * 4 and large[1] == 80 * 4
    assert large[0] == small[0] > 0


def test_geos_fallback_merges_the_same(monkeypatch):
    """Should the stitched rings ever not form one shell, GEOS's coverage union merges the fragments instead:
    it gives the same polygons."""
    import engine.vectorize as vectorize

    rng = np.random.default_rng(11)
    mask = (rng.random((60, 50)) < 0.75).astype(np.uint8)
    stitched = sorted(fields_in_strips(mask, 4), key=lambda f: (f.pixels, f.polygon.bounds))
    monkeypatch.setattr(vectorize, "stitch_many", lambda fields, _seams: [None] * len(fields))
    unioned = sorted(fields_in_strips(mask, 4), key=lambda f: (f.pixels, f.polygon.bounds))
    assert len(unioned) == len(stitched) and any(len(f.polygon.interiors) for f in stitched)
    for a, b in zip(stitched, unioned, strict=True):
        assert b.polygon.is_valid and a.polygon.equals(b.polygon)


def test_fields_whose_boxes_share_their_top_left_corner_come_in_one_order(tmp_path):
    """An L-shaped field around a square one: both boxes start at (0, 0); the output order must not depend on
    the order they were traced in (a run in row bands finishes fields in another order than a single run)."""
    from engine.spool import FieldSpool
    from engine.vectorize import order_keys

    square = shapely.box(0, 0, 2, 1)  # row 0, columns 0-1
    ell = shapely.Polygon([(2, 0), (5, 0), (5, 2), (1, 2), (1, 4), (0, 4), (0, 1), (2, 1)])  # around it
    assert order_keys(np.array([square, ell], dtype=object))[:, :2].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    orders = []
    for fields in ([square, ell], [ell, square]):
        spool = FieldSpool(tmp_path)
        for k, poly in enumerate(fields):
            keys = order_keys(np.array([poly], dtype=object))  # one at a time, in the order given
            spool.add_many([poly.wkb], [poly.area], [poly.length], [0.5 + k], keys)
        orders.append([wkb for wkbs, _ in spool.chunks() for wkb in wkbs])
        spool.close()
    assert orders[0] == orders[1] == [square.wkb, ell.wkb]


def test_simplified_coverage_does_not_depend_on_the_order_of_the_fields():
    """GEOS simplifies a coverage differently when its polygons come in another order; the fields of a run in row
    bands come in another order than a single run's, so simplify_fields fixes one."""
    from rasterio.features import shapes

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:80, :90]
    seeds = rng.integers(0, 80, (12, 2))
    cells = np.argmin([(yy - y) ** 2 + (xx - x) ** 2 + rng.integers(0, 40, yy.shape) for y, x in seeds], axis=0)
    polys = [shapely.geometry.shape(g) for g, _ in shapes(cells.astype(np.int32), connectivity=4)]
    assert len(polys) >= 12  # touching fields with jagged shared edges
    once = simplify_fields(polys, 1.5, 90, 80)
    perm = rng.permutation(len(polys))
    again = simplify_fields([polys[k] for k in perm], 1.5, 90, 80)
    assert all(shapely.equals(once[k], again[i]) for i, k in enumerate(perm.tolist()))
    assert sum(len(p.exterior.coords) for p in once) < sum(len(p.exterior.coords) for p in polys)


def test_strips_too_wide_for_the_tracer_give_the_same_fields(monkeypatch):
    """Past engine.trace.MAX_BYTES a strip goes to GDAL's polygonize whole: the same fields as the tracer's."""
    import engine.trace

    rng = np.random.default_rng(5)
    mask = (rng.random((70, 90)) < 0.7).astype(np.uint8)
    traced = sorted(shapely.normalize(f.polygon).wkb for f in fields_in_strips(mask, 9))
    monkeypatch.setattr(engine.trace, "MAX_BYTES", 16)
    polygonized = sorted(shapely.normalize(f.polygon).wkb for f in fields_in_strips(mask, 9))
    assert polygonized == traced and len(traced) > 10
