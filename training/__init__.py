"""Training of Cropland Extractor's segmentation models: ``python -m training --help``.

Modules: :mod:`.data` (pairing, checking, reading rasters), :mod:`.augment` (random crops + albumentations),
:mod:`.models` (architecture registry), :mod:`.losses`, :mod:`.loop` (fit), :mod:`.crossval`, :mod:`.export`
(ONNX with metadata), :mod:`.ensemble` (ensemble.json, ensemble CV metrics), :mod:`.cli`.
"""
