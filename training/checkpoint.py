"""Checkpoints: plain dicts (tensors, numbers, strings, lists) loadable with
``torch.load(weights_only=True)``.

Keys: ``format`` (:data:`FORMAT`), ``state_dict`` (model), ``optimizer``, ``scheduler``, ``epoch`` (completed
epochs), ``step`` (optimizer steps done), ``best_score``, ``best_epoch``, ``bad_epochs``, ``history`` (one
dict of metrics per epoch), ``args`` (the fit options), ``metadata`` (:class:`engine.metadata.ModelMetadata`
as a dict). Files are written to a temporary name and renamed, so an interrupted save never leaves a broken
checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FORMAT = "cropland-extractor-checkpoint-1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format tag) atomically to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by `python -m training fit`.")
    return data


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model of a checkpoint (architecture and options from its ``args``) with its weights."""
    from .models import build_model

    args = ckpt["args"]
    meta = ckpt["metadata"]
    model = build_model(args["arch"], len(meta["input_bands"]), len(meta["classes"]), width=args.get("width"),
                        decoder_channels=args.get("decoder_channels"))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
