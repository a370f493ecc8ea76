"""Running extractions on a Dask cluster (``dask.distributed``): many scenes, one task per scene.

Dask is optional (``requirements/cluster.txt``, ``bash scripts/setup.sh cluster``); nothing else in the engine
imports it. A cluster is named the way the CLI's ``--cluster`` takes it: ``local`` or ``local:N`` starts a
``LocalCluster`` of N worker processes on this machine, ``tcp://HOST:8786`` connects to a running scheduler.
The engine has no scheduler of its own: Dask places the tasks, restarts dead workers and runs again the tasks
they held.

Each scene is one task: the worker loads the model once (kept per worker process), runs the same pipeline as an
in-process run and writes the outputs itself, under temporary names moved into place only when complete, so a
task killed half-way leaves no file that could pass for a finished one, and running it again gives the same
files. The client checks every output before submitting anything; the tasks then run with ``overwrite`` on, so
that a task run again after its first try committed its files (and died before reporting) does not refuse them.
A scene that fails (bad input, a worker that died too often) becomes a :class:`SceneFailure` row; the other
scenes' outputs are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from .errors import ClusterError, CroplandError
from .options import ExtractOptions, OutputPaths
from .result import ExtractionResult, SceneFailure
from .workers import distributed_module, local_threads, worker_model

LogFn = Callable[[str], None]
CONNECT_TIMEOUT_S = 10


def _noop(*_args) -> None:
    pass


def parse_cluster(spec: str) -> tuple[str, int | None]:
    """``"local"`` / ``"local:N"`` -> ("local", N or None); a scheduler address -> (address, None).

    Raises:
        ClusterError: a malformed spec (``local:0``, ``local:x``, an address without a port).
    """
    spec = spec.strip()
    if spec == "local" or spec.startswith("local:"):
        count = spec.partition(":")[2]
        if not count:
            return "local", None
        if not count.isdigit() or int(count) < 1:
            raise ClusterError(f"--cluster {spec}: the number of workers after 'local:' must be a whole number "
                               "of at least 1, e.g. local:4.")
        return "local", int(count)
    address = spec if "://" in spec else f"tcp://{spec}"
    parsed = urlparse(address)
    if parsed.scheme not in ("tcp", "tls", "ws", "wss") or not parsed.hostname or parsed.port is None:
        raise ClusterError(f"--cluster {spec}: expected 'local', 'local:N' or a scheduler address such as "
                           "tcp://HOST:8786.")
    return address, None


def _probe(address: str) -> None:
    """Fail at once, with a clear message, when nothing listens at the scheduler's address."""
    parsed = urlparse(address)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterError(f"Cannot reach the Dask scheduler at {address} ({exc.strerror or exc}). Start one with "
                           "`dask scheduler` (and workers with `dask worker " + address + "`), check the host "
                           "and port, or use --cluster local:N to run on this machine.") from None


