"""Training scores what ships: validation runs the engine's reader, tiling, blending, fusion and mask rules."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from helpers import field_scene, green_threshold_onnx, write_raster

torch = pytest.importorskip("torch")


def logits_net(kernel: int = 7):
    """The network inside :func:`helpers.green_threshold_onnx` (same weights), returning logits as training does."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, kernel, padding=kernel // 2, bias=True)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                self.conv.weight[1, 1] = 20.0 / kernel**2
                self.conv.bias[1] = -10.0

        def forward(self, x):
            return self.conv(x)

    return Net().eval()


def test_validation_prediction_is_the_engines(tmp_path):
    """A 7 x 7 receptive field with zero padding makes every tile edge visible: only the same tiles, padding and
    Hann blending as the engine give the engine's probabilities, nodata included."""
    from engine.api import ExtractOptions, extract_array, load_model
    from training.predict import predict_probabilities

    image, _ = field_scene(150, 170, seed=1)
    valid = np.ones(image.shape[1:], bool)
    valid[40:60, 100:130] = False
    model = green_threshold_onnx(tmp_path / "blur.onnx", kernel=7)
    options = ExtractOptions(tile_size=64, overlap=16, opening_px=0, stretch="none", device="cpu", threads=1)
    _, engine_prob, _ = extract_array(image, load_model(model, options), valid_mask=valid, options=options)
    prob = predict_probabilities(logits_net(), image.astype(np.float32) / 255, [0.0] * 3, [1.0] * 3, 64, 16,
                                 valid=valid)
    assert np.isnan(prob[~valid]).all() and np.isnan(engine_prob[~valid]).all()
    np.testing.assert_allclose(prob[valid], engine_prob[valid], atol=2e-5)
    # one pass over the whole image (no tiles) differs at the seams, so the comparison above can tell tilings apart
    assert np.abs(np.nan_to_num(prob) - _plain_mean(image, valid)).max() > 1e-3


def _plain_mean(image, valid):
    net = logits_net()
    x = torch.from_numpy(image.astype(np.float32)[None] / 255 * valid)
    return torch.softmax(net(x), 1)[0, 1].detach().numpy()


def test_training_reads_images_and_labels_as_the_engine_does(tmp_path):
    from training.data import IGNORE, load_pairs

    image, truth = field_scene(64, 64)
    img = image.astype(np.float32)
    img[:, 0:4, 0:4] = np.nan  # NaN imagery: invalid, as in engine.io
    write_raster(tmp_path / "a.tif", img)
    label = np.where(truth == 1, 255, 0).astype(np.uint8)  # a 0/255 label: 255 is cropland
    label[60:, 60:] = 7  # marked as the file's nodata: not a value, nothing to learn
    write_raster(tmp_path / "a_label.tif", label, nodata=7)
    with rasterio.open(tmp_path / "a_label.tif") as ds:
        assert ds.nodata == 7
    (r,) = load_pairs([(tmp_path / "a.tif", tmp_path / "a_label.tif")], input_scale=255.0)
    assert r.valid is not None and not r.valid[0:4, 0:4].any() and r.valid[4:, 4:].all()
    assert np.isfinite(r.image).all()
    assert (r.label[0:4, 0:4] == IGNORE).all() and (r.label[60:, 60:] == IGNORE).all()
    inside = np.ones(truth.shape, bool)
    inside[0:4, 0:4] = inside[60:, 60:] = False
    np.testing.assert_array_equal(r.label[inside], truth[inside])


def test_training_fuses_and_thresholds_as_the_engine_does():
    from engine.ensemble import fuse as engine_fuse
    from engine.masks import cropland
    from training.ensemble import fuse

    a = np.array([[0.9, 0.2, 0.6]], np.float32)
    b = np.array([[0.4, 0.1, 0.5]], np.float32)
    vote = fuse([a, b], fusion="vote", threshold=0.5)
    np.testing.assert_array_equal(vote, engine_fuse([a, b], [1.0, 1.0], "vote", [0.5, 0.5]))
    # one of two members says cropland: a tie, which is not a majority (the engine's rule, strictly above 0.5)
    np.testing.assert_array_equal(vote, [[0.5, 0.0, 0.5]])
    assert not cropland(vote, 0.5).any()
    np.testing.assert_allclose(fuse([a, b], [3.0, 1.0]), (3 * a + b) / 4)
    with pytest.raises(ValueError, match="fusion"):
        fuse([a, b], fusion="max")


@pytest.mark.shared
def test_shipped_ensemble_scores_on_a_real_contest_tile():
    """The shipped ensemble, run as a user runs it, on a real labelled contest tile (2 m GF-2 RGB, 500 x 600 px).

    The tiles are its training data, so this checks that what ships reproduces the fit (weights, normalisation,
    tiling, fusion and threshold all working), not how well it generalises: that is the leave-one-tile-out table in
    docs/BENCHMARKS.md (ensemble IoU 0.864). Measured when written: IoU 0.865, everything-is-cropland 0.747.
    """
    from helpers import shared_path

    from engine.api import ExtractOptions, extract_array, load_model
    from engine.metrics import pixel_metrics
    from training.data import IGNORE, read_label

    folder = shared_path("mathorcup2020_cropland", "train")
    ref = read_label(folder / "labels" / "Data4_reference.tif")
    with rasterio.open(folder / "images" / "Data4.tif") as ds:
        image = ds.read()
    options = ExtractOptions(device="cpu", threads=2, pixel_size_m=2.0)
    result, _, mask = extract_array(image, load_model(None, options), options=options)
    valid = ref != IGNORE
    iou = pixel_metrics(mask == 1, ref == 1, valid)["iou"]
    everything = pixel_metrics(np.ones(ref.shape, bool), ref == 1, valid)["iou"]
    assert iou >= 0.80 and iou > everything + 0.05, (iou, everything)
    assert result.cropland_pixels == int((mask == 1).sum()) and result.cropland_area_m2 == 4.0 * result.cropland_pixels
