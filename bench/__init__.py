"""Benchmarks of Cropland Extractor: accuracy, speed, the forward-pass bound, backends and vectorising.

Run each as a module from the repository root, e.g. ``.venv/bin/python -m bench.speed --help``; see
``bench/README.md``. Results go to ``runs/bench/`` (git-ignored) as JSON; ``python -m bench.report`` renders them as
the markdown tables of ``docs/BENCHMARKS.md``. Nothing here is a timed test.
"""
