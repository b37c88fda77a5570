"""2-D maps of a run's embeddings: PCA (instant) and UMAP over one faiss k-nearest-neighbour graph.

UMAP is fed a neighbour graph that faiss computes (exact for small runs; above, an IVF index whose probe
depth is raised until its recall@k, measured against exact search on a sample, reaches 0.95) through
umap-learn's ``precomputed_knn`` instead of letting it run NN-descent, and the layout is optimised for fewer
epochs at a lower learning rate from a PCA start (:func:`auto_schedule`). umap-learn (and numba) are imported
only when a UMAP map is asked for; numba's compiled code is cached on disk under
``workspace_dir() / "numba_cache"`` so that a new process does not compile again. Maps are cached in the run
folder (``RUN/map_<method>_<key>.parquet``, ``key`` a hash of the parameters), so every page and CLI call
after the first reads them back.

Large runs: above ``MAX_UMAP_FIT`` items the layout (whose cost grows with the items times the epochs, on one
core when seeded) is fitted on a seeded random sample of that many items, whose neighbours among the sample are
searched over the sample by the one search rule (:func:`sample_graph`: IVF tuned to recall@10 >= 0.95), and every
other item is placed at the similarity-weighted mean position of its nearest (up to ``PLACE_NEIGHBOURS``)
already-placed neighbours in the full neighbour graph (the run's shared graph), repeated until all are placed
(:func:`place_by_neighbours`); :func:`fit_note` says so, and the map's ``attrs["fit_sample"]`` holds the count.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import faiss
import numpy as np
import pandas as pd

from analysis.choices import INDEX_KINDS, INIT_METHODS, MAP_METHODS
from analysis.errors import NegScopeError
from analysis.runs.folder import NEGATIVE_SOURCES, Run
from analysis.runs.workspace import workspace_dir
from analysis.search.exact import knn, knn_graph

KNN_METHODS = INDEX_KINDS
MAP_COLUMNS = ("item_id", "x", "y")
ROLES = ("anchor", "positive", "negative", "other")
#: Recall@k an approximate neighbour index must reach on a sample (its search depth is raised until it does).
KNN_TARGET_RECALL = 0.95
#: Version of the map recipe; bump when a change would alter cached maps.
_RECIPE = 5
#: Items above which UMAP is fitted on a seeded sample of this many and the rest placed by their neighbours.
MAX_UMAP_FIT = 50_000
#: Placed neighbours whose positions are averaged for an item outside the fitted sample.
PLACE_NEIGHBOURS = 5

Progress = Callable[[float, str], None]


# --------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class MapParams:
    """Everything that determines a map (and its cache key).

    Attributes
    ----------
    method : {"umap", "pca"}
        The projection.
    n_neighbors : int
        UMAP: size of each item's neighbourhood (itself included, as in umap-learn).
    min_dist : float
        UMAP: how tightly points may pack in the map.
    n_epochs : int or None
        UMAP: optimisation epochs; None picks them from N (:func:`auto_schedule`).
    learning_rate : float or None
        UMAP: initial SGD step; None picks it from N (:func:`auto_schedule`).
    init : {"pca", "spectral"}
        UMAP: starting layout.
    knn : {"auto", "exact", "ivf", "hnsw"}
        UMAP: how the neighbour graph is found (``auto``: :func:`analysis.search.rule.choose_kind`).
    seed : int or None
        Random seed; a seeded UMAP is deterministic but single-threaded, None lets numba use all cores.
    """

    method: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    n_epochs: int | None = None
    learning_rate: float | None = None
    init: str = "pca"
    knn: str = "auto"
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.method not in MAP_METHODS:
            raise NegScopeError(f"unknown map method {self.method!r}; expected one of {', '.join(MAP_METHODS)}")
        if self.knn not in KNN_METHODS:
            raise NegScopeError(f"unknown kNN method {self.knn!r}; expected one of {', '.join(KNN_METHODS)}")
        if self.init not in INIT_METHODS:
            raise NegScopeError(f"unknown UMAP init {self.init!r}; expected one of {', '.join(INIT_METHODS)}")
        if not 2 <= int(self.n_neighbors) <= 200:
            raise NegScopeError(f"n_neighbors must be between 2 and 200, got {self.n_neighbors}")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise NegScopeError(f"min_dist must be between 0 and 1, got {self.min_dist}")
        if self.n_epochs is not None and not 1 <= int(self.n_epochs) <= 5000:
            raise NegScopeError(f"n_epochs must be between 1 and 5000, got {self.n_epochs}")
        if self.learning_rate is not None and not 0.0 < float(self.learning_rate) <= 10.0:
            raise NegScopeError(f"learning_rate must be in (0, 10], got {self.learning_rate}")

    def key(self) -> str:
        """Short hash of the parameters that matter for ``method`` (names the cache file)."""
        fields = asdict(self)
        if self.method == "pca":
            fields = {"method": "pca", "seed": self.seed}
        text = json.dumps({**fields, "recipe": _RECIPE}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def auto_schedule(n: int) -> tuple[int, float]:
    """Optimisation epochs and initial learning rate for ``n`` points started from a PCA layout.

    umap-learn runs 500 epochs up to 10k points and 200 above, at learning rate 1, from a spectral start.
    Up to 10k points we keep 200 epochs at rate 1 (a second or two). Above, 30 epochs at rate 0.25: a PCA
    start is already a coherent layout, and a small step refines it instead of scrambling it first. On
    clustered data of 15-20k points this came within 0.01 of umap-learn's default map in trustworthiness
    (k = 10) with 15% of its epochs, where 60 epochs at rate 1 lost up to 0.018 (``benchmarks/map.py``
    prints the comparison; the layout costs time in proportion to the epochs).
    """
    return (200, 1.0) if n <= 10_000 else (30, 0.25)


def auto_epochs(n: int) -> int:
    """The epochs of :func:`auto_schedule`."""
    return auto_schedule(n)[0]


# --------------------------------------------------------------------------------------------- projections


def pca_2d(vectors: np.ndarray, *, seed: int | None = 0) -> np.ndarray:
    """Project rows onto their first two principal components.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float rows.
    seed : int, optional
        Fixes the sign of each component (the direction with the larger positive tail is positive).

    Returns
    -------
    numpy.ndarray
        (N, 2) float32 coordinates, centred.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n, d = x.shape
    out = np.zeros((n, 2), dtype=np.float64)
    if n < 2 or d == 0:
        return out.astype(np.float32)
    centred = x - x.mean(axis=0)
    # The D x D covariance is cheap for embedding dims (D <= a few thousand) and exact.
    if d <= 4096:
        cov = centred.T @ centred / max(n - 1, 1)
        values, vecs = np.linalg.eigh(cov)
        comps = vecs[:, ::-1][:, :2].T
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        comps = vt[:2]
    proj = centred @ comps.T
    # Deterministic sign: make the largest-magnitude coordinate of each axis positive.
    flip = np.sign(proj[np.abs(proj).argmax(axis=0), np.arange(proj.shape[1])])
    flip[flip == 0] = 1.0
    out[:, : proj.shape[1]] = proj * flip
    return out.astype(np.float32)


