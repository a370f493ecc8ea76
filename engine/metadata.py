"""Model metadata: what a model expects and how it was trained.

Training writes it into the ONNX file (``metadata_props``) and the engine reads it back, so one ``.onnx`` file is
self-describing. The whole record is stored as JSON under the key :data:`METADATA_KEY`; a few flat keys that the
Deepness QGIS plugin understands (``model_type``, ``class_names``, ``resolution``, ``tile_size``,
``tiles_overlap``, ``standardization_mean``, ``standardization_std``) are written next to it, so our models also
run there.

Normalisation applied by the engine to a raw pixel value ``v`` of input band ``b`` (0-based in ``input_bands``)::

    x = (v / input_scale - mean[b]) / std[b]

The model returns per-class scores of shape (N, C, H, W); ``output`` says whether they are ``"probabilities"``
(softmax already applied) or ``"logits"``. Class ``cropland_class`` is cropland.

Output contract (v2 models): ``outputs`` may name what the network's outputs mean, by key::

    "outputs": {"extent":   {"tensor": "extent"},                 # cropland probability (required)
                "boundary": {"tensor": "boundary"},               # probability of lying on a field edge
                "distance": {"tensor": "distance", "activation": "none"}}   # optional: distance to the edge

Each entry reads the ONNX output named ``tensor`` (default: the key; a model with one output may omit it), of
shape (N, C, H, W) or (N, H, W); ``activation`` is ``"probabilities"`` (default for extent and boundary),
``"logits"`` (softmax over C, or a sigmoid when C = 1) or ``"none"`` (default for distance); ``channels`` lists
the channels summed after it (default: the only one, or ``cropland_class`` for the extent). A three-class model
(background, interior, boundary) is thus ``{"extent": {"tensor": "logits", "activation": "logits",
"channels": [1, 2]}, "boundary": {"tensor": "logits", "activation": "logits", "channels": [2]}}``.
A model without ``outputs`` (v1) has only the extent, read as ``output``/``cropland_class`` say.

``outputs`` may also be a plain list of names, the graph's output tensors in order, as ``python -m training.v2
export`` writes it (``["extent", "boundary"]``, optionally ``"distance"``): each name reads the tensor of that
name with its default activation, i.e. ``{"extent": {"tensor": "extent"}, "boundary": {"tensor": "boundary"}}``.
An output of two channels that does not say which to read is softmax probabilities over (not X, X): channel 1
(``cropland_class`` for the extent), so training's (N, 2, H, W) ``extent`` and ``boundary`` need no more.

Value normalisation (v2 models): a top-level ``stretch`` key (kept in ``extra``) names the stretch training used
before ``input_scale``/``mean``/``std``: ``"percentile"`` (each band between its 2 and 98th percentiles of the
whole raster, :func:`engine.normalize.choose_stretch`, which training's :func:`training.datasets.scene.unit_stretch`
calls too) or ``"auto"`` (the raster's value range). The engine's ``--stretch auto`` then applies that stretch
(:func:`engine.normalize.choose_stretch`), so both sides see the same values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ModelError

METADATA_KEY = "cropland_extractor"
SCHEMA_VERSION = 1
CHANNELS = ("extent", "boundary", "distance")  # named outputs, in the order the engine stacks them
ACTIVATIONS = ("probabilities", "logits", "none")
MODEL_STRETCHES = ("auto", "percentile", "none")  # what a model's ``stretch`` key may ask of ``--stretch auto``


@dataclass
class ModelMetadata:
    """Everything the engine needs to run one model, and what a user needs to trust it.

    Attributes:
        name: short model name, e.g. ``"unet_mobilenet_v2"``.
        architecture: registry name used by ``python -m training`` (e.g. ``"smp:Unet:mobilenet_v2"``).
        classes: class names in output-channel order, e.g. ``["other", "cropland"]``.
        cropland_class: index in ``classes`` of the cropland class.
        output: ``"probabilities"`` or ``"logits"`` (softmax over channels is then applied by the engine).
        input_bands: 1-based band numbers of the training rasters fed to the model, in model-channel order.
        band_names: names of those bands (``["red", "green", "blue"]``), for messages and defaults.
        input_scale: raw values are divided by this first (255 for 8-bit data, also for uint16 holding 0-255).
        normalization: how training brought raw values to 0..1: ``"input_scale"`` (v1 models, the default
            when the key is absent: divided by ``input_scale``) or ``"value_range"`` (each raster's value range
            as :func:`engine.normalize.value_range` decides, then ``input_scale`` is 1). The engine maps every
            raster's value range onto ``0..input_scale`` for both.
        mean, std: per-channel standardisation after scaling (one value per input band).
        tile_size: square tile edge in pixels the model was trained/validated at.
        overlap: default overlap between neighbouring tiles in pixels.
        resolution_m: ground sampling distance (m/px) of the training data.
        resolution_range_m: [min, max] pixel size (m) the model accepts as it is; a raster outside is read
            resampled to ``resolution_m`` (:mod:`engine.resample`). None = half to twice ``resolution_m``.
        threshold: default probability threshold for cropland.
        training_data: free text or list describing the training rasters.
        metrics: validation metrics, e.g. ``{"iou": 0.83, "f1": 0.9}``.
        outputs: named outputs (see the module docstring); empty = extent only (v1).
        extra: anything else (training arguments, versions).
    """

    name: str
    architecture: str
    input_bands: list[int]
    input_scale: float = 255.0
    normalization: str = "input_scale"
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    classes: list[str] = field(default_factory=lambda: ["other", "cropland"])
    cropland_class: int = 1
    output: str = "probabilities"
    band_names: list[str] = field(default_factory=list)
    tile_size: int = 512
    overlap: int = 64
    resolution_m: float | None = None
    resolution_range_m: list[float] | None = None
    threshold: float = 0.5
    training_data: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    @property
    def channels(self) -> list[str]:
        """Names of the model's outputs in engine order: ``["extent"]`` for v1, e.g. ``["extent", "boundary"]``."""
        return [c for c in CHANNELS if c in self.outputs] if self.outputs else ["extent"]

    @property
    def stretch(self) -> str | None:
        """The value stretch training used (the metadata's top-level ``stretch`` key, kept in ``extra``), or None
        when the model does not say (v1 models: ``normalization`` decides)."""
        return self.extra.get("stretch")

    @property
    def n_bands(self) -> int:
        """Number of input channels the model takes."""
        return len(self.input_bands)

    def validate(self, source: str = "model metadata") -> None:
        """Raise :class:`ModelError` naming ``source`` when a field is inconsistent."""
        n = len(self.input_bands)
        if n == 0:
            raise ModelError(f"{source}: 'input_bands' is empty; the model must name the bands it reads.")
        if any(int(b) < 1 for b in self.input_bands):
            raise ModelError(f"{source}: 'input_bands' must be 1-based band numbers, got {self.input_bands}.")
        if len(self.mean) != n or len(self.std) != n:
            raise ModelError(
                f"{source}: 'mean' and 'std' need one value per input band ({n}), "
                f"got {len(self.mean)} and {len(self.std)}."
            )
        if any(float(s) <= 0 for s in self.std) or float(self.input_scale) <= 0:
            raise ModelError(f"{source}: 'std' values and 'input_scale' must be positive.")
        if not 0 <= self.cropland_class < len(self.classes):
            raise ModelError(
                f"{source}: 'cropland_class' {self.cropland_class} is not an index of classes {self.classes}."
            )
        if self.normalization not in ("input_scale", "value_range"):
            raise ModelError(f"{source}: 'normalization' must be 'input_scale' or 'value_range', "
                             f"got {self.normalization!r}.")
        if self.output not in ("probabilities", "logits"):
            raise ModelError(f"{source}: 'output' must be 'probabilities' or 'logits', got {self.output!r}.")
        if self.tile_size < 16 or not 0 <= self.overlap < self.tile_size // 2 + 1:
            raise ModelError(
                f"{source}: tile_size {self.tile_size} / overlap {self.overlap} are not usable "
                "(need tile_size >= 16 and 0 <= overlap <= tile_size / 2)."
            )
        if not 0.0 < self.threshold < 1.0:
            raise ModelError(f"{source}: 'threshold' must lie in (0, 1), got {self.threshold}.")
        self._validate_outputs(source)
        if self.stretch is not None and self.stretch not in MODEL_STRETCHES:
            raise ModelError(f"{source}: 'stretch' must be one of {', '.join(MODEL_STRETCHES)}, got {self.stretch!r}.")
        if self.resolution_range_m is not None:
            rng = self.resolution_range_m
            if (not self.resolution_m or len(rng) != 2 or not 0 < float(rng[0]) <= self.resolution_m <= float(rng[1])):
                raise ModelError(f"{source}: 'resolution_range_m' must be [min, max] metres around 'resolution_m' "
                                 f"({self.resolution_m}), got {rng}.")

    def _validate_outputs(self, source: str) -> None:
        if not self.outputs:
            return
        if isinstance(self.outputs, list):  # training's form: the graph's output names, each read with defaults
            if any(not isinstance(name, str) for name in self.outputs) or len(set(self.outputs)) != len(self.outputs):
                raise ModelError(f"{source}: 'outputs' must list distinct output names, got {self.outputs!r}.")
            self.outputs = {name: {"tensor": name} for name in self.outputs}
        if not isinstance(self.outputs, dict) or "extent" not in self.outputs:
            raise ModelError(f"{source}: 'outputs' must be an object naming at least the 'extent' output, "
                             f"got {self.outputs!r}.")
        for name, spec in self.outputs.items():
            if name not in CHANNELS:
                raise ModelError(f"{source}: output {name!r} is not one of {', '.join(CHANNELS)}.")
            if not isinstance(spec, dict):
                raise ModelError(f"{source}: output {name!r} must be an object such as {{\"tensor\": \"{name}\"}}.")
            if spec.get("activation", "probabilities") not in ACTIVATIONS:
                raise ModelError(f"{source}: output {name!r}: 'activation' must be one of {', '.join(ACTIVATIONS)}, "
                                 f"got {spec.get('activation')!r}.")
            channels = spec.get("channels")
            if channels is not None and (not isinstance(channels, list) or not channels
                                         or any(not isinstance(c, int) or c < 0 for c in channels)):
                raise ModelError(f"{source}: output {name!r}: 'channels' must be a non-empty list of channel "
                                 f"indices, got {channels!r}.")

    def to_json(self) -> str:
        """Serialise to the JSON string stored under :data:`METADATA_KEY`."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model metadata") -> ModelMetadata:
        """Build from a dict (parsed JSON); unknown keys go to ``extra``; raises :class:`ModelError`."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        missing = [k for k in ("name", "architecture", "input_bands") if k not in kwargs]
        if missing:
            raise ModelError(f"{source}: metadata lacks required field(s) {', '.join(missing)}.")
        if int(kwargs.get("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise ModelError(
                f"{source}: metadata schema {kwargs['schema_version']} is newer than this engine "
                f"understands ({SCHEMA_VERSION}); update Cropland Extractor."
            )
        kwargs.setdefault("extra", {}).update(unknown)
        try:
            meta = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed metadata ({exc}).") from exc
        meta.input_bands = [int(b) for b in meta.input_bands]
        meta.validate(source)
        return meta

    @classmethod
    def from_json(cls, text: str, source: str = "model metadata") -> ModelMetadata:
        """Parse the JSON string stored under :data:`METADATA_KEY`; raises :class:`ModelError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: metadata is not valid JSON ({exc}).") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{source}: metadata must be a JSON object.")
        return cls.from_dict(data, source)

    def to_onnx_props(self) -> dict[str, str]:
        """Key/value strings for ONNX ``metadata_props``: our JSON plus the flat keys Deepness reads.

        Every value is JSON, because Deepness (0.6.5 and later) parses each key with ``json.loads``: a bare
        ``Segmentor`` is a JSONDecodeError there, ``"Segmentor"`` is not. :func:`deepness_props` says what each
        key holds.
        """
        return {METADATA_KEY: self.to_json(), **deepness_props(self)}
    @classmethod
    def from_onnx_props(cls, props: dict[str, str], source: str) -> ModelMetadata:
        """Read back what :meth:`to_onnx_props` wrote; raises :class:`ModelError` naming ``source``."""
        if METADATA_KEY not in props:
            raise ModelError(
                f"{source}: this ONNX file carries no '{METADATA_KEY}' metadata, so its bands and "
                "normalisation are unknown. Export it with `python -m training export`."
            )
        return cls.from_json(props[METADATA_KEY], source)


def deepness_props(meta: ModelMetadata) -> dict[str, str]:
    """The keys the Deepness QGIS plugin reads from an ONNX model, each value JSON-encoded as Deepness parses it.

    ``model_type`` "Segmentor"; ``class_names`` {"0": name, ...}; ``resolution`` in cm/px (left out when
    unknown: Deepness calls ``float()`` on it); ``tile_size`` in px (what Deepness uses for a model whose input
    height/width are dynamic); ``tiles_overlap`` in percent of the tile; ``seg_thresh``; and
    ``standardization_mean``/``std`` in Deepness's convention, which divides every pixel by 255 first (ours divides
    by ``input_scale``; the values are rescaled so that both give the same network input).
    """
    to_255 = float(meta.input_scale) / 255.0
    props = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(i): name for i, name in enumerate(meta.classes)}),
        "tile_size": json.dumps(int(meta.tile_size)),
        "tiles_overlap": json.dumps(round(100 * meta.overlap / meta.tile_size)),
        "seg_thresh": json.dumps(float(meta.threshold)),
        "standardization_mean": json.dumps([round(float(m) * to_255, 9) for m in meta.mean]),
        "standardization_std": json.dumps([round(float(s) * to_255, 9) for s in meta.std]),
    }
    if meta.resolution_m:
        props["resolution"] = json.dumps(round(float(meta.resolution_m) * 100, 6))
    return props
