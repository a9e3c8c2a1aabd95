"""Batch segmentation of many videos on Ray: ``pml-rt batch MANIFEST --out DIR``.

    from pml_rt.batch import run_batch
    report = run_batch("videos.csv", "out/")        # starts Ray on this machine
    print(report.format_table()); report.exit_code  # 0: all done or skipped, 1: some failed

The driver (this process) reads the manifest and the ledger, starts Ray or joins a cluster,
and hands one video at a time to each worker. Workers are Ray actors
(:class:`pml_rt.batch_worker.BatchWorker`) that load the model once, read the frames from the
manifest's paths themselves, hash the inputs, and write the masks to ``DIR/<id>/`` in one
rename; only paths and result rows travel through the driver. The driver appends each result
to ``DIR/ledger.jsonl`` (:mod:`pml_rt.batch_ledger`); a rerun skips videos whose ledger key is
unchanged. A worker process that dies is restarted by Ray and its video retried. Design
notes: docs/BATCH.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ._optional import require
from .batch_ledger import LEDGER_NAME, Ledger
from .batch_manifest import BatchItem, read_manifest
from .batch_worker import CRASH_ONCE_ENV, BatchWorker
from .errors import BackendError, InputError
from .registry import DEFAULT_MODEL
from .upsample import DEFAULT_METHOD, check_method

log = logging.getLogger("pml_rt")


@dataclass(frozen=True)
class BatchOptions:
    """What every video of a batch is segmented with; the same meaning as ``pml-rt segment``'s options.

    All of it but ``backend`` is part of each ledger key: changing it redoes every video.
    """

    model: str = DEFAULT_MODEL
    backend: str = "auto"  # per worker: "auto" takes a GPU where the worker has one
    upsample: str = DEFAULT_METHOD
    k: int = 5
    online_adaptation: bool = True
    recent_frames: int | None = None  # None: the model's default

    def validate(self) -> None:
        from .registry import get_model_config  # noqa: PLC0415

        get_model_config(self.model)
        check_method(self.upsample)
        if not isinstance(self.k, int) or self.k < 1:
            raise InputError(f"k is {self.k!r}; expected a positive number of neighbours")


@dataclass
class BatchReport:
    """What a batch did: one row per manifest video (the ledger row, or a ``skipped`` row)."""

    out_dir: Path
    rows: list[dict[str, Any]]
    seconds: float  # wall time from the first submission to the last result
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)  # workers' descriptions, Ray address

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def frames(self) -> int:
        """Frames segmented in this run (done videos only)."""
        return sum(int(r.get("frames") or 0) for r in self.rows if r["status"] == "done")

    @property
    def cpu_seconds(self) -> float:
        """CPU time the workers spent on the videos segmented in this run (all threads)."""
        return sum(float(r.get("cpu_seconds") or 0) for r in self.rows if r["status"] == "done")

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 where every video is done or skipped, 1 where any failed."""
        return 1 if self.failed else 0

    def format_table(self, max_errors: int = 20) -> str:
        lines = [
            f"batch: {len(self.rows)} videos, {self.workers} worker(s), outputs in {self.out_dir}",
            f"  {'done':<8}{self.done:>7}   ({self.frames} frames)",
            f"  {'failed':<8}{self.failed:>7}",
            f"  {'skipped':<8}{self.skipped:>7}",
            f"  {'wall':<8}{self.seconds:>7.1f} s  {self.fps:.1f} frames/s overall",
            f"  ledger  {self.out_dir / LEDGER_NAME}",
        ]
        failed = [r for r in self.rows if r["status"] == "failed"]
        if failed:
            lines.append("failed videos:")
            lines += [f"  {r['id']}: {r.get('error', '')}" for r in failed[:max_errors]]
            if len(failed) > max_errors:
                lines.append(f"  ... and {len(failed) - max_errors} more (see the ledger)")
        return "\n".join(lines)


def _ray() -> Any:
    return require("ray", "pml-rt batch (segmenting many videos on Ray)")