def _numba_cache_dir() -> Path:
    path = workspace_dir() / "numba_cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def import_umap() -> ModuleType:
    """Import umap-learn with numba's on-disk cache in the workspace, and cache umap's own kernels too.

    ``NUMBA_CACHE_DIR`` is pointed at ``workspace_dir() / "numba_cache"`` (unless the user set it) before
    numba is first imported. umap-learn compiles most of its kernels without ``cache=True``; caching is
    switched on for those too, so a new process loads the machine code instead of compiling it again.

    Raises
    ------
    NegScopeError
        When umap-learn is not installed.
    """
    if "umap" in sys.modules and getattr(sys.modules["umap"], "_negscope_cached", False):
        return sys.modules["umap"]
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(_numba_cache_dir())
    if "numba" in sys.modules:  # imported earlier by someone else: make it read the variable again
        from numba.core import config as numba_config

        numba_config.reload_config()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
            import umap.layouts
            import umap.spectral
            import umap.umap_
    except ImportError as exc:  # pragma: no cover - umap-learn is a declared dependency
        raise NegScopeError("UMAP maps need umap-learn: pip install umap-learn") from exc
    _enable_numba_caching([umap.umap_, umap.layouts, umap.spectral, sys.modules.get("umap.utils")])
    umap._negscope_cached = True  # type: ignore[attr-defined]
    return umap


def _enable_numba_caching(modules: list[ModuleType | None]) -> None:
    """Switch on numba's on-disk cache for every jitted function of ``modules`` that lacks it."""
    from numba.core.dispatcher import Dispatcher

    for module in modules:
        if module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and type(value._cache).__name__ == "NullCache":
                try:
                    value.enable_caching()
                except Exception:  # noqa: BLE001 - a function numba cannot cache simply stays uncached
                    continue


