"""Background work for the embedding map: numba's compilation warmed when the app starts, UMAP maps computed
in a thread while the page shows PCA.

Both are held by ``st.cache_resource``, so one server process starts each job once and every session sees
its progress. The threads call analysis code only (no Streamlit call runs off the script thread). Each job
carries a :class:`~ui.map_progress.StagedProgress`: numba's compilation (tens of seconds, reporting nothing)
moves the bar by the time spent against its measured duration, the layout by UMAP's epochs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.maps.embedding_map import MapParams, compute_map
from analysis.runs.folder import Run
from analysis.runs.workspace import workspace_dir
from ui.map_progress import Stage, StagedProgress

WARM_POINTS = 400
WARM_DIM = 16
#: Seconds the warm-up waits after the app starts before it compiles (unless the map page needs it sooner).
WARM_DELAY_S = 8.0
#: How often a map job waiting for the warm-up copies the warm-up's progress.
POLL_S = 0.25
# Typical durations of the warm-up's two steps (2 cores, load average 2-3, 2026-12-01): importing numba and
# umap-learn with an empty numba cache 18.5 s (2.7 s from the workspace's cache), then the graph and layout
# kernels on a tiny map 7.1 s (0.1 s from the cache).
IMPORT_FIRST_S = 18.0
KERNELS_FIRST_S = 7.0
IMPORT_CACHED_S = 3.0
KERNELS_CACHED_S = 0.5
LAYOUT_LABEL = "optimising the layout"  # as umap_2d says it
#: umap_2d's progress fractions: the neighbour graph below 0.3, the layout's epochs above 0.35.
_GRAPH_END, _LAYOUT_START = 0.3, 0.35


def numba_cache_filled() -> bool:
    """Whether numba's on-disk cache (``NUMBA_CACHE_DIR``, default the workspace's) already holds compiled kernels."""
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or workspace_dir() / "numba_cache")
    try:
        return any(folder.rglob("*.nbi"))
    except OSError:
        return False


def warmup_stages(*, cached: bool) -> list[Stage]:
    """The warm-up's steps: importing numba and umap-learn, then the kernels of a tiny map (short labels: a map
    job waiting for the warm-up shows them after its own "compiling UMAP's numba kernels")."""
    if cached:
        return [
            Stage("import", "numba and umap-learn, from the workspace's cache", 0.8, IMPORT_CACHED_S),
            Stage("kernels", "checking the kernels on a tiny map", 0.2, KERNELS_CACHED_S),
        ]
    return [
        Stage("import", "importing numba and umap-learn", 0.7, IMPORT_FIRST_S),
        Stage("kernels", "the graph and layout kernels", 0.3, KERNELS_FIRST_S),
    ]


def map_stages(n_items: int, *, compile_first: bool, cached: bool) -> list[Stage]:
    """A UMAP map's steps: the compilation (when the warm-up has not finished), the neighbour graph, the fuzzy
    graph, the layout's epochs (these report their own progress).

    Parameters
    ----------
    n_items : int
        Items on the map (the graph steps' typical durations grow with it).
    compile_first : bool
        Whether the job waits for numba's compilation first.
    cached : bool
        Whether numba's cache already holds the kernels (a much shorter first step).
    """
    graph_s, fuzzy_s, layout_s = 1.0 + n_items / 20_000, 0.5 + n_items / 50_000, 1.0 + n_items / 4_000
    stages = []
    if compile_first:
        compile_s = IMPORT_CACHED_S + KERNELS_CACHED_S if cached else IMPORT_FIRST_S + KERNELS_FIRST_S
        label = "loading UMAP's compiled kernels" if cached else "compiling UMAP's numba kernels (first time only)"
        stages.append(Stage("compile", label, compile_s, compile_s))
    # each step's share of the bar is its typical duration (UMAP of 200k items took 62 s here, the layout most)
    stages += [
        Stage("graph", f"the nearest neighbours of {n_items:,} items (faiss)", graph_s, graph_s),
        Stage("fuzzy", "UMAP's fuzzy neighbour graph", fuzzy_s, fuzzy_s),
        Stage("layout", LAYOUT_LABEL, layout_s),  # its epochs report their own progress
    ]
    return stages


def _layout_detail(message: str) -> str:
    """umap_2d's layout message without the stage's own label: "optimising the layout (200 epochs)" -> "200 epochs"."""
    detail = message.removeprefix(LAYOUT_LABEL).strip()
    if detail.startswith("(") and detail.endswith(")") and detail.count("(") == 1:
        detail = detail[1:-1]
    return detail


def follow_umap(progress: StagedProgress) -> Callable[[float, str], None]:
    """A ``progress(fraction, message)`` callback for :func:`compute_map` that moves ``progress`` through the
    stages of :func:`map_stages` (umap_2d: neighbour graph up to 0.3, layout epochs from 0.35 on)."""

    def report(fraction: float, message: str) -> None:
        if fraction < _GRAPH_END:
            progress.enter("graph")
            progress.report(fraction / _GRAPH_END)
        elif fraction <= _LAYOUT_START:
            progress.enter("fuzzy")
        else:
            progress.enter("layout")
            progress.report((fraction - _LAYOUT_START) / (1.0 - _LAYOUT_START), _layout_detail(message))

    return report


@dataclass
class Job:
    """A background computation's state, read by the page (written by its thread only).

    Attributes
    ----------
    label : str
        What runs (the thread's name).
    progress : StagedProgress
        Its steps and how far along it is (:meth:`StagedProgress.view` for the bar).
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
    progress: StagedProgress
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    error: str = ""
    result: object = None
    done: threading.Event = field(default_factory=threading.Event)
    hurry: threading.Event = field(default_factory=threading.Event)

    def elapsed(self) -> float:
        """Seconds since the start (until the end when finished)."""
        return (self.finished or time.perf_counter()) - self.started


def _run_job(job: Job, work: Callable[[Job], object]) -> None:
    try:
        job.result = work(job)
    except Exception as exc:  # noqa: BLE001 - the page shows the failure; the thread must not die silently
        job.error = f"{type(exc).__name__}: {exc}"
    finally:
        job.finished = time.perf_counter()
        job.progress.finish()
        job.done.set()


def _start(job: Job, work: Callable[[Job], object]) -> Job:
    threading.Thread(target=_run_job, args=(job, work), name=f"negscope-{job.label}", daemon=True).start()
    return job


def _warm(job: Job) -> float:
    """A tiny seeded UMAP: numba compiles (or loads from its on-disk cache in the workspace) every kernel."""
    from analysis.maps.embedding_map import import_umap, umap_2d

    job.hurry.wait(timeout=WARM_DELAY_S)  # the first page a user opens gets the CPU first (2 cores are few)
    job.progress.enter("import")
    import_umap()
    job.progress.enter("kernels")
    x = np.random.default_rng(0).normal(size=(WARM_POINTS, WARM_DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    umap_2d(
        x,
        n_neighbors=10,
        n_epochs=20,
        seed=0,
        progress=lambda f, m: job.progress.report(max(f - _LAYOUT_START, 0.0) / (1.0 - _LAYOUT_START)),
    )
    return job.elapsed()


@st.cache_resource(show_spinner=False)
def umap_warmup() -> Job:
    """Start (once per server process) the background compilation of UMAP's numba kernels."""
    stages = warmup_stages(cached=numba_cache_filled())
    return _start(Job(label="umap-warmup", progress=StagedProgress(stages)), _warm)


def _map_work(warm: Job, run: Run, params: MapParams) -> Callable[[Job], pd.DataFrame]:
    def work(job: Job) -> pd.DataFrame:
        if not warm.done.is_set():
            warm.hurry.set()
            job.progress.enter("compile")
            while not warm.done.wait(POLL_S):
                seen = warm.progress.view()
                job.progress.report(seen.fraction, seen.label)
        job.progress.enter("graph")
        return compute_map(run, params, progress=follow_umap(job.progress))

    return work


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
        ``result`` is the map table once ``done`` is set; ``progress`` its steps.
    """
    warm = umap_warmup()
    stages = map_stages(len(_run.items), compile_first=not warm.done.is_set(), cached=numba_cache_filled())
    return _start(Job(label=f"umap {key}", progress=StagedProgress(stages)), _map_work(warm, _run, _params))
