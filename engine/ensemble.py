"""Ensembles: several models fused into one cropland score, with optional test-time augmentation.

An ensemble is described by ``ensemble.json``::

    {"name": "default", "description": "...", "fusion": "mean",  "threshold": 0.5,
     "members": [{"path": "unet.onnx", "weight": 1.0}, ...],   # paths relative to the JSON file
     "tile_size": 512, "overlap": 64}                             # optional; else the first member's metadata

Fusion ``"mean"`` is the weighted mean of the members' probabilities; ``"vote"`` (the original study's majority
vote) is the weighted fraction of members whose probability exceeds their own threshold, so a pixel is cropland
when more than half the (weighted) members say so. A single model file is an ensemble of one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import is_out_of_memory, load_member
from .errors import InputError, ModelError
from .masks import cropland
from .metadata import CHANNELS, ModelMetadata
from .normalize import Stretch, normalize
from .options import FUSIONS, MAX_TILE, ExtractOptions, check_number

LogFn = Callable[[str], None]

# The shipped default ensemble (resources/ sits beside engine/ in the plugin folder).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "resources" / "models" / "ensemble.json"


def _noop(_: str) -> None:
    pass


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0..7) of the dihedral group on the last two axes: k % 4 quarter turns, then a flip if k >= 4."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.flip(y, axis=-1) if k >= 4 else y


def undihedral(y: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`dihedral`."""
    if k >= 4:
        y = np.flip(y, axis=-1)
    return np.rot90(y, -(k % 4), axes=(-2, -1))