def umap_knn(
    vectors: np.ndarray,
    n_neighbors: int,
    *,
    method: str = "auto",
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """The neighbour graph in umap-learn's ``precomputed_knn`` form: each row itself first, at distance 0.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 rows, L2-normalised.
    n_neighbors : int
        Columns of the result (itself included, as umap-learn counts them).
    method : {"auto", "exact", "ivf", "hnsw"}
        Exact faiss search, or an approximate faiss index (IVF or HNSW, :func:`analysis.search.index.build_index`)
        whose search depth is raised until its recall@k on a sample of rows reaches ``KNN_TARGET_RECALL``.
        ``auto``: the one rule, :func:`analysis.search.rule.choose_kind` on the work N x N x D (an IVF index
        that would need more than 1/8 of its cells probed falls back to exact search).
    seed : int
        Seeds the IVF k-means and the recall sample.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    ids : numpy.ndarray
        (N, n_neighbors) int64, ``ids[:, 0] == arange(N)``.
    dists : numpy.ndarray
        (N, n_neighbors) float32 Euclidean distances ``sqrt(2 - 2 sim)`` (the rows are unit vectors), ascending;
        ``inf`` where an approximate search found too few.
    description : str
        How the neighbours were found (and the measured recall of an approximate index).
    """
    from analysis.search.index import build_index
    from analysis.search.rule import resolve_kind

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    k = int(min(n_neighbors, n)) - 1
    chosen = resolve_kind(method, n, n, d)  # checks the name; "auto" -> the rule
    report = progress or (lambda _f: None)
    index = None
    description = f"exact {k}-NN (faiss IndexFlatIP)"
    offset = {"ivf": 0.15, "hnsw": 0.5}.get(chosen, 0.0)
    if chosen != "exact":
        # The IVF probe depth starts low: on clustered embeddings a few cells already reach the target recall,
        # and the search time grows with the depth.
        built = build_index(
            vectors,
            kind=method,
            n_queries=n,
            recall_k=k + 1,
            target_recall=KNN_TARGET_RECALL,
            start_depth=2 if chosen == "ivf" else None,
            seed=int(seed or 0),
            progress=lambda f: report(offset * f),
        )
        index = built.index
        if built.kind == "exact":  # auto, and IVF was no faster on this data
            description += f"; {built.note}"
        else:
            description = f"approximate {k}-NN: {built.describe()}"
    report(offset)
    sims, ids = knn_graph(vectors, k, index=index, progress=lambda f: report(offset + (1.0 - offset) * f))
    dists = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0)).astype(np.float32)
    dists[ids < 0] = np.inf  # umap-learn skips -1 neighbours
    ids = np.hstack([np.arange(n, dtype=np.int64)[:, None], ids])
    dists = np.hstack([np.zeros((n, 1), dtype=np.float32), dists])
    return ids, dists, description


