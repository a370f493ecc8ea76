"""Training loop of the multi-head (extent + boundary) model on catalogue scenes, with whole-scene validation.

Files in ``out``: ``last.pt`` (every epoch; ``--resume`` continues from it with the same crops), ``best.pt`` (best
validation score), ``metrics.csv`` (one row per epoch), ``train.log`` (every log line), ``summary.json``.

Validation predicts each validation scene whole with the engine's tiling and blending (:class:`engine.tiling.
TileGrid`, :func:`engine.blend.tile_weights`, Hann taper across the overlap) and scores per data set: extent IoU /
F1 / ratio error (against the all-field baseline), boundary F1 (pixels, where boundaries are labelled) and object
F1 at IoU >= 0.5 (fields = connected regions of extent >= 0.5 and boundary < 0.5, against the reference instances).
The score that picks ``best.pt`` is the mean over sets of extent F1, plus boundary F1 where labelled, halved.
Validation runs every ``val_every`` epochs and after the last one (whole scenes are slow on a CPU).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.metadata import ModelMetadata

from .datasets.scene import IGNORE, Scene
from .errors import CheckpointError, TrainingError
from .loop import Interrupted, resolve_device, seed_everything
from .models.registry import SIZE_MULTIPLE
from .run import end_epoch, make_optimiser, new_state, resume, save_epoch

KIND = "multihead"
DEFAULT_STRETCH = "percentile"


@dataclass
class MultiHeadConfig:
    """Options of one multi-head training run (JSON-serialisable; stored in the checkpoint's ``args``).

    Units: ``tile``/``overlap`` px; ``gsd_m`` metres per pixel of the training grid (None: each set's native);
    ``gsd_range_m`` the range the engine may feed without resampling (metadata).
    """

    arch: str
    out: str
    datasets: list[str] = field(default_factory=lambda: ["contest", "gf2", "naip", "nsw", "denmark"])
    gsd_m: float | None = None
    gsd_range_m: list[float] = field(default_factory=lambda: [1.0, 10.0])
    epochs: int = 20
    steps_per_epoch: int = 50
    max_steps: int | None = None
    tile: int = 256
    overlap: int = 32
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    width: int | None = None
    decoder_channels: list[int] | None = None
    distance: bool = False
    boundary_weight: float = 1.0
    boundary_pos_weight: float = 5.0
    distance_weight: float = 1.0
    scale_min: float = 0.7
    scale_max: float = 1.4
    augment: float = 1.0
    set_shares: dict[str, float] = field(default_factory=dict)
    limit: int | None = None
    val_every: int = 1
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    resume: str | None = None
    name: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    kind: str = KIND


def torch_heads(model: torch.nn.Module, mean: list[float], std: list[float], device: torch.device):
    """A tile runner for :func:`predict_scene`: (N, 3, t, t) float32 images on 0..1 -> [extent, boundary(,
    distance)] probabilities, each (N, 2 or 1, t, t) float32, from a :class:`~training.multihead.MultiHeadNet`."""
    from .multihead import ExportHeads

    heads = ExportHeads(model).eval()
    m = np.asarray(mean, np.float32)[:, None, None]
    sd = np.asarray(std, np.float32)[:, None, None]

    def run(xb: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray((xb - m) / sd, np.float32)).to(device)
            return [o.float().cpu().numpy() for o in heads(x)]

    return run


def predict_scene(run, image: np.ndarray, tile: int, overlap: int, batch: int = 4) -> dict[str, np.ndarray]:
    """Whole-scene head probabilities with the engine's tile grid and Hann blending.

    ``run``: tile runner, (N, 3, t, t) float32 on 0..1 -> list of (N, C, t, t) head outputs (see
    :func:`torch_heads`, :class:`training.multihead_eval.OnnxHeads`); the last channel of each is kept.
    ``image``: (bands, H, W) float32 on 0..1. Returns {"extent", "boundary"[, "distance"]}: (H, W) float32
    (probability of field / of edge / distance 0..1).
    """
    from engine.blend import tile_weights
    from engine.tiling import TileGrid

    _, h, w = image.shape
    grid = TileGrid(h, w, tile, overlap)
    ph = max(grid.row_origins[-1] + tile, h)
    pw = max(grid.col_origins[-1] + tile, w)
    x = np.pad(image, ((0, 0), (0, ph - h), (0, pw - w)),
               mode="reflect" if ph - h < h and pw - w < w else "edge")
    acc: list[np.ndarray] | None = None
    wsum = np.zeros((ph, pw), np.float32)
    tiles = list(grid.tiles())
    n_rows, n_cols = len(grid.row_origins), len(grid.col_origins)
    for k in range(0, len(tiles), batch):
        chunk = tiles[k:k + batch]
        outs = run(np.stack([x[:, r:r + tile, c:c + tile] for _, _, r, c in chunk]))
        if acc is None:
            acc = [np.zeros((ph, pw), np.float32) for _ in outs]
        for n, (i, j, r, c) in enumerate(chunk):
            wt = tile_weights(tile, overlap, i > 0, i < n_rows - 1, j > 0, j < n_cols - 1)
            wsum[r:r + tile, c:c + tile] += wt
            for a, o in zip(acc, outs, strict=True):
                a[r:r + tile, c:c + tile] += wt * o[n, -1]
    names = ("extent", "boundary", "distance")
    return {names[i]: (a / np.maximum(wsum, 1e-6))[:h, :w] for i, a in enumerate(acc)}


def fields_from_heads(extent: np.ndarray, boundary: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(H, W) int32 field ids: 4-connected regions of extent >= threshold cut where boundary >= threshold."""
    import cv2

    core = ((extent >= threshold) & (boundary < threshold)).astype(np.uint8)
    return cv2.connectedComponents(core, connectivity=4)[1].astype(np.int32)


def evaluate_scenes(run, scenes: list[Scene], tile: int, overlap: int) -> dict[str, dict[str, float]]:
    """Validation metrics per data set (pooled over its scenes) of a tile runner (see :func:`predict_scene`);
    the metrics are described in the module docstring."""
    return score_predictions((predict_scene(run, s.image, tile, overlap) for s in scenes), scenes)


def score_predictions(predictions, scenes: list[Scene]) -> dict[str, dict[str, float]]:
    """The metrics of :func:`evaluate_scenes` from whole-scene head probabilities already predicted:
    ``predictions`` yields, in the order of ``scenes``, {"extent", "boundary"}: (H, W) float arrays on 0..1 (as
    :func:`predict_scene` returns them; e.g. the fusion of several models' maps)."""
    from engine.metrics import metrics_from_counts, object_metrics, pixel_metrics

    per: dict[str, dict[str, Any]] = {}
    for s, p in zip(scenes, predictions, strict=True):
        d = per.setdefault(s.dataset, {"ext": dict.fromkeys(("tp", "fp", "fn", "tn"), 0),
                                       "bnd": dict.fromkeys(("tp", "fp", "fn", "tn"), 0),
                                       "has_bnd": False, "obj": []})
        valid = s.extent != IGNORE
        m = pixel_metrics(p["extent"] >= 0.5, s.extent == 1, valid)
        for k in d["ext"]:
            d["ext"][k] += int(m[k])
        if s.has_boundary:
            d["has_bnd"] = True
            bv = s.boundary != IGNORE
            mb = pixel_metrics(p["boundary"] >= 0.5, s.boundary == 1, bv)
            for k in d["bnd"]:
                d["bnd"][k] += int(mb[k])
        if s.instances is not None:
            om = object_metrics(fields_from_heads(p["extent"], p["boundary"]), s.instances, 0.5, valid)
            d["obj"].append((om["tp"], om["n_pred"], om["n_ref"]))
    out = {}
    for name, d in per.items():
        e = metrics_from_counts(d["ext"])
        row = {"iou": e["iou"], "f1": e["f1"], "ratio_error": e["ratio_error"], "baseline_iou": e["ratio_ref"]}
        if d["has_bnd"]:
            row["boundary_f1"] = metrics_from_counts(d["bnd"])["f1"]
        if d["obj"]:
            tp, npred, nref = (sum(v[i] for v in d["obj"]) for i in range(3))
            prec, rec = tp / max(npred, 1), tp / max(nref, 1)
            row.update({"object_precision": prec, "object_recall": rec,
                        "object_f1": 2 * prec * rec / max(prec + rec, 1e-12)})
        out[name] = {k: round(float(v), 5) for k, v in row.items()}
    return out


def score(metrics: dict[str, dict[str, float]]) -> float:
    """Checkpoint choice: mean over sets of (extent F1 + boundary F1) / 2, extent F1 alone without edges."""
    vals = [(m["f1"] + m["boundary_f1"]) / 2 if "boundary_f1" in m else m["f1"] for m in metrics.values()]
    return float(np.mean(vals)) if vals else -math.inf


def build_metadata(cfg: MultiHeadConfig, train: list[Scene], metrics: dict[str, Any]) -> ModelMetadata:
    """The metadata a model of ``cfg`` carries; the v2 output contract goes under ``extra`` (see export)."""
    gsds = sorted({s.gsd_m for s in train})
    return ModelMetadata(
        name=cfg.name or Path(cfg.out).name, architecture=cfg.arch, output="probabilities",
        input_bands=[1, 2, 3], band_names=["red", "green", "blue"], input_scale=255.0,
        mean=list(cfg.mean), std=list(cfg.std), classes=["other", "cropland"], cropland_class=1,
        tile_size=cfg.tile, overlap=cfg.overlap, resolution_m=cfg.gsd_m or float(np.median(gsds)),
        training_data=sorted({f"{s.dataset}:{s.name}" for s in train}), metrics=metrics,
        extra={"kind": KIND, "outputs": ["extent", "boundary"] + (["distance"] if cfg.distance else []),
               "stretch": DEFAULT_STRETCH, "resolution_range_m": list(cfg.gsd_range_m),
               "training_gsds_m": gsds, "datasets": list(cfg.datasets), "width": cfg.width,
               "decoder_channels": cfg.decoder_channels, "size_multiple": SIZE_MULTIPLE})


def model_from_multihead_checkpoint(ckpt: dict[str, Any]):
    """Rebuild the :class:`~training.multihead.MultiHeadNet` of a checkpoint with its weights."""
    from .multihead import MultiHeadNet

    args = ckpt["args"]
    if args.get("kind") != KIND:
        raise CheckpointError("this checkpoint is not a multi-head (extent + boundary) model; use "
                              "`python -m training export` for single-output models.")
    model = MultiHeadNet(args["arch"], 3, bool(args.get("distance")), args.get("width"),
                         args.get("decoder_channels"))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def fit_multihead(cfg: MultiHeadConfig, train: list[Scene], val: list[Scene], log=print) -> dict[str, Any]:
    """Train; returns the summary (also written to ``summary.json``). Needs ``cfg.mean``/``cfg.std`` set.

    Raises :class:`TrainingError` for bad options, :class:`Interrupted` on Ctrl-C (``last.pt`` kept).
    """
    from .multihead import MultiHeadNet
    from .multihead_data import MultiHeadSampler
    from .multihead_losses import MultiHeadLoss

    if cfg.tile % SIZE_MULTIPLE:
        raise TrainingError(f"tile must be a multiple of {SIZE_MULTIPLE}, got {cfg.tile}.")
    if not train:
        raise TrainingError("no training scene: check the data sets and their splits.")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / "train.log", "a")  # noqa: SIM115 - open for the whole run

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        logfile.write(line + "\n")
        logfile.flush()
        log(msg)

    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    model = MultiHeadNet(cfg.arch, 3, cfg.distance, cfg.width, cfg.decoder_channels).to(device)
    optimiser = make_optimiser(model, cfg, device)
    total = optimiser.total
    loss_fn = MultiHeadLoss(cfg.boundary_weight, cfg.boundary_pos_weight, cfg.distance_weight)
    state = new_state()
    if cfg.resume:
        keys = ("arch", "epochs", "steps_per_epoch", "schedule", "distance", "kind", "datasets", "gsd_m")
        resume(cfg.resume, model, optimiser, state, {key: getattr(cfg, key) for key in keys}, say)
    sampler = MultiHeadSampler(train, cfg.tile, cfg.mean, cfg.std, (cfg.scale_min, cfg.scale_max), cfg.augment,
                               cfg.seed, cfg.set_shares)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"{cfg.arch} (extent + boundary{' + distance' if cfg.distance else ''}): {n_params / 1e6:.2f} M "
        f"parameters on {device}; {len(train)} training / {len(val)} validation scenes from "
        f"{', '.join(sorted({s.dataset for s in train}))}; {total} steps of {cfg.batch_size} x {cfg.tile} px")
    t0 = time.time()
    try:
        while state["epoch"] < cfg.epochs and state["step"] < total:
            model.train()
            terms: dict[str, list[float]] = {}
            for _ in range(min(cfg.steps_per_epoch, total - state["step"])):
                xb, tb = sampler.batch(state["step"], cfg.batch_size)
                x = torch.from_numpy(xb).to(device)
                targets = {k: torch.from_numpy(v).to(device) for k, v in tb.items()}
                with torch.autocast(device.type, dtype=torch.float16, enabled=optimiser.use_amp):
                    scores = model(x)
                loss, parts = loss_fn(scores, targets)
                optimiser.step(loss)
                state["step"] += 1
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    terms.setdefault(k, []).append(v)
            state["epoch"] += 1
            row: dict[str, Any] = {"epoch": state["epoch"], "step": state["step"],
                                   **{f"train_{k}": round(float(np.mean(v)), 5) for k, v in terms.items()},
                                   "lr": optimiser.sched.get_last_lr()[0]}
            last = state["epoch"] >= cfg.epochs or state["step"] >= total
            validate = bool(val) and (last or state["epoch"] % max(cfg.val_every, 1) == 0)
            metrics = (evaluate_scenes(torch_heads(model, cfg.mean, cfg.std, device), val, cfg.tile, cfg.overlap)
                       if validate else {})
            row["seconds"] = round(time.time() - t0, 1)
            for ds, m in metrics.items():
                row.update({f"val_{ds}_{k}": v for k, v in m.items()})
            if validate or not val:
                sc = score(metrics) if metrics else float(state["epoch"])
                row["val_score"] = round(sc, 5)
            else:
                sc = -math.inf  # not validated this epoch: cannot become best.pt
            state["history"].append(row)
            improved = end_epoch(state, sc)
            save_epoch(out, model, optimiser, state, cfg,
                       build_metadata(cfg, train, {"validation": metrics, "score": row.get("val_score")}), improved)
            _write_csv(out / "metrics.csv", state["history"])
            shown = f"score {sc:.4f}" if "val_score" in row else "not validated"
            say(f"epoch {state['epoch']} step {state['step']} loss {row['train_loss']:.4f} {shown} "
                f"({row['seconds']:.0f} s)")
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted at step {state['step']}; last good checkpoint: {out / 'last.pt'}") from None
    finally:
        logfile.close()
    summary = {"arch": cfg.arch, "best_epoch": state["best_epoch"], "best_score": state["best_score"],
               "epochs_done": state["epoch"], "steps": state["step"], "parameters": n_params,
               "seconds": round(time.time() - t0, 1),
               "validation": state["history"][-1] if state["history"] else {}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