def _start_ray(address: str | None, worker_logs: bool) -> bool:
    """Connect to Ray; return True where this call started it (and so must shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    # Worker logs would break the progress bar; results and errors come back as rows anyway.
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": worker_logs}
    try:
        if address is None:  # a private Ray on this machine, with all its cores
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
        else:
            kwargs.pop("include_dashboard")  # a cluster's dashboard is the cluster's business
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        hint = (" (is the cluster up? 'auto' needs 'ray start' on this machine; ray:// needs "
                "pip install 'ray[client]')") if address else ""
        raise BackendError(f"cannot start or join {where}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}{hint}") from exc
    return True


def _worker_count(ray: Any, requested: int | None, cpus: float, gpus: float, pending: int) -> int:
    if requested is not None:
        if requested < 1:
            raise InputError(f"--workers is {requested}; expected 1 or more")
        return max(1, min(requested, pending))
    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // cpus) if cpus > 0 else pending
    if gpus > 0:
        n = min(n, int(res.get("GPU", 0) // gpus))
        if n < 1:
            raise InputError(f"--gpus-per-worker {gpus:g} but the Ray cluster has {res.get('GPU', 0):g} GPU(s)")
    return max(1, min(n, pending))


def run_batch(manifest: str | os.PathLike[str] | Sequence[BatchItem], out_dir: str | os.PathLike[str], *,
              address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1,
              gpus_per_worker: float = 0, options: BatchOptions | None = None, max_retries: int = 2,
              progress: bool = True, worker_logs: bool = False) -> BatchReport:
    """Segment every video of ``manifest`` into ``out_dir/<id>/``; skip those the ledger has done.

    manifest: a CSV or JSON-lines file (see :mod:`pml_rt.batch_manifest`) or checked items.
    address: None starts Ray on this machine (unless Ray is already initialised in this
    process, which is then used), ``"auto"`` or ``"ray://host:port"`` joins a cluster. workers:
    how many actors (default: as many as the cluster's CPUs/GPUs allow at the given sizes, at
    most one per video to do). max_retries: how often a video is retried after its worker
    process died. worker_logs: show the workers' stdout/stderr here (where this call starts
    Ray). Returns a :class:`BatchReport`; a failing video never raises.
    """
    options = options or BatchOptions()
    options.validate()
    if cpus_per_worker < 0 or gpus_per_worker < 0:
        raise InputError("--cpus-per-worker and --gpus-per-worker must be 0 or more")
    items = list(manifest) if not isinstance(manifest, (str, os.PathLike)) else read_manifest(manifest)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise InputError("batch items have duplicate ids; each video needs its own output folder")
    out = Path(out_dir).absolute()
    ray = _ray()
    with Ledger(out) as ledger:
        started = _start_ray(address, worker_logs)
        try:
            return _run(ray, items, ledger, out, workers, cpus_per_worker, gpus_per_worker, options,
                        max_retries, progress)
        finally:
            ledger.clean_temporaries()
            if started:
                ray.shutdown()


def _first_error_line(exc: BaseException) -> str:
    """The line of a Ray error that names the cause ("InputError: ..."), else its first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    return (causes[-1] if causes else lines[0] if lines else type(exc).__name__)[:500]


def _failed_row(it: BatchItem, error: str) -> dict[str, Any]:
    return {"id": it.id, "video": it.video, "status": "failed", "key": None, "error": error}