def umap_2d(
    vectors: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    learning_rate: float | None = None,
    init: str = "pca",
    knn_method: str = "auto",
    seed: int | None = 0,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    max_fit: int | None = MAX_UMAP_FIT,
    progress: Progress | None = None,
) -> np.ndarray:
    """UMAP of unit-norm rows, from a faiss neighbour graph handed to umap-learn.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 rows, L2-normalised (cosine similarity = dot product).
    n_neighbors, min_dist, n_epochs, learning_rate, init, seed
        See :class:`MapParams`.
    knn_method : {"auto", "exact", "ivf", "hnsw"}
        See :class:`MapParams` (its ``knn``).
    neighbours : tuple of numpy.ndarray, optional
        ``(rows, sims)``, (N, >= n_neighbors - 1) each row's nearest other rows and their similarities, already
        computed (the run's shared graph, :func:`analysis.search.graph.run_graph`); default: searched here.
    max_fit : int, optional
        Above this many rows, UMAP is fitted on a seeded random sample of ``max_fit`` rows and the others are
        placed by :func:`place_by_neighbours` on the full neighbour graph; None: every row is fitted.
    progress : callable, optional
        ``progress(fraction, message)``; the neighbour graph is the first 30%, the layout epochs the rest.

    Returns
    -------
    numpy.ndarray
        (N, 2) float32 coordinates.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    if n < 4:
        return pca_2d(vectors, seed=seed)
    k = int(min(n_neighbors, n - 1))
    report = progress or (lambda f, m: None)
    if max_fit is not None and n > int(max_fit) >= 4:
        return _umap_on_sample(
            vectors,
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            n_epochs=n_epochs,
            learning_rate=learning_rate,
            init=init,
            knn_method=knn_method,
            seed=seed,
            neighbours=neighbours,
            max_fit=int(max_fit),
            report=report,
        )
    report(0.0, "finding neighbours (faiss)")
    if neighbours is not None and neighbours[0].shape[1] >= k - 1:
        rows, sims = neighbours[0][:, : k - 1], neighbours[1][:, : k - 1]
        dists = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0)).astype(np.float32)
        dists[rows < 0] = np.inf
        ids = np.hstack([np.arange(n, dtype=np.int64)[:, None], rows])
        dists = np.hstack([np.zeros((n, 1), dtype=np.float32), dists])
    else:
        ids, dists, _ = umap_knn(
            vectors, k, method=knn_method, seed=seed or 0, progress=lambda f: report(0.3 * f, "finding neighbours (faiss)")
        )
    report(0.3, "loading UMAP")
    umap = import_umap()
    auto_epochs_n, auto_rate = auto_schedule(n)
    epochs = int(n_epochs) if n_epochs is not None else auto_epochs_n
    rate = float(learning_rate) if learning_rate is not None else auto_rate
    start: Any = init
    if init == "pca":
        # As umap-learn's own "pca" start: scaled to at most 10 in each axis, with tiny noise that keeps
        # duplicate items apart.
        start = pca_2d(vectors, seed=seed).astype(np.float64)
        start *= 10.0 / max(float(np.abs(start).max()), 1e-12)
        start += np.random.default_rng(seed).normal(scale=1e-4, size=start.shape)
        start = start.astype(np.float32)
    reducer = umap.UMAP(
        n_neighbors=k,
        min_dist=float(min_dist),
        n_epochs=epochs,
        learning_rate=rate,
        init=start,
        random_state=seed,
        n_jobs=1 if seed is not None else -1,
        precomputed_knn=(ids, dists, None),
        low_memory=True,
        verbose=False,
        tqdm_kwds={
            "disable": progress is None,
            "file": _EpochReporter(lambda f: report(0.35 + 0.65 * f, f"optimising the layout ({epochs} epochs)")),
            "bar_format": "{n}/{total}\n",
            "mininterval": 0.25,
        },
    )
    report(0.35, f"optimising the layout ({epochs} epochs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = reducer.fit_transform(vectors)
    report(1.0, "done")
    coords = np.asarray(coords, dtype=np.float32)
    # Items cut off from every neighbourhood come back NaN: put them at the map's centre rather than lose them.
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        coords[bad] = np.nanmean(coords[~bad], axis=0) if (~bad).any() else 0.0
    return coords


def place_by_neighbours(
    coords: np.ndarray,
    placed: np.ndarray,
    rows: np.ndarray,
    sims: np.ndarray,
    *,
    per_item: int = PLACE_NEIGHBOURS,
) -> np.ndarray:
    """Give every unplaced item the weighted mean position of its nearest placed neighbours.

    Rounds: each unplaced item with a placed neighbour gets the mean position of its first ``per_item`` placed
    neighbours (in the graph's order, nearest first), weighted by their similarity (at least 1e-3); the items
    placed in a round count from the next round on (so the result does not depend on an item order). Items
    with no placed neighbour after all rounds go to the placed items' mean.

    Parameters
    ----------
    coords : numpy.ndarray
        (N, 2) float positions; rows of unplaced items are ignored.
    placed : numpy.ndarray
        (N,) bool, True for the items whose position is known (for example the fitted sample).
    rows, sims : numpy.ndarray
        (N, k) each item's neighbour rows (-1: none) and similarities, nearest first.
    per_item : int
        Placed neighbours averaged per item.

    Returns
    -------
    numpy.ndarray
        (N, 2) float32 positions of every item.
    """
    out = np.asarray(coords, dtype=np.float64).copy()
    done = np.asarray(placed, dtype=bool).copy()
    rows = np.asarray(rows, dtype=np.int64)
    sims = np.asarray(sims, dtype=np.float64)
    if not done.any():
        raise NegScopeError("no placed item to place the others by")
    while not done.all():
        todo = np.flatnonzero(~done)
        r = rows[todo]
        ok = (r >= 0) & done[np.maximum(r, 0)]
        # the first ``per_item`` placed neighbours of each row
        ok &= np.cumsum(ok, axis=1) <= per_item
        w = np.where(ok, np.maximum(sims[todo], 1e-3), 0.0)
        total = w.sum(axis=1)
        got = total > 0
        if not got.any():
            break
        pos = np.einsum("ik,ikd->id", w[got], out[np.maximum(r[got], 0)]) / total[got, None]
        out[todo[got]] = pos
        done[todo[got]] = True
    if not done.all():
        out[~done] = out[done].mean(axis=0)
    return out.astype(np.float32)


def sample_graph(
    vectors: np.ndarray, fit: np.ndarray, k: int, *, kind: str = "auto", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each sampled item's ``k`` nearest other sampled items, searched over the sample by the one search rule.

    ``kind="auto"`` (:func:`analysis.search.index.build_index`): exact search while the work is small, else an
    IVF index whose probe depth is raised until its recall@10, measured against exact search on sampled
    queries, reaches 0.95 (or exact search where IVF would be no faster). On the 100k benchmark's 50,000-item
    sample: IVF 512 cells, nprobe 8, recall@10 0.958, 3.2 s against 10.4 s exact. (Taking the candidates from
    the full graph's neighbours' neighbours instead reached only recall@14 0.87.)

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 unit rows.
    fit : numpy.ndarray
        (S,) sorted rows of the sample.
    k : int
        Neighbours kept per sampled item.
    kind : {"auto", "exact", "ivf", "hnsw", "ivfpq"}
        The search.
    seed : int
        Seed of the IVF training and of its recall sample.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (S, k) int64 positions in ``fit`` (never the item itself; -1 where an approximate search found fewer)
        and (S, k) float32 similarities, nearest first.
    """
    from analysis.search.index import build_index

    sample = np.ascontiguousarray(vectors[fit], dtype=np.float32)
    s = sample.shape[0]
    k = int(min(k, s - 1))
    index = build_index(sample, kind=kind, n_queries=s, seed=seed)
    sims, ids = index.search(sample, k + 1)
    own = ids == np.arange(s)[:, None]
    # drop the item itself (or, where duplicates or the search pushed it out of the top k + 1, the last column)
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones(ids.shape, dtype=bool)
    keep[np.arange(s), drop] = False
    rows = ids[keep].reshape(s, k).astype(np.int64)
    sims = sims[keep].reshape(s, k).astype(np.float32)
    return rows, np.where(rows >= 0, sims, 0.0).astype(np.float32)


def fit_note(n_fit: int, n: int) -> str:
    """One sentence for people saying the map was fitted on a sample (empty when it was not)."""
    if n_fit >= n:
        return ""
    return (
        f"UMAP fitted on a seeded random {n_fit:,} of the {n:,} items; every other item is placed at the "
        f"similarity-weighted mean position of its nearest placed neighbours (up to {PLACE_NEIGHBOURS})."
    )


def _umap_on_sample(
    vectors: np.ndarray,
    *,
    max_fit: int,
    neighbours: tuple[np.ndarray, np.ndarray] | None,
    seed: int | None,
    knn_method: str,
    report: Progress,
    **options: Any,
) -> np.ndarray:
    """:func:`umap_2d` of a seeded sample of ``max_fit`` rows, the rest placed by :func:`place_by_neighbours`."""
    n = vectors.shape[0]
    k = int(min(options["n_neighbors"], n - 1))
    if neighbours is None or neighbours[0].shape[1] < min(PLACE_NEIGHBOURS, k - 1):
        ids, dists, _ = umap_knn(
            vectors, k, method=knn_method, seed=seed or 0, progress=lambda f: report(0.2 * f, "finding neighbours (faiss)")
        )
        neighbours = (ids[:, 1:], (1.0 - 0.5 * dists[:, 1:].astype(np.float64) ** 2).astype(np.float32))
    fit = np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))
    report(0.2, f"finding the sample's neighbours among its {max_fit:,} items")
    fit_neighbours = sample_graph(vectors, fit, k - 1, kind=knn_method, seed=seed or 0)
    coords = np.zeros((n, 2), dtype=np.float32)
    coords[fit] = umap_2d(
        vectors[fit],
        knn_method=knn_method,
        seed=seed,
        max_fit=None,
        neighbours=fit_neighbours,
        progress=lambda f, m: report(0.2 + 0.75 * f, f"{m} ({max_fit:,} of {n:,} items)"),
        **options,
    )
    report(0.95, "placing the other items by their neighbours")
    placed = np.zeros(n, dtype=bool)
    placed[fit] = True
    out = place_by_neighbours(coords, placed, neighbours[0], neighbours[1])
    report(1.0, "done")
    return out


