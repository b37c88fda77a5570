"""Background work for the embedding map: numba's compilation warmed when the app starts, UMAP maps computed
in a thread while the page shows PCA.

Both are held by ``st.cache_resource``, so one server process starts each job once and every session sees
its progress. The threads call analysis code only (no Streamlit call runs off the script thread).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import streamlit as st

from analysis.maps.embedding_map import MapParams, compute_map
from analysis.runs.folder import Run

WARM_POINTS = 400
WARM_DIM = 16
#: Seconds the warm-up waits after the app starts before it compiles (unless the map page needs it sooner).
WARM_DELAY_S = 8.0


@dataclass
class Job:
    """A background computation's state, read by the page (written by its thread only).

    Attributes
    ----------
    label : str
        What runs, for the progress bar.
    fraction : float
        Done so far, in [0, 1].
    message : str
        The last progress message.
    started : float
        ``time.perf_counter()`` at the start.
    finished : float or None
        ``time.perf_counter()`` at the end, None while running.
    error : str
        The failure's message ('' when none).
    result : object
        What the job produced (a map table), None until done.
    done : threading.Event
        Set when the job has finished (or failed).
    hurry : threading.Event
        Set when someone waits for this job: a job that starts late (the warm-up) starts at once.
    """

    label: str
    fraction: float = 0.0
    message: str = ""
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    error: str = ""
    result: object = None
    done: threading.Event = field(default_factory=threading.Event)
    hurry: threading.Event = field(default_factory=threading.Event)

    def update(self, fraction: float, message: str = "") -> None:
        """Record progress (called from the job's thread)."""
        self.fraction = float(min(max(fraction, 0.0), 1.0))
        if message:
            self.message = message

    def elapsed(self) -> float:
        """Seconds since the start (until the end when finished)."""
        return (self.finished or time.perf_counter()) - self.started


def _run_job(job: Job, work) -> None:
    try:
        job.result = work(job)
    except Exception as exc:  # noqa: BLE001 - the page shows the failure; the thread must not die silently
        job.error = f"{type(exc).__name__}: {exc}"
    finally:
        job.finished = time.perf_counter()
        job.fraction = 1.0
        job.done.set()


def _start(job: Job, work) -> Job:
    threading.Thread(target=_run_job, args=(job, work), name=f"negscope-{job.label}", daemon=True).start()
    return job


def _warm(job: Job) -> float:
    """A tiny seeded UMAP: numba compiles (or loads from its on-disk cache in the workspace) every kernel."""
    from analysis.maps.embedding_map import umap_2d

    job.update(0.0, "waiting for the first page to render")
    job.hurry.wait(timeout=WARM_DELAY_S)  # the first page a user opens gets the CPU first (2 cores are few)
    x = np.random.default_rng(0).normal(size=(WARM_POINTS, WARM_DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    job.update(0.1, "compiling the UMAP kernels (once per install; kept in the workspace's numba cache)")
    umap_2d(x, n_neighbors=10, n_epochs=20, seed=0)
    return job.elapsed()


@st.cache_resource(show_spinner=False)
def umap_warmup() -> Job:
    """Start (once per server process) the background compilation of UMAP's numba kernels."""
    return _start(Job(label="umap-warmup"), _warm)


@st.cache_resource(max_entries=8, show_spinner=False)
def map_job(run_path: str, key: str, _run: Run, _params: MapParams) -> Job:
    """Start (once per run folder and map parameters) computing a map in the background.

    Parameters
    ----------
    run_path : str
        The run folder (cache key).
    key : str
        ``MapParams.key()`` (cache key).
    _run : Run
        The run.
    _params : MapParams
        The map to compute; the result is also written to the run folder's map cache.

    Returns
    -------
    Job
        ``result`` is the map table once ``done`` is set.
    """
    warm = umap_warmup()

    def work(job: Job) -> pd.DataFrame:
        if not warm.done.is_set():
            warm.hurry.set()
            job.update(0.0, "compiling the UMAP kernels (once per install; kept in the workspace's numba cache)")
            warm.done.wait()
        job.update(0.02, f"UMAP of {len(_run.items):,} items: nearest neighbours")
        return compute_map(_run, _params, progress=lambda f, m: job.update(0.02 + 0.98 * f, m))

    return _start(Job(label=f"umap {key}"), work)
