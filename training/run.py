"""What every fit shares (``training.loop`` for one-head models, ``training.multihead_fit`` for model v2): the
optimiser with its learning-rate schedule and mixed precision, the run's state (epoch, step, best score), resuming
from a checkpoint, and the checkpoints written after each epoch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, TrainingError


@dataclass
class Optimiser:
    """AdamW with its schedule and (on CUDA) the mixed-precision scaler; ``total``: the steps this run takes
    (``--max-steps`` stops early but keeps the schedule of the whole run, so that a stopped run resumes)."""

    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    total: int
    use_amp: bool

    def step(self, loss: torch.Tensor) -> None:
        """One optimisation step on ``loss`` (a scalar tensor of the current batch)."""
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()


def make_optimiser(model: torch.nn.Module, cfg, device: torch.device) -> Optimiser:
    """The :class:`Optimiser` of a fit: ``cfg`` has lr, weight_decay, epochs, steps_per_epoch, schedule and
    max_steps (a ``FitConfig`` or ``MultiHeadConfig``)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = make_scheduler(opt, cfg, total)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    use_amp = device.type == "cuda"
    return Optimiser(opt, sched, torch.amp.GradScaler("cuda", enabled=use_amp), total, use_amp)


def make_scheduler(opt: torch.optim.Optimizer, cfg, total: int):
    """``cfg.schedule`` (onecycle, cosine or constant) over ``total`` steps, peaking at ``cfg.lr``."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 2),
                                                   pct_start=0.15, div_factor=10.0, final_div_factor=100.0)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1), eta_min=cfg.lr / 100)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise TrainingError(f"--schedule must be onecycle, cosine or constant, got {cfg.schedule!r}.")


def new_state() -> dict[str, Any]:
    """The state a run starts from and a checkpoint keeps: epoch, step, best score and epoch, epochs without
    improvement, and the per-epoch history rows."""
    return {"epoch": 0, "step": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}


def resume(path: str | Path, model: torch.nn.Module, optimiser: Optimiser, state: dict[str, Any],
           same: dict[str, Any], log) -> None:
    """Continue from checkpoint ``path``: weights, optimiser, schedule and state; ``same``: the run's settings a
    resumed run must share with the checkpoint's (name -> value), else :class:`CheckpointError` says which."""
    ck = load_checkpoint(path)
    for key, value in same.items():
        if ck["args"].get(key) != value:
            raise CheckpointError(f"--resume {path} was trained with {key} = {ck['args'].get(key)}; this run has "
                                  f"{value}. Resume with the same value.")
    model.load_state_dict(ck["state_dict"])
    optimiser.opt.load_state_dict(ck["optimizer"])
    optimiser.sched.load_state_dict(ck["scheduler"])
    state.update({k: ck[k] for k in state})
    log(f"resumed from {path} at epoch {state['epoch']}, step {state['step']}")


def end_epoch(state: dict[str, Any], score: float) -> bool:
    """Record an epoch's score in ``state``; True when it beats the best so far (by more than 1e-4)."""
    improved = score > state["best_score"] + 1e-4
    if improved:
        state["best_score"], state["best_epoch"], state["bad_epochs"] = score, state["epoch"], 0
    else:
        state["bad_epochs"] += 1
    return improved


def save_epoch(out: Path, model: torch.nn.Module, optimiser: Optimiser, state: dict[str, Any], cfg, metadata,
               improved: bool) -> None:
    """Write ``out/last.pt`` (and ``out/best.pt`` when ``improved``): weights, optimiser, schedule, state, the
    run's settings and the model's metadata."""
    payload = {"state_dict": model.state_dict(), "optimizer": optimiser.opt.state_dict(),
               "scheduler": optimiser.sched.state_dict(), **{k: state[k] for k in state}, "args": asdict(cfg),
               "metadata": asdict(metadata)}
    save_checkpoint(out / "last.pt", payload)
    if improved:
        save_checkpoint(out / "best.pt", payload)
