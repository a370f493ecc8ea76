"""The architectures added for the comparison (fcn_resnet34, segnet, icnet): built, fitted a few steps, exported to
ONNX with metadata, run by the engine, independent of the tile size; and the registry's help text.

Tile size: a model whose output at a pixel depends on the whole tile (global pooling, like the squeeze-and-excitation
gates of fcn_se_resnet50) gives different results for different engine tiles. The test measures each model's
receptive field directly: the input columns with a non-zero gradient of one output pixel. It must stay the same when
the input grows (a local model) and not reach the far end of a wide input; fcn_se_resnet50 is the counter-example.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import synthetic_scene, write_raster

from training.cli import main
from training.models import ARCHITECTURES, DESCRIPTIONS, build_model

NEW = ["fcn_resnet34", "segnet", "icnet"]


def receptive_columns(name: str, width_px: int, channels: int = 4) -> tuple[int, int]:
    """First and last input column that the centre output pixel's cropland logit depends on (gradient != 0), for a
    (1, 3, 32, width_px) input, random weights (seed 0), eval mode; relative to the centre column."""
    torch.manual_seed(0)
    model = build_model(name, width=channels).eval()
    x = torch.randn(1, 3, 32, width_px, requires_grad=True)
    model(x)[0, 1, 16, width_px // 2].backward()
    cols = np.flatnonzero(x.grad.abs().sum(dim=(0, 1, 2)).numpy() > 0)
    return int(cols[0]) - width_px // 2, int(cols[-1]) - width_px // 2


@pytest.mark.parametrize("name,width_px", [("fcn_resnet34", 1024), ("segnet", 512), ("icnet", 2048)])
def test_output_does_not_depend_on_far_pixels(name, width_px):
    near = receptive_columns(name, width_px)
    far = receptive_columns(name, 2 * width_px)
    assert near == far, (near, far)  # the same field on a wider input: nothing scales with the tile
    assert near[0] > -width_px // 2 and near[1] < width_px // 2 - 1, near


def test_squeeze_excitation_model_sees_the_whole_tile():
    """The counter-example: fcn_se_resnet50's gates average the whole tile, so its field is the whole input."""
    assert receptive_columns("fcn_se_resnet50", 512, channels=8) == (-256, 255)


def test_segnet_unpooling_is_max_unpool():
    from training.models.segnet import unpool

    x = torch.randn(2, 5, 32, 64)
    pooled, idx = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(unpool(pooled, idx, x), torch.nn.functional.max_unpool2d(pooled, idx, 2, 2))


def test_paper_sized_models():
    """Width 64 = the papers' channel counts: ResNet34 encoder 64..512, VGG16 encoder 64..512, ICNet 32/32/64."""
    fcn = build_model("fcn_resnet34")
    assert [s[0].body[0].out_channels for s in fcn.stages] == [64, 128, 256, 512]
    assert [len(s) for s in fcn.stages] == [3, 4, 6, 3]
    segnet = build_model("segnet")
    assert [len(e) for e in segnet.encoders] == [2, 2, 3, 3, 3]
    assert [e[-1][0].out_channels for e in segnet.encoders] == [64, 128, 256, 512, 512]
    icnet = build_model("icnet")
    assert [c[0].out_channels for c in icnet.high] == [32, 32, 64]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(2)
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for i in (1, 2):
        image, label = synthetic_scene(rng, 96, 128)
        write_raster(root / "images" / f"t{i}.tif", image)
        write_raster(root / "labels" / f"t{i}.tif", label)
    return root


@pytest.mark.parametrize("name", NEW)
def test_tiny_fit_export_and_engine(name, scenes, tmp_path):
    import onnx

    from engine.api import extract_array
    from engine.metadata import ModelMetadata
    from engine.options import ExtractOptions
    from training.export import export_checkpoint

    out = tmp_path / "run"
    assert main(["fit", "--images", str(scenes / "images"), "--labels", str(scenes / "labels"), "--arch", name,
                 "--width", "8", "--tile", "64", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "3",
                 "--threads", "2", "--resolution-m", "2", "--out", str(out)]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["args"]["arch"] == name and np.isfinite(ckpt["history"][0]["train_loss"])
    report = export_checkpoint(out / "last.pt", tmp_path / "m.onnx", parity_image=scenes / "images" / "t1.tif")
    assert report["parity_max_abs_diff"] < 1e-4
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in proto.metadata_props}, "m.onnx")
    assert meta.architecture == name and meta.extra["width"] == 8 and meta.output == "probabilities"
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean"}, ops
    if name == "segnet":
        assert {"MaxPool", "ScatterElements"} <= ops  # pooling indices and unpooling
    if name == "icnet":
        assert {"AveragePool", "Resize"} <= ops  # downsampled branches and bilinear upsampling
    # the engine runs it at its own tile size (dynamic H, W): one 512 px tile and 64 px tiles agree closely
    image = np.clip(synthetic_scene(np.random.default_rng(3), 160, 224)[0], 0, 255).astype(np.uint8)
    opts = ExtractOptions(device="cpu", threads=2, opening_px=0)
    _, one, _ = extract_array(image, tmp_path / "m.onnx", options=ExtractOptions(**{**opts.__dict__,
                                                                                   "tile_size": 512, "overlap": 0}))
    _, many, _ = extract_array(image, tmp_path / "m.onnx", options=ExtractOptions(**{**opts.__dict__,
                                                                                    "tile_size": 96, "overlap": 32}))
    assert one.shape == (160, 224) and np.all((one >= 0) & (one <= 1))
    assert np.abs(one - many).mean() < 0.05


def test_fit_help_lists_every_architecture_with_a_description(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert set(DESCRIPTIONS) == set(ARCHITECTURES)
    for name, line in DESCRIPTIONS.items():
        assert f"  {name} " in text and line in text, name
    for arch in ("Unet", "Linknet", "FPN", "PSPNet"):
        assert f"    {arch} " in text
    assert "smp:<Arch>:<encoder>" in text
