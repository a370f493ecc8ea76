"""The training loop: one model, fixed rasters, checkpoints and per-epoch metrics.

An epoch is ``steps_per_epoch`` optimizer steps on random crops (:class:`training.augment.CropSampler`),
then a whole-raster evaluation of the validation rasters (used to pick ``best.pt`` by Dice and for early
stopping) and of the test rasters (held out in cross-validation: reported only, never used to choose
anything). Files written to ``out``: ``last.pt`` (after every epoch), ``best.pt``, ``metrics.csv``,
``curves.png``, ``summary.json`` and, for test rasters, ``pred_<name>.npy`` (float16 cropland probability of
``best.pt``).
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.masks import cropland
from engine.metadata import ModelMetadata
from engine.metrics import boundary_f1, metrics_from_counts, pixel_metrics

from .checkpoint import load_checkpoint
from .data import IGNORE, Raster
from .errors import TrainingError
from .losses import SegmentationLoss
from .models import build_model
from .models.registry import SIZE_MULTIPLE, load_weights
from .predict import predict_probabilities
from .run import end_epoch, make_optimiser, new_state, resume, save_epoch

EPOCH_METRICS = ("iou", "f1", "precision", "recall", "accuracy", "boundary_f1")


class Interrupted(TrainingError):  # noqa: N818 - a state, not a failure
    """Training was stopped with Ctrl-C; the last good checkpoint is kept."""


@dataclass
class FitConfig:
    """Options of one training run (the ``fit`` command's arguments; all JSON-serialisable).

    Units: ``tile`` and ``overlap`` in pixels, ``lr`` per step (peak of the schedule), ``scale_min/max`` are
    zoom factors applied to crops (see :mod:`training.augment`).
    """

    arch: str
    out: str
    epochs: int = 20
    steps_per_epoch: int = 50
    tile: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    device: str = "auto"
    seed: int = 0
    max_steps: int | None = None
    patience: int = 0
    width: int | None = None
    decoder_channels: list[int] | None = None
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    boundary_weight: float = 0.0
    scale_min: float = 0.5
    scale_max: float = 1.6
    augment: float = 1.0
    overlap: int = 32
    eval_batch_size: int = 4
    weights: str | None = None
    resume: str | None = None
    threads: int | None = None
    bands: list[int] | None = None
    band_names: list[str] = field(default_factory=list)
    input_scale: float | None = 255.0  # None: each raster's value range (metadata normalization "value_range")
    ignore_value: int | None = None
    resolution_m: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    name: str | None = None
    images: str | None = None
    labels: str | None = None
    extra_share: float = 0.5


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when usable else CPU; ``cuda`` without a GPU raises :class:`TrainingError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but torch sees no usable CUDA GPU; "
                            "use --device cpu.")
    if device not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda, got {device!r}.")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def evaluate(model: torch.nn.Module, rasters: list[Raster], cfg: FitConfig, device: torch.device,
             keep: bool = False) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Pooled pixel metrics (+ mean boundary F1 at 2 px) over whole rasters; optionally the probabilities."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    bf1, probs = [], {}
    for r in rasters:
        prob = predict_probabilities(model, r.image, cfg.mean, cfg.std, cfg.tile, cfg.overlap, device,
                                     cfg.eval_batch_size, valid=r.valid)
        valid = r.label != IGNORE
        pred = cropland(prob, 0.5)  # the engine's rule, at the default threshold
        m = pixel_metrics(pred, r.label == 1, valid)
        for k in counts:
            counts[k] += int(m[k])
        bf1.append(boundary_f1(pred, r.label == 1, 2, valid)["f1"])
        if keep:
            probs[r.name] = prob
    out = metrics_from_counts(counts)
    out["boundary_f1"] = float(np.mean(bf1))
    out.update({k: float(v) for k, v in counts.items()})
    return out, probs


def build_metadata(cfg: FitConfig, train: list[Raster], metrics: dict[str, Any],
                   extra: list[Raster] | None = None) -> ModelMetadata:
    """The :class:`ModelMetadata` a model trained with ``cfg`` on ``train`` (+ ``extra``) carries."""
    n = train[0].image.shape[0]
    bands = cfg.bands or list(range(1, n + 1))
    names = cfg.band_names or (["red", "green", "blue"] if n == 3 else [f"band{b}" for b in bands])
    return ModelMetadata(
        name=cfg.name or Path(cfg.out).name or cfg.arch.replace(":", "_"),
        architecture=cfg.arch,
        output="logits",  # the checkpoint's model returns logits; the ONNX export adds the softmax
        input_bands=bands,
        band_names=names,
        input_scale=cfg.input_scale or 1.0,
        normalization="input_scale" if cfg.input_scale else "value_range",
        mean=list(cfg.mean),
        std=list(cfg.std),
        tile_size=cfg.tile,
        overlap=cfg.overlap,
        resolution_m=cfg.resolution_m,
        training_data=[r.name for r in train] + [
            f"{n} extra raster(s) from {folder}" for folder, n in
            sorted(Counter(str(r.image_path.parent) for r in extra or []).items())],
        metrics=metrics,
        extra={"width": cfg.width, "decoder_channels": cfg.decoder_channels, "size_multiple": SIZE_MULTIPLE},
    )


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    from .plots import plot_curves

    plot_curves(history, out / "curves.png")


def fit(cfg: FitConfig, train: list[Raster], val: list[Raster] | None = None,
        test: list[Raster] | None = None, log=print, extra: list[Raster] | None = None) -> dict[str, Any]:
    """Train one model; returns the summary written to ``summary.json``.

    Args:
        cfg: options; ``cfg.mean``/``cfg.std`` must be set (see :func:`training.data.channel_stats`).
        train: rasters crops are drawn from. val: rasters that choose ``best.pt`` (by Dice) and stop early;
            without them ``best.pt`` is the last epoch. test: rasters only reported (cross-validation
            hold-out).
        log: receives progress lines.
        extra: more training rasters (other sources); ``cfg.extra_share`` of the crops come from them.

    Raises:
        Interrupted: on Ctrl-C, after keeping ``last.pt``/``best.pt`` of the last completed epoch.
    """
    from tqdm import tqdm

    from .augment import CropSampler

    if cfg.tile % SIZE_MULTIPLE:
        raise TrainingError(f"--tile must be a multiple of {SIZE_MULTIPLE}, got {cfg.tile}.")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    val, test = val or [], test or []
    model = build_model(cfg.arch, train[0].image.shape[0], 2, width=cfg.width,
                        decoder_channels=cfg.decoder_channels).to(device)
    if cfg.weights:
        loaded, skipped = load_weights(model, cfg.weights)
        log(f"initial weights from {cfg.weights}: {len(loaded)} tensors loaded, {len(skipped)} skipped")
    optimiser = make_optimiser(model, cfg, device)
    total = optimiser.total
    loss_fn = SegmentationLoss(cfg.ce_weight, cfg.dice_weight, cfg.boundary_weight)
    state = new_state()
    if cfg.resume:
        resume(cfg.resume, model, optimiser, state,
               {key: getattr(cfg, key) for key in ("arch", "epochs", "steps_per_epoch", "schedule")}, log)
    extra = extra or []
    weights = None
    if extra:
        areas = [float(r.label.size) for r in train], [float(r.label.size) for r in extra]
        weights = ([(1 - cfg.extra_share) * a / sum(areas[0]) for a in areas[0]]
                   + [cfg.extra_share * a / sum(areas[1]) for a in areas[1]])
    sampler = CropSampler(train + extra, cfg.tile, cfg.mean, cfg.std, (cfg.scale_min, cfg.scale_max),
                          cfg.augment, cfg.seed, weights)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{cfg.arch}: {n_params / 1e6:.2f} M parameters on {device}; {len(train)} training raster(s), "
        f"{len(extra)} extra, {len(val)} validation, {len(test)} test; "
        f" {total} steps of {cfg.batch_size} x {cfg.tile} px")

    t_start = time.time()
    try:
        while state["epoch"] < cfg.epochs and state["step"] < total:
            model.train()
            losses = []
            n_steps = min(cfg.steps_per_epoch, total - state["step"])
            bar = tqdm(range(n_steps), desc=f"epoch {state['epoch'] + 1}/{cfg.epochs}", leave=False,
                       disable=None, mininterval=5)
            for _ in bar:
                xb, yb = sampler.batch(state["step"], cfg.batch_size)
                x = torch.from_numpy(xb).to(device)
                y = torch.from_numpy(yb).to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=optimiser.use_amp):
                    loss = loss_fn(model(x), y)
                optimiser.step(loss)
                state["step"] += 1
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            state["epoch"] += 1
            row: dict[str, Any] = {"epoch": state["epoch"], "step": state["step"],
                                   "train_loss": float(np.mean(losses)), "lr": optimiser.sched.get_last_lr()[0],
                                   "seconds": round(time.time() - t_start, 1)}
            for prefix, rasters in (("val", val), ("test", test)):
                if rasters:
                    m, _ = evaluate(model, rasters, cfg, device)
                    row.update({f"{prefix}_{k}": m[k] for k in EPOCH_METRICS})
            state["history"].append(row)
            improved = end_epoch(state, row.get("val_f1", state["epoch"]))  # no validation: the latest is best
            metrics = {k[4:]: round(v, 5) for k, v in row.items() if k.startswith("val_")}
            save_epoch(out, model, optimiser, state, cfg, build_metadata(cfg, train, metrics, extra), improved)
            _write_history(out, state["history"])
            shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k.endswith(("loss", "_iou", "_f1")))
            log(f"epoch {state['epoch']} step {state['step']} {shown} ({row['seconds']:.0f} s)")
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                log(f"early stop: validation Dice did not improve for {cfg.patience} epochs")
                break
    except KeyboardInterrupt:
        _write_history(out, state["history"])
        kept = out / "last.pt"
        raise Interrupted(f"interrupted at step {state['step']}; last good checkpoint: "
                          f"{kept if kept.exists() else 'none (no epoch completed)'}.") from None
    best = load_checkpoint(out / "best.pt")
    model.load_state_dict(best["state_dict"])
    summary: dict[str, Any] = {"arch": cfg.arch, "best_epoch": state["best_epoch"],
                               "epochs_done": state["epoch"], "steps": state["step"],
                               "seconds": round(time.time() - t_start, 1),
                               "parameters": n_params, "train": [r.name for r in train + extra],
                               "val": [r.name for r in val], "test": {}}
    for r in test:
        m, probs = evaluate(model, [r], cfg, device, keep=True)
        summary["test"][r.name] = m
        np.save(out / f"pred_{r.name}.npy", probs[r.name].astype(np.float16))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