class _EpochReporter:
    """A file-like sink for umap-learn's tqdm bar (``bar_format="{n}/{total}"``) that reports the fraction."""

    def __init__(self, callback: Callable[[float], None]) -> None:
        self.callback = callback

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            done, _, total = part.strip().partition("/")
            if done.isdigit() and total.isdigit() and int(total) > 0:
                self.callback(int(done) / int(total))
        return len(text)

    def flush(self) -> None:
        return None


# --------------------------------------------------------------------------------------------- quality


def trustworthiness(
    vectors: np.ndarray,
    coords: np.ndarray,
    *,
    k: int = 10,
    sample: int | None = None,
    seed: int = 0,
    block_size: int = 512,
) -> float:
    """Trustworthiness of a map (Venna & Kaski), as ``sklearn.manifold.trustworthiness`` with Euclidean distances.

    .. math::
        T(k) = 1 - \\frac{2}{n k (2n - 3k - 1)} \\sum_i \\sum_{j \\in U_k(i)} (r(i, j) - k)

    where :math:`U_k(i)` are the map's k nearest neighbours of i that are not among its k nearest in the
    original space and :math:`r(i, j)` is the rank of j among i's neighbours in the original space.
    Unlike scikit-learn's version it never holds an (N, N) matrix, and with ``sample`` it averages over a
    random subset of the points i (each still ranked against all N points): an unbiased estimate of the
    full value at a fraction of the cost.

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) original rows.
    coords : numpy.ndarray
        (N, 2) map coordinates.
    k : int
        Neighbourhood size (must be below N / 2).
    sample : int, optional
        Number of points i to average over (all when None or >= N).
    seed : int
        Seed of the sample.
    block_size : int
        Points ranked at once.

    Returns
    -------
    float
        In [0, 1]; 1 means every map neighbour is a true neighbour.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(coords, dtype=np.float64)
    n = x.shape[0]
    if k >= n / 2:
        raise NegScopeError(f"trustworthiness needs k < N / 2 (k={k}, N={n})")
    rows = np.arange(n)
    if sample is not None and sample < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=int(sample), replace=False))
    map_nn = NearestNeighbors(n_neighbors=k).fit(y).kneighbors(y[rows], n_neighbors=k + 1, return_distance=False)
    # Drop each point itself from its map neighbours (or the farthest one when a duplicate came first).
    is_self = map_nn == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(len(rows)), drop] = False
    map_nn = map_nn[keep].reshape(len(rows), k)
    sq = np.einsum("ij,ij->i", x, x)
    penalty = 0.0
    for start in range(0, len(rows), block_size):
        block = rows[start : start + block_size]
        d2 = sq[block, None] - 2.0 * (x[block] @ x.T) + sq[None, :]
        d2[np.arange(len(block)), block] = np.inf
        order = np.argsort(d2, axis=1, kind="stable")
        rank = np.empty_like(order)
        rank[np.arange(len(block))[:, None], order] = np.arange(1, n + 1)[None, :]
        r = rank[np.arange(len(block))[:, None], map_nn[start : start + block_size]]
        penalty += float(np.maximum(r - k, 0).sum())
    m = len(rows)
    return float(1.0 - penalty * (2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0))))


# --------------------------------------------------------------------------------------------- run maps


def _fingerprint(embeddings: np.ndarray) -> str:
    """Cheap identity of an embedding matrix: its shape and a strided sample of its rows."""
    n = embeddings.shape[0]
    step = max(1, n // 1000)
    digest = hashlib.sha256(np.ascontiguousarray(embeddings[::step]).tobytes()).hexdigest()[:12]
    return f"{embeddings.shape[0]}x{embeddings.shape[1]}-{digest}"


def map_cache_path(run: Run, params: MapParams) -> Path:
    """Where the map of ``run`` with ``params`` is cached: ``RUN/map_<method>_<key>.parquet``."""
    text = f"{params.key()}|{_fingerprint(run.embeddings)}"
    if params.method == "umap" and len(run.items) > MAX_UMAP_FIT:
        text += f"|fit{MAX_UMAP_FIT}-searched-place{PLACE_NEIGHBOURS}"  # a large run's map is fitted on a sample
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    return run.path / f"map_{params.method}_{key}.parquet"


def _read_cached(path: Path, n: int) -> pd.DataFrame | None:
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError):
        return None
    if list(table.columns[:3]) != list(MAP_COLUMNS) or len(table) != n:
        return None
    if not np.array_equal(table["item_id"].to_numpy(), np.arange(n)):
        return None
    return table


def _write_cached(path: Path, table: pd.DataFrame) -> bool:
    """Write atomically (a temporary file renamed into place); False when the run folder is read-only."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-map-", suffix=".parquet")
    except OSError:
        return False
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return True
    except OSError:
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_cached(run: Run, params: MapParams) -> bool:
    """True when the map of ``run`` with ``params`` can be read back from the run folder."""
    return _read_cached(map_cache_path(run, params), len(run.items)) is not None


