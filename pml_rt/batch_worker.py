"""The batch worker: holds one :class:`Segmenter` and segments many videos, one call each.

:class:`BatchWorker` is a plain class; :mod:`pml_rt.batch` runs it as a Ray actor (one per
worker process, created once, so the model loads once). It can also run in-process, which
is what the tests compare against. Every call returns a result dict and never raises for a
bad video: the error's first line goes back to the driver, which records it in the ledger.

A video's masks are written to a hidden staging folder in the output folder and renamed into
place when every frame is written; an older output of the same id is swapped out the same way.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from . import __version__
from .batch_ledger import hash_file, input_key, temp_name
from .batch_manifest import BatchItem
from .errors import InputError
from .registry import get_model_config

# Test hook: a folder; a file named like a video id in it makes the worker process exit
# (os._exit) on the first attempt(s) at that video (the file holds how many; empty: one), to
# test retries after worker loss.
CRASH_ONCE_ENV = "PML_RT_BATCH_CRASH_ONCE"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps BLAS/OpenMP pools at ``threads``, so co-located workers don't fight."""
    return {name: str(max(1, int(threads))) for name in THREAD_ENV_VARS}


def choose_backend(backend: str, threads: int, has_gpu: bool) -> tuple[str, dict[str, Any]]:
    """Backend name and options for a worker: ``backend`` unless ``"auto"``.

    ``"auto"`` with a GPU: torch on CUDA, else ONNX Runtime's CUDA provider, else the CPU.
    ``"auto"`` without: ONNX Runtime with ``threads`` intra-op threads (its default would use
    every core of the machine, and workers share the machine).
    """
    from ._optional import available  # noqa: PLC0415

    ort_ok = available("onnxruntime")[0]
    if backend != "auto":
        return backend, ({"threads": threads} if backend == "onnxruntime" else {})
    if has_gpu:
        from .backends import backend_status  # noqa: PLC0415

        status = {name: (ok, why) for name, ok, why in backend_status()}
        if status["torch"][0] and "CUDA" in status["torch"][1]:
            return "torch", {"device": "cuda"}
        if ort_ok:
            from .backends.onnxruntime_backend import gpu_providers  # noqa: PLC0415

            gp = gpu_providers()
            if gp:
                return "onnxruntime", {"providers": [*gp, "CPUExecutionProvider"]}
    if ort_ok:
        return "onnxruntime", {"threads": threads}
    return "auto", {}