@dataclass
class Ensemble:
    """Loaded members with their fusion rule.

    Attributes:
        members: loaded backend members (callables, each with ``.meta`` and ``.label``).
        weights: one positive weight per member.
        fusion: ``"mean"`` or ``"vote"``; threshold: cropland when the fused score exceeds it.
        tile_size, overlap: default tiling (px); name; source: the file it was loaded from.
    """

    members: list
    weights: list[float]
    fusion: str
    threshold: float
    tile_size: int
    overlap: int
    name: str
    source: str
    batch_size: int = 0

    @property
    def meta(self) -> ModelMetadata:
        """Metadata of the first member (bands, normalisation, resolution)."""
        return self.members[0].meta

    @property
    def channels(self) -> list[str]:
        """What :meth:`predict` returns per pixel: ``["extent"]``, or with the members' other named outputs
        (``"boundary"``, ``"distance"``) after it."""
        names = {c for m in self.members for c in getattr(m, "channels", ["extent"])}
        return [c for c in CHANNELS if c in names]

    @property
    def device(self) -> str:
        """What ran the models, e.g. ``"cpu (onnxruntime CPUExecutionProvider, 2 threads)"``."""
        return "; ".join(sorted({m.label for m in self.members}))

    @property
    def model_names(self) -> list[str]:
        """Member names with their file names."""
        return [f"{m.meta.name} ({Path(m.path).name})" for m in self.members]

    def predict(self, raw: np.ndarray, valid: np.ndarray, stretch: Stretch | None = None,
                tta: bool = False, cue: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Fused cropland score for a batch of tiles.

        Args:
            raw: float32 (N, B, T, T) raw pixel values of the ensemble's bands.
            valid: bool (N, T, T), False where nodata or outside the raster.
            stretch: optional per-band stretch applied before normalisation.
            tta: average the 8 dihedral views (flips and 90° rotations) for each member.
            cue: optional function of the first member's input on its 0..1 scale (before mean/std), float32
                (N, B, T, T) -> (N, T, T), appended as a last channel (the image split's edges).

        Returns:
            float32 (N, T, T) fused score in 0..1 (mean probability, or weighted vote fraction); with more
            :attr:`channels` than the extent, (N, K, T, T): the fused extent first, then each other output
            averaged (weighted) over the members that have it.
        """
        channels = self.channels
        total = np.zeros((raw.shape[0], len(channels), *raw.shape[2:]), np.float32)
        weights = np.zeros(len(channels), np.float32)
        inputs: dict[tuple, np.ndarray] = {}  # members normalised alike share one input
        for member, weight in zip(self.members, self.weights, strict=True):
            key = (tuple(member.meta.mean), tuple(member.meta.std), member.meta.input_scale, member.meta.normalization)
            if key not in inputs:
                inputs[key] = normalize(raw, valid, member.meta, stretch)
            x = inputs[key]
            prob = self._run_views(member, x, tta)
            if prob.ndim == 3:
                prob = prob[:, None]
            prob[:, 0] = member_score(prob[:, 0], self.fusion, member.meta.threshold)
            for k, name in enumerate(getattr(member, "channels", ["extent"])):
                c = channels.index(name)
                total[:, c] += np.float32(weight) * prob[:, k]
                weights[c] += weight
        total /= weights[None, :, None, None]
        if cue is not None:
            meta = self.members[0].meta
            x = inputs[(tuple(meta.mean), tuple(meta.std), meta.input_scale, meta.normalization)]
            std, mean = (np.asarray(v, np.float32)[:, None, None] for v in (meta.std, meta.mean))
            scaled = x * std + mean
            total = np.concatenate([total, cue(scaled)[:, None]], axis=1)
        return total[:, 0] if total.shape[1] == 1 else total

    def release_memory(self) -> None:
        """Free the members' cached working memory (call after the last batch; the next call reallocates)."""
        for member in self.members:
            member.release_memory()

    def _run_views(self, member, x: np.ndarray, tta: bool) -> np.ndarray:
        if not tta:
            return self._run_batched(member, x)
        acc = 0
        for k in range(8):
            acc = acc + undihedral(self._run_batched(member, np.ascontiguousarray(dihedral(x, k))), k)
        return (acc / 8).astype(np.float32)

    def _run_batched(self, member, x: np.ndarray) -> np.ndarray:
        """Run ``member`` over ``x`` in chunks, halving the chunk after a GPU out-of-memory error."""
        size = self.batch_size or len(x)
        out = []
        i = 0
        while i < len(x):
            chunk = x[i:i + size]
            try:
                out.append(member(chunk))
            except Exception as exc:
                if not is_out_of_memory(exc) or len(chunk) == 1:
                    raise
                size = max(1, len(chunk) // 2)
                self.batch_size = size
                continue
            i += len(chunk)
        return np.concatenate(out, axis=0)


def member_score(prob: np.ndarray, fusion: str, threshold: float) -> np.ndarray:
    """One member's part of the fused score: its float32 probability (``"mean"``), or 1.0 where it says cropland
    (probability above its ``threshold``, :func:`engine.masks.cropland`) and 0.0 elsewhere (``"vote"``)."""
    if fusion == "vote":
        return cropland(prob, threshold).astype(np.float32)
    if fusion != "mean":
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    return prob


def fuse(probs: list[np.ndarray], weights: list[float], fusion: str, thresholds: list[float]) -> np.ndarray:
    """Fuse members' probabilities (any equal shapes, float) into one float32 score in 0..1, as
    :meth:`Ensemble.predict` does: the weighted mean of :func:`member_score` (``thresholds``: one per member, used
    by ``"vote"``)."""
    total = np.zeros(np.shape(probs[0]), np.float32)
    for prob, weight, threshold in zip(probs, weights, thresholds, strict=True):
        total += np.float32(weight) * member_score(np.asarray(prob, np.float32), fusion, threshold)
    return total / np.float32(sum(weights))


def _read_ensemble_json(path: Path) -> dict:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"Cannot read ensemble file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("members"), list) or not spec["members"]:
        raise ModelError(f"{path}: an ensemble needs a non-empty 'members' list of {{'path': ..., 'weight': ...}}.")
    return spec


def _check_spec_value(path: Path, what: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    """The CLI's number check (:func:`engine.options.check_number`) for a value of ``ensemble.json``."""
    try:
        check_number(what, value, low, high, low_open, high_open)
    except InputError as exc:
        raise ModelError(f"{path}: {exc}") from None


def _check_spec(path: Path, spec: dict) -> None:
    """Validate the optional settings of ``ensemble.json`` as the CLI validates its flags; raises ModelError."""
    if "threshold" in spec:
        _check_spec_value(path, "'threshold'", spec["threshold"], 0.0, 1.0, low_open=True, high_open=True)
    if "tile_size" in spec:
        _check_spec_value(path, "'tile_size' (px)", spec["tile_size"], 32, MAX_TILE)
        if spec["tile_size"] != int(spec["tile_size"]):
            raise ModelError(f"{path}: 'tile_size' must be a whole number of pixels, got {spec['tile_size']!r}.")
    if "overlap" in spec:
        _check_spec_value(path, "'overlap' (px)", spec["overlap"], 0, int(spec.get("tile_size", MAX_TILE)) / 2)
        if spec["overlap"] != int(spec["overlap"]):
            raise ModelError(f"{path}: 'overlap' must be a whole number of pixels, got {spec['overlap']!r}.")
    if "fusion" in spec and spec["fusion"] not in FUSIONS:
        raise ModelError(f"{path}: 'fusion' must be one of {', '.join(FUSIONS)}, got {spec['fusion']!r}.")
    if "name" in spec and not isinstance(spec["name"], str):
        raise ModelError(f"{path}: 'name' must be a string, got {spec['name']!r}.")


def load_ensemble(model: str | Path | Ensemble | None, options: ExtractOptions,
                  log: LogFn | None = None) -> Ensemble:
    """Load an ``.onnx`` / checkpoint file or an ``ensemble.json`` (see the module docstring); ``None`` = the
    shipped default (:data:`DEFAULT_MODEL`); an already loaded :class:`Ensemble` is returned as it is.

    Raises:
        ModelError: missing/corrupt files, bad JSON, members that disagree on their input bands.
        DependencyError: the backend's package is missing, or CUDA was required and is unusable.
    """
    if isinstance(model, Ensemble):
        return model
    log = log or _noop
    path = Path(model if model is not None else DEFAULT_MODEL)
    if not path.exists():
        raise ModelError(f"Model file not found: {path}")
    if path.suffix.lower() == ".json":
        spec = _read_ensemble_json(path)
        entries = []
        for i, m in enumerate(spec["members"]):
            if not isinstance(m, dict) or not isinstance(m.get("path"), str):
                raise ModelError(f"{path}: member {i + 1} must be an object with a 'path' (a file name).")
            weight = m.get("weight", 1.0)
            _check_spec_value(path, f"member {i + 1} ({m['path']}) 'weight'", weight, 0.0, low_open=True)
            entries.append(((path.parent / m["path"]).resolve(), float(weight)))
        _check_spec(path, spec)
    else:
        spec, entries = {}, [(path.resolve(), 1.0)]
    threads = options.cpu_threads(log)
    members = [load_member(p, options.backend, options.device, threads, options.fp16, log) for p, _ in entries]
    first = members[0].meta
    for m in members[1:]:
        if m.meta.n_bands != first.n_bands:
            raise ModelError(
                f"{path}: members disagree on their inputs: {members[0].path.name} takes bands "
                f"{first.input_bands}, {m.path.name} takes {m.meta.input_bands}."
            )
    fusion = options.fusion or spec.get("fusion", "mean")
    if fusion not in FUSIONS:
        raise ModelError(f"{path}: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}.")
    default_threshold = 0.5 if fusion == "vote" else float(spec.get("threshold", first.threshold))
    ens = Ensemble(
        members=members,
        weights=[w for _, w in entries],
        fusion=fusion,
        threshold=default_threshold,
        tile_size=int(spec.get("tile_size", first.tile_size)),
        overlap=int(spec.get("overlap", first.overlap)),
        name=str(spec.get("name", first.name)),
        source=str(path),
    )
    log(f"Models: {', '.join(ens.model_names)}; fusion {fusion}; device {ens.device}.")
    return ens
