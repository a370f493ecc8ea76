"""What Dask runs need on both sides, without the rest of the cluster code: dask.distributed imported with a clear
error when it is missing, the model loaded once per worker process, inference threads shared on a local cluster.
"""

from __future__ import annotations

import dataclasses
import os

from .errors import DependencyError
from .options import ExtractOptions


def distributed_module():
    """``import distributed``, or :class:`DependencyError` saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise DependencyError("Running on a Dask cluster needs dask.distributed, which is not installed: run "
                              "`bash scripts/setup.sh cluster` (or pip install -r requirements/cluster.txt).") from None
    return distributed


def local_threads(client, options: ExtractOptions) -> ExtractOptions:
    """The options with inference threads shared among the local cluster's workers (cores // workers) when the
    user did not set them; unchanged for remote clusters, whose workers know their own cores."""
    if options.threads or not getattr(client, "_cropland_local", False):
        return options
    workers = max(len(client.scheduler_info().get("workers", {})), 1)
    return dataclasses.replace(options, threads=max((os.cpu_count() or 1) // workers, 1))


_MODELS: dict = {}


def worker_model(model, options: ExtractOptions):
    """The ensemble for ``model`` (a path, or None = the shipped default), loaded once per worker process."""
    from .ensemble import load_ensemble

    key = (str(model), options.device, options.backend, options.fp16, options.threads, options.fusion)
    if key not in _MODELS:
        _MODELS[key] = load_ensemble(model, options)
    return _MODELS[key]