def compute_map(
    run: Run,
    params: MapParams | None = None,
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The 2-D map of a run's items, read from the run folder's cache or computed (and then cached).

    Parameters
    ----------
    run : Run
        The run folder.
    params : MapParams, optional
        Method and its parameters (default: UMAP with the defaults of :class:`MapParams`).
    use_cache : bool
        Read and write ``RUN/map_<method>_<key>.parquet``.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    pandas.DataFrame
        (N rows) ``item_id``, ``x``, ``y`` (float32), in item order; ``attrs["cached"]`` says whether it
        was read back, ``attrs["params"]`` holds the parameters.
    """
    params = params or MapParams()
    n = len(run.items)
    path = map_cache_path(run, params)
    if use_cache:
        table = _read_cached(path, n)
        if table is not None:
            table.attrs.update(cached=True, params=asdict(params), fit_sample=fit_sample(n, params))
            return table
    if params.method == "pca":
        coords = pca_2d(run.embeddings, seed=params.seed)
    else:
        shared = None
        if params.knn == "auto" and n > 4:
            # the run's shared neighbour graph (cached in the run folder; the detectors reuse it too)
            from analysis.search.graph import GRAPH_K, run_graph

            graph = run_graph(run, np.arange(n), k=max(GRAPH_K, params.n_neighbors - 1), cache=use_cache)
            shared = (graph.rows, graph.sims)
        coords = umap_2d(
            run.embeddings,
            n_neighbors=params.n_neighbors,
            min_dist=params.min_dist,
            n_epochs=params.n_epochs,
            learning_rate=params.learning_rate,
            init=params.init,
            knn_method=params.knn,
            seed=params.seed,
            neighbours=shared,
            progress=progress,
        )
    table = pd.DataFrame({"item_id": np.arange(n, dtype=np.int64), "x": coords[:, 0], "y": coords[:, 1]})
    if use_cache:
        _write_cached(path, table)
    table.attrs.update(cached=False, params=asdict(params), fit_sample=fit_sample(n, params))
    return table


def fit_sample(n: int, params: MapParams) -> int:
    """How many of ``n`` items the map with ``params`` is fitted on (``n`` but for a large run's UMAP)."""
    return min(n, MAX_UMAP_FIT) if params.method == "umap" else n


# --------------------------------------------------------------------------------------------- colours


def item_attributes(run: Run) -> pd.DataFrame:
    """What the map can be coloured by, one row per item.

    Returns
    -------
    pandas.DataFrame
        (N rows) ``item_id``; ``modality``; ``label`` (string, ``"(none)"`` when missing); ``role``: the
        first of ``anchor``, ``positive``, ``negative``, ``other`` the item plays in any pair;
        ``negative_source``: the sources it is listed under as a negative (``"given+mined"``), or
        ``"not a negative"``; ``pos_sim``: mean anchor·positive of the pairs it is an anchor or positive of
        (NaN otherwise); ``n_pairs``: how many pairs it is an anchor or positive of.
    """
    n = len(run.items)
    items = run.items
    labels = pd.Series(run.labels, dtype=object).fillna("(none)")
    anchors = run.pairs["anchor_id"].to_numpy(np.int64)
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    negatives = run.negatives["negative_id"].to_numpy(np.int64)
    role = np.full(n, "other", dtype=object)
    role[negatives] = "negative"
    role[positives] = "positive"
    role[anchors] = "anchor"

    source = np.full(n, "not a negative", dtype=object)
    if len(run.negatives):
        # one bit per distinct source (the known ones first, in their order), then one name per bit pattern:
        # vectorised, as a per-item groupby takes seconds on 100k items
        names = run.negatives["source"].astype(str).to_numpy()
        order = [x for x in NEGATIVE_SOURCES if x in set(names)]
        order += sorted(set(names) - set(order))
        bits = np.zeros(n, dtype=np.int64)
        for k, name in enumerate(order):
            np.bitwise_or.at(bits, negatives[names == name], 1 << k)
        n_known = sum(1 for x in order if x in NEGATIVE_SOURCES)
        for pattern in np.unique(bits[bits > 0]):
            parts = [name for k, name in enumerate(order) if pattern >> k & 1]
            known = [x for x in parts[:n_known] if x in NEGATIVE_SOURCES]
            source[bits == pattern] = "+".join(known) if known else "+".join(sorted(parts))

    pos_sim = np.einsum("ij,ij->i", run.embeddings[anchors], run.embeddings[positives]).astype(np.float64)
    total = np.bincount(anchors, weights=pos_sim, minlength=n) + np.bincount(positives, weights=pos_sim, minlength=n)
    count = np.bincount(anchors, minlength=n) + np.bincount(positives, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pos = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "modality": items["modality"].astype(str).to_numpy(),
            "label": labels.to_numpy(dtype=object),
            "role": role,
            "negative_source": source,
            "pos_sim": mean_pos,
            "n_pairs": count.astype(np.int64),
        }
    )


#: Review statuses of an item, most telling first (an item with several decisions shows the first).
REVIEW_STATUSES = (
    "false negative",
    "mismatched pair",
    "relabelled",
    "unsure",
    "confirmed negative",
    "pair ok",
    "label ok",
    "undecided",
)
_STATUS_OF = {
    ("negative", "false_negative"): "false negative",
    ("negative", "negative"): "confirmed negative",
    ("negative", "unsure"): "unsure",
    ("pair", "mismatched"): "mismatched pair",
    ("pair", "ok"): "pair ok",
    ("pair", "unsure"): "unsure",
    ("label", "relabel"): "relabelled",
    ("label", "ok"): "label ok",
}


def review_status(run: Run, latest: pd.DataFrame) -> np.ndarray:
    """Each item's review status from the current decisions (:func:`analysis.review.decisions.run_decisions`).

    A negative decision marks its candidate, a pair decision its positive, a label decision its item.

    Parameters
    ----------
    run : Run
        The run folder.
    latest : pandas.DataFrame
        ``kind``, ``anchor_key``, ``candidate_key``, ``decision`` rows.

    Returns
    -------
    numpy.ndarray
        (N,) object array of ``REVIEW_STATUSES`` values.
    """
    n = len(run.items)
    rank = np.full(n, len(REVIEW_STATUSES) - 1, dtype=np.int64)
    if latest is None or latest.empty:
        return np.array(REVIEW_STATUSES, dtype=object)[rank]
    row_of_key = pd.Series(np.arange(n), index=run.items["key"].astype(str).to_numpy())
    row_of_key = row_of_key[~row_of_key.index.duplicated()]
    order = {status: i for i, status in enumerate(REVIEW_STATUSES)}
    kinds = latest["kind"].astype(str).to_numpy()
    decisions = latest["decision"].astype(str).to_numpy()
    keys = np.where(kinds == "label", latest["anchor_key"].astype(str), latest["candidate_key"].astype(str))
    rows = row_of_key.reindex(keys).to_numpy()
    for row, kind, decision in zip(rows, kinds, decisions, strict=True):
        status = _STATUS_OF.get((kind, decision))
        if status is None or pd.isna(row):
            continue
        rank[int(row)] = min(rank[int(row)], order[status])
    return np.array(REVIEW_STATUSES, dtype=object)[rank]


def per_item_scores(table: pd.DataFrame, n_items: int, *, id_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Collapse a detector table (one row per candidate) to items: the highest score and any flag.

    Parameters
    ----------
    table : pandas.DataFrame
        Detector output with ``id_column``, ``score`` and ``flagged``.
    n_items : int
        N.
    id_column : str
        The item-id column (``candidate_id`` for false negatives, ``item_id`` for label noise).

    Returns
    -------
    score : numpy.ndarray
        (N,) float64 highest score of the item, NaN where the detector never looked at it.
    flagged : numpy.ndarray
        (N,) bool, True where any row of the item is flagged.
    """
    score = np.full(n_items, np.nan)
    flagged = np.zeros(n_items, dtype=bool)
    if table is None or table.empty:
        return score, flagged
    ids = pd.to_numeric(table[id_column], errors="coerce")
    ok = ids.notna().to_numpy() & (ids.fillna(-1).to_numpy() >= 0) & (ids.fillna(-1).to_numpy() < n_items)
    ids = ids.to_numpy()[ok].astype(np.int64)
    values = table["score"].to_numpy(np.float64)[ok]
    finite = np.isfinite(values)
    np.fmax.at(score, ids[finite], values[finite])
    flagged[ids[table["flagged"].to_numpy(bool)[ok]]] = True
    return score, flagged


# --------------------------------------------------------------------------------------------- overlays


def pair_lines(
    run: Run, coords: np.ndarray, *, n_pairs: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Line segments anchor -> positive for a random sample of pairs, in one polyline with NaN breaks.

    Parameters
    ----------
    run : Run
        The run folder.
    coords : numpy.ndarray
        (N, 2) map coordinates.
    n_pairs : int
        Pairs drawn (all when there are fewer).
    seed : int
        Seed of the sample.

    Returns
    -------
    xs, ys : numpy.ndarray
        (3 S,) float64: anchor, positive, NaN for each of the S sampled pairs.
    pair_rows : numpy.ndarray
        (S,) int64 rows of ``run.pairs`` drawn.
    """
    p = len(run.pairs)
    s = int(min(max(n_pairs, 0), p))
    rows = np.sort(np.random.default_rng(seed).choice(p, size=s, replace=False)) if s < p else np.arange(p)
    a = run.pairs["anchor_id"].to_numpy(np.int64)[rows]
    b = run.pairs["positive_id"].to_numpy(np.int64)[rows]
    xs = np.column_stack([coords[a, 0], coords[b, 0], np.full(s, np.nan)]).ravel().astype(np.float64)
    ys = np.column_stack([coords[a, 1], coords[b, 1], np.full(s, np.nan)]).ravel().astype(np.float64)
    return xs, ys, rows.astype(np.int64)


def find_items(run: Run, query: str, *, limit: int = 50) -> np.ndarray:
    """Items whose id equals ``query`` or whose content contains it (case-insensitive, literal text).

    Returns
    -------
    numpy.ndarray
        Up to ``limit`` int64 item ids: an exact id match first, then content matches in item order.
    """
    query = (query or "").strip()
    if not query:
        return np.empty(0, dtype=np.int64)
    found: list[int] = []
    text = query.removeprefix("#")
    if text.isdigit() and int(text) < len(run.items):
        found.append(int(text))
    hits = run.items["content"].astype(str).str.contains(query, case=False, regex=False, na=False).to_numpy()
    for item in np.flatnonzero(hits):
        if len(found) >= limit:
            break
        if int(item) not in found:
            found.append(int(item))
    return np.asarray(found[:limit], dtype=np.int64)


def item_neighbours(embeddings: np.ndarray, item_id: int, k: int, *, index: faiss.Index | None = None) -> pd.DataFrame:
    """The ``k`` nearest other items of one item by cosine similarity (exact, faiss).

    Parameters
    ----------
    embeddings : numpy.ndarray
        (N, D) float32 L2-normalised rows.
    item_id : int
        The query item.
    k : int
        Neighbours wanted.
    index : faiss.Index, optional
        A flat inner-product index over ``embeddings`` to reuse (:func:`analysis.search.exact.flat_index`).

    Returns
    -------
    pandas.DataFrame
        ``rank`` (1-based), ``item_id``, ``sim``; the item itself left out.
    """
    n = embeddings.shape[0]
    k = int(min(max(k, 0), n - 1))
    if k == 0:
        return pd.DataFrame({"rank": [], "item_id": [], "sim": []})
    sims, ids = knn(embeddings[[int(item_id)]], index if index is not None else embeddings, k + 1)
    keep = (ids[0] != int(item_id)) & (ids[0] >= 0)
    ids, sims = ids[0][keep][:k], sims[0][keep][:k]
    return pd.DataFrame({"rank": np.arange(1, len(ids) + 1), "item_id": ids.astype(np.int64), "sim": sims})
