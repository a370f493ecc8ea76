"""Loss and metric curves of a run as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Plot train loss (left) and every ``*_iou`` / ``*_f1`` column (right) against the epoch; returns
    path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (CE + Dice)")
    ax_loss.legend()
    keys = sorted({k for row in history for k in row if k.endswith(("_iou", "_f1"))})
    for k in keys:
        ax_m.plot(epochs, [row.get(k, float("nan")) for row in history], marker=".", label=k)
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel("cropland metric")
    if keys:
        ax_m.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