def read_clicks(path: str) -> list[dict[str, Any]]:
    """Clicks JSON: ``{"frame": int, "points": [[x, y], ...], "labels": [...]}`` or a list of such."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"clicks file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"clicks file '{path}' cannot be read as JSON ({exc})") from exc
    entries = data if isinstance(data, list) else [data]
    if not entries:
        raise InputError(f"clicks file '{path}' is an empty list; expected at least one click entry")
    for i, e in enumerate(entries):
        if (not isinstance(e, dict) or not isinstance(e.get("frame"), int) or isinstance(e.get("frame"), bool)
                or not isinstance(e.get("points"), list) or not isinstance(e.get("labels"), list)
                or len(e["points"]) != len(e["labels"]) or not e["points"]):
            raise InputError(f"clicks file '{path}' entry {i}: expected {{\"frame\": int, \"points\": [[x, y], ...], "
                             "\"labels\": [...]}} with one label per point")
    return entries


def publish(staging: Path, final: Path) -> None:
    """Move the finished folder ``staging`` to ``final``, swapping out an older ``final`` whole."""
    if final.exists() and not final.is_dir():
        raise InputError(f"output '{final}' exists and is not a folder")
    if final.exists():
        trash = temp_name(final, "trash")
        os.rename(final, trash)
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, final)


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return msg if msg and isinstance(exc, InputError) else f"{type(exc).__name__}: {msg}".rstrip(": ")


class BatchWorker:
    """Segments videos into ``<out_dir>/<id>/`` with one model, loaded once.

    options: ``model``, ``backend``, ``upsample``, ``k``, ``online_adaptation``,
    ``recent_frames`` (see :class:`pml_rt.batch.BatchOptions`). threads: CPU threads this
    worker may use. crash_once: test hook folder (see ``CRASH_ONCE_ENV``).
    """

    def __init__(self, out_dir: str, options: dict[str, Any], threads: int = 1, has_gpu: bool | None = None,
                 crash_once: str | None = None):
        # Ray set OMP_NUM_THREADS (= the actor's num_cpus) before numpy loaded; these cap the
        # pools of libraries loaded from here on, so workers sharing a machine don't fight.
        os.environ.update(thread_env(threads))
        from .segmenter import Segmenter  # noqa: PLC0415

        self.out_dir = Path(out_dir)
        self.options = dict(options)
        self.crash_once = crash_once
        if has_gpu is None:
            has_gpu = _ray_gpus() > 0
        name, backend_options = choose_backend(self.options["backend"], threads, has_gpu)
        self.segmenter = Segmenter(self.options["model"], backend=name, **backend_options)
        cfg = get_model_config(self.options["model"])
        # The model's identity in ledger keys: its name and its file's content.
        self.model_id = {"name": cfg.name, "sha256": hash_file(cfg.path) if cfg.path.is_file() else None}
        self.key_options = {k: self.options[k] for k in ("upsample", "k", "online_adaptation", "recent_frames")}
        self.key_options["pml_rt"] = __version__
        self.where = f"{platform.node()} pid {os.getpid()}"

    def describe(self) -> str:
        return f"{self.where}: {self.segmenter!r}"

    def key(self, item: BatchItem) -> str:
        return input_key(item, self.key_options, self.model_id)

    def process(self, item: BatchItem | dict[str, Any], done_key: str | None = None) -> dict[str, Any]:
        """Segment one video unless ``done_key`` equals its key; return the ledger row.

        Row: ``id``, ``status`` ("done", "failed" or "skipped"), ``key``, ``frames``,
        ``seconds`` (wall), ``cpu_seconds``, ``error`` (one line) and ``worker``. Never raises for a bad video.
        """
        if isinstance(item, dict):
            item = BatchItem(**item)
        t0, c0 = time.perf_counter(), time.process_time()
        row: dict[str, Any] = {"id": item.id, "video": item.video, "worker": self.where, "key": None}
        try:
            row["key"] = key = self.key(item)
            if done_key is not None and key == done_key:
                return {**row, "status": "skipped", "seconds": round(time.perf_counter() - t0, 3)}
            self._maybe_crash(item.id)
            row["frames"] = self._segment(item)
            row.update(status="done", out=item.id)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, the batch goes on
            row.update(status="failed", error=_one_line(exc))
        row["seconds"] = round(time.perf_counter() - t0, 3)
        row["cpu_seconds"] = round(time.process_time() - c0, 3)  # this process, all threads
        return row

    def _segment(self, item: BatchItem) -> int:
        from .pipeline import segment_to_folder  # noqa: PLC0415

        final = self.out_dir / item.id
        staging = temp_name(final, "staging")
        try:
            if item.mask is not None:
                res = segment_to_folder(self.segmenter, item.video, item.mask, staging, mask_frame=item.mask_frame,
                                        upsample=self.options["upsample"], k=self.options["k"],
                                        online_adaptation=self.options["online_adaptation"], progress=False,
                                        propagate_options=_propagate_options(self.options))
                frames = res.num_frames
            else:
                frames = self._segment_clicks(item, staging)
            publish(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return frames

    def _segment_clicks(self, item: BatchItem, staging: Path) -> int:
        from ._optional import available  # noqa: PLC0415
        from .io import write_masks  # noqa: PLC0415

        entries = read_clicks(item.clicks)  # type: ignore[arg-type]
        ok, why = available("pml_rt.session")
        if not ok:
            raise InputError(f"clicks rows need pml_rt.session, which is not available here ({why})")
        embedded = self.segmenter.embed(item.video, progress=False)
        session = embedded.session(**_session_options(self.options))
        for e in entries:
            session.add_clicks(embedded.check_frame(e["frame"]), e["points"], e["labels"])
        write_masks(staging, session.masks(), embedded.frame_names, progress=False)
        return embedded.num_frames

    def _maybe_crash(self, video_id: str) -> None:
        if not self.crash_once:
            return
        marker = Path(self.crash_once) / video_id  # holds how many attempts die (empty: 1)
        try:
            left = int(marker.read_text() or 1)
        except (FileNotFoundError, ValueError):
            return
        if left > 1:
            marker.write_text(str(left - 1))
        else:
            marker.unlink()  # the next attempt finds no marker and does the work
        os._exit(17)

    def close(self) -> None:
        self.segmenter.close()


def _propagate_options(options: dict[str, Any]) -> dict[str, Any]:
    rf = options.get("recent_frames")
    return {} if rf is None else {"recent_frames": rf}


def _session_options(options: dict[str, Any]) -> dict[str, Any]:
    # Clicks keep the session's own k (1, as the paper does for clicks); ``k`` is for propagation.
    return {"upsample": options["upsample"]}


def _ray_gpus() -> int:
    try:
        import ray  # noqa: PLC0415

        return len(ray.get_gpu_ids()) if ray.is_initialized() else 0
    except Exception:  # noqa: BLE001 - not in a Ray worker
        return 0