def _run(ray: Any, items: list[BatchItem], ledger: Ledger, out: Path, workers: int | None, cpus: float,
         gpus: float, options: BatchOptions, max_retries: int, progress: bool) -> BatchReport:
    """Keep one video in flight per worker; record each result; retry videos whose worker died.

    The driver counts attempts itself (Ray restarts the actor but retries nothing): a video is
    tried again only when its worker process died while on it, at most ``max_retries`` times.
    After a death the worker is pinged (with retries, so the ping waits out the restart) before
    it gets more work, so no innocent video is charged for a restart.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    n = _worker_count(ray, workers, cpus, gpus, len(items))
    threads = max(1, math.floor(cpus)) if cpus >= 1 else 1
    crash_once = os.environ.get(CRASH_ONCE_ENV)  # test hook, see batch_worker
    actor_cls = ray.remote(BatchWorker).options(
        num_cpus=cpus, num_gpus=gpus,
        max_restarts=-1,  # a dead worker process is started again (the model loads again)
        max_task_retries=0,  # retries are counted here, per video
        # No runtime_env: Ray already sets OMP_NUM_THREADS to num_cpus in the worker before it runs
        # the actor, and a runtime_env would cost a fresh process (1-2 s) per worker.
    )
    opts = asdict(options)
    actors = [actor_cls.remote(str(out), opts, threads, None if gpus > 0 else False, crash_once) for _ in range(n)]
    queue = list(reversed(items))  # pop() takes the next video; a retried one is pushed back on top
    attempts: dict[str, int] = {}
    results: dict[str, dict[str, Any]] = {}
    running: dict[Any, tuple[int, BatchItem | None]] = {}  # ObjectRef -> (worker, video; None: a ping)
    lost: list[str] = []  # why workers could not (re)start
    described: list[str] = []
    bar = tqdm(total=len(items), desc="batch", unit="video", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()

    def ping(a: int) -> None:  # retried by Ray until the actor is back (or cannot start at all)
        running[actors[a].describe.options(max_task_retries=-1).remote()] = (a, None)

    def submit(a: int) -> None:
        if queue:
            it = queue.pop()
            running[actors[a].process.remote(it, ledger.done_key(it.id))] = (a, it)

    def record(row: dict[str, Any]) -> None:
        if row["status"] != "skipped":
            ledger.append(row)
        results[row["id"]] = row
        bar.update(1)
        bar.set_postfix({k: sum(r["status"] == k for r in results.values()) for k in ("done", "failed", "skipped")},
                        refresh=False)

    try:
        for a in range(n):
            ping(a)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            a, it = running.pop(ready[0])
            if it is None:
                try:
                    described.append(ray.get(ready[0]))
                    submit(a)
                except ray.exceptions.RayError as exc:  # its constructor failed: the model, a library
                    lost.append(_first_error_line(exc))
                continue
            try:
                row = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:  # the worker process died on this video
                attempts[it.id] = tried = attempts.get(it.id, 0) + 1
                if tried <= max_retries:
                    queue.append(it)
                else:
                    record(_failed_row(it, f"worker process died {tried} time(s) on this video "
                                           f"({type(exc).__name__}; out of memory or a crash in native code?)"))
                ping(a)
                continue
            except ray.exceptions.RayError as exc:
                row = _failed_row(it, _first_error_line(exc))
            record(row)
            submit(a)
        if queue:  # every worker is gone
            if not results:
                raise BackendError(f"no batch worker could start: {lost[0] if lost else 'unknown reason'}")
            for it in reversed(queue):
                record(_failed_row(it, f"not run: no worker left ({lost[0] if lost else 'unknown reason'})"))
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    seconds = time.perf_counter() - t0
    rows = [results[it.id] for it in items if it.id in results]
    return BatchReport(out_dir=out, rows=rows, seconds=seconds, workers=n,
                       extra={"workers": sorted(set(described)), "lost": lost})


def options_from_args(args: argparse.Namespace) -> BatchOptions:
    """:class:`BatchOptions` from the ``batch`` subcommand's arguments (absent ones: defaults)."""
    base = BatchOptions()
    rf = getattr(args, "recent_frames", None)
    return BatchOptions(
        model=getattr(args, "model", None) or base.model,
        backend=getattr(args, "backend", None) or base.backend,
        upsample=getattr(args, "upsample", None) or base.upsample,
        k=int(getattr(args, "k", None) or base.k),
        online_adaptation=not getattr(args, "no_online_adaptation", False),
        recent_frames=None if rf is None else int(rf),
    )


def cli_main(args: argparse.Namespace) -> int:
    """``pml-rt batch``: run the batch, print the table; exit status 1 where any video failed."""
    _ray()  # fail first, with the pip command, where Ray is absent
    report = run_batch(args.manifest, args.out, address=args.address, workers=getattr(args, "workers", None),
                       cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                       options=options_from_args(args), progress=not getattr(args, "quiet", False),
                       worker_logs=bool(getattr(args, "debug", False)))
    print(report.format_table())
    return report.exit_code
