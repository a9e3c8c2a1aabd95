"""Run the nearest-neighbour search on a worker thread while the caller upsamples and writes.

Why: on the CPU the search spends most of its time in ONNX Runtime and NumPy calls that
release the GIL, while upsampling, PNG writing and frame decoding are largely
single-threaded, so the two overlap on 2 cores: ``segment_to_folder`` on parkour (100
frames, 2 cores) propagates and writes in 61-64 against 68-76 ms a frame (docs/RESULTS.md).
(Decoding ahead of the embedder was tried too: no gain on 2 cores, where ONNX Runtime
already keeps both busy.)

``PML_RT_OVERLAP=0`` turns it off (everything on the caller's thread, in the same order);
the masks are the same either way, and the tests check it.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Iterator

import numpy as np


def overlap_enabled() -> bool:
    """Whether the search runs on a worker thread (``PML_RT_OVERLAP``, default 1)."""
    value = os.environ.get("PML_RT_OVERLAP", "1")
    if value not in ("0", "1"):
        raise ValueError(f"PML_RT_OVERLAP must be 0 or 1, got {value!r}")
    return value == "1"


class SearchAhead:
    """Drains ``run()`` (yields ``(t, scores)``) on a worker thread into ``store``.

    store: :class:`pml_rt.cache.SpillStore`-like (``store[t] = a``, ``store.pop(t)``), used
    under this object's lock only. :meth:`take` waits for frame t's scores (float16) and
    re-raises, on the caller's thread, whatever the search raised. :meth:`stop` (also on
    leaving a ``with`` block) asks the worker to end after its current frame and waits.
    """

    def __init__(self, run: Callable[[], Iterator[tuple[int, Any]]], store: Any):
        self._run, self._store = run, store
        self._cond = threading.Condition()
        self._ready: set[int] = set()
        self._error: BaseException | None = None
        self._finished = False
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="pml-rt-search", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for t, s in self._run():
                s16 = s.astype(np.float16)
                with self._cond:
                    if self._stopping:
                        return
                    self._store[t] = s16
                    self._ready.add(int(t))
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the caller's thread by take()
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def take(self, t: int) -> np.ndarray:
        """Frame t's scores (float16), once the search has made them."""
        with self._cond:
            while t not in self._ready:
                if self._error is not None:
                    raise self._error
                if self._finished:
                    raise RuntimeError(f"the search ended without making frame {t}'s scores")
                self._cond.wait()
            self._ready.discard(t)
            return self._store.pop(t)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
        self._thread.join()

    def __enter__(self) -> "SearchAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