def connect(spec: str, log: LogFn | None = None):
    """Start or reach the cluster named by ``spec`` (see :func:`parse_cluster`) -> ``distributed.Client``.

    A local cluster has one single-threaded worker process per task slot (``N``, default: the CPU count);
    ``log`` is told the dashboard's address when there is one. Close the client (and its cluster) with
    ``client.close()``; a local cluster goes with its client.

    Raises:
        DependencyError: dask.distributed is not installed.
        ClusterError: the scheduler cannot be reached (within a few seconds, not after Dask's retries).
    """
    distributed = distributed_module()
    log = log or _noop
    address, workers = parse_cluster(spec)
    if address == "local":
        workers = workers or os.cpu_count() or 1
        client = distributed.Client(n_workers=workers, threads_per_worker=1, processes=True,  # owns its cluster
                                    dashboard_address=":0" if _has_dashboard() else None,
                                    silence_logs=logging.ERROR)
        client._cropland_local = True  # the CLI sizes inference threads to the local machine's cores
    else:
        _probe(address)
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"Cannot connect to the Dask scheduler at {address}: {exc}") from None
    link = dashboard_link(client)
    workers_now = len(client.scheduler_info().get("workers", {}))
    log(f"Dask cluster {client.scheduler.address} with {workers_now} worker(s)"
        + (f"; dashboard {link}" if link else " (its scheduler serves no dashboard: that needs bokeh)") + ".")
    return client


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_link(client) -> str | None:
    """The address of the scheduler's dashboard, or None when it runs none."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:  # an old scheduler without scheduler_info's services
        return None
    return client.dashboard_link if "dashboard" in services else None


# ---- worker side -----------------------------------------------------------------------------------------------

def run_scene(path: str, model, outputs: OutputPaths, options: ExtractOptions,
              progress=None) -> ExtractionResult | SceneFailure:
    """Worker task: extract one scene to ``outputs`` (run with overwrite on; the client checked them).

    Returns the result without field geometries, or a :class:`SceneFailure` for errors of the input or the
    model (and for unexpected ones, named by type), so that one bad scene does not fail the whole run.
    """
    from .pipeline import run_file

    outputs = dataclasses.replace(outputs, overwrite=True, report=None)
    try:
        return run_file(Path(path), worker_model(model, options), outputs, options, progress=progress,
                        keep_fields=False)
    except CroplandError as exc:
        return SceneFailure(str(path), str(exc))
    except Exception as exc:  # a bug must not lose the other scenes; its type says where to look
        return SceneFailure(str(path), f"{type(exc).__name__}: {exc}")


# ---- client side -----------------------------------------------------------------------------------------------


def _part_files(outputs: Sequence[OutputPaths]) -> set[Path]:
    """Temporary files (``.<stem>.part-*``) lying beside the outputs now."""
    found: set[Path] = set()
    for out in outputs:
        for _, path in out.items():
            found.update(path.parent.glob(f".{path.stem}.part-*"))
    return found


def extract_scenes(client, inputs: Sequence[str | Path], model=None, outputs: Sequence[OutputPaths] | None = None,
                   options: ExtractOptions | None = None, show_bar: bool = False,
                   task: Callable = run_scene) -> list[ExtractionResult | SceneFailure]:
    """Extract many scenes on a Dask cluster, one task each; see the module docstring.

    Args:
        client: a ``distributed.Client`` (e.g. from :func:`connect`).
        inputs: raster paths the workers can open (a shared file system, or GDAL virtual paths like /vsis3/).
        model: a model path the workers can open (``None`` = the shipped default); not a loaded ensemble.
        outputs: one :class:`OutputPaths` per input (paths the workers can write), or None (statistics only).
        show_bar: a tqdm bar over tasks on stderr.
        task: the worker function (tests wrap :func:`run_scene`).

    Returns:
        one :class:`ExtractionResult` or :class:`SceneFailure` per input, in input order.

    Raises:
        OutputError: an output exists (without overwrite), is an input, or is given twice, checked for every
            scene before any task starts.
    """
    from tqdm import tqdm

    from .outputs import check_outputs

    distributed = distributed_module()
    options = local_threads(client, options or ExtractOptions())
    inputs = [str(p) for p in inputs]
    outputs = list(outputs) if outputs is not None else [OutputPaths() for _ in inputs]
    if len(outputs) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} OutputPaths")
    seen: dict[Path, str] = {}
    for inp, out in zip(inputs, outputs, strict=True):
        check_outputs(out, [Path(p) for p in inputs])
        for _, path in out.items():
            if path.resolve() in seen:
                raise CroplandError(f"{path} is an output of both {seen[path.resolve()]} and {inp}.")
            seen[path.resolve()] = inp
    model = str(model) if model is not None else None
    before = _part_files(outputs)
    run_id = uuid.uuid4().hex[:12]  # a key never seen by the scheduler: no stale result of an earlier run
    futures = [client.submit(task, inp, model, out, options, key=f"scene-{k}-{Path(inp).stem}-{run_id}",
                             pure=False) for k, (inp, out) in enumerate(zip(inputs, outputs, strict=True))]
    index = {f.key: k for k, f in enumerate(futures)}
    results: list = [None] * len(futures)
    try:
        with tqdm(total=len(futures), unit="scene", disable=not show_bar, file=sys.stderr, leave=False) as bar:
            for future in distributed.as_completed(futures):
                k = index[future.key]
                try:
                    results[k] = future.result()
                except distributed.KilledWorker as exc:
                    results[k] = SceneFailure(inputs[k], f"the worker running it died too often ({exc})")
                except Exception as exc:  # e.g. a worker that could not unpickle the task
                    results[k] = SceneFailure(inputs[k], f"{type(exc).__name__}: {exc}")
                bar.update(1)
    except KeyboardInterrupt:
        client.cancel(futures)
        raise
    finally:
        for part in _part_files(outputs) - before:  # left by killed tries
            part.unlink(missing_ok=True)
    return results


def cli_extract(args, plans: list[tuple[Path, OutputPaths]], options: ExtractOptions, log: LogFn) -> int:
    """``python -m engine extract ... --cluster SPEC``: the scenes of ``plans`` (input, outputs) on the cluster, one
    task each, or, for a single input, its row bands (:func:`engine.bands.extract_bands`).

    Prints one summary line per input in input order and writes the report (failed inputs as error rows).
    Returns the exit status: 0, or 2 when any input failed (the others' outputs are kept).
    """
    import shlex

    from .bands import extract_bands
    from .report import write_report

    client = connect(args.cluster, log)
    try:
        if len(plans) == 1:  # one raster: row bands; an error is the run's, as without --cluster
            (inp, outputs), = plans
            results = [extract_bands(client, inp, args.model, outputs, options, band_rows=args.band_rows,
                                     show_bar=not args.quiet, log=log)]
        else:
            results = extract_scenes(client, [inp for inp, _ in plans], args.model, [out for _, out in plans],
                                     options, show_bar=not args.quiet)
    finally:
        client.close()
    for result in results:
        print(result.summary(), flush=True)
    if args.report:
        command = "python -m engine " + " ".join(shlex.quote(str(a)) for a in args.argv)
        write_report(args.report, results, command=command)
    failed = [r for r in results if isinstance(r, SceneFailure)]
    if failed:
        print(f"error: {len(failed)} of {len(results)} input(s) failed; the others' outputs were written.",
              file=sys.stderr)
        return 2
    return 0
