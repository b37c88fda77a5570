"""One neighbour graph per run, modality and item set, computed once and shared by every analysis.

The detectors (false negatives, mismatched pairs, labels, duplicates) and the map's kNN graph all need each
item's nearest other items among a set of items of one modality (most often: the anchors). Computing that
graph is the quadratic part of each of them, so :func:`run_graph` computes it once per run and item set, at
``GRAPH_K`` neighbours (callers take the first ``k`` columns), through the search
:func:`analysis.search.rule.choose_kind` picks from the work (exact, or an IVF index whose recall@10 is
measured against exact search on a sample), and keeps it

- in memory on the ``Run`` (for the rest of the process), and
- in the run folder, ``RUN/cache/knn-<modality>-k<k>-<digest>.npz`` (plain arrays, read with
  ``allow_pickle=False``), keyed by a digest of the item set and of their embeddings, so a later command or
  page reuses it. The cache is an extra file: no public file of the run folder changes, and a folder that
  cannot be written simply is not cached.

:func:`run_index` shares the search index itself the same way within a process: the detectors that search an
item set with other queries (the mismatch detector's galleries, the false-negative detector's corpus and
anchors) and the graph of that set build one index per run, item set and search kind (an IVF index trains its
k-means cells once), with its recall@10 measured once on a sample of the set's own rows; an IVF index's trained
cells are also kept in the run folder (``RUN/cache/ivf-<digest>-s<seed>.npy``), so a later command only fills them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from analysis.runs.folder import Run
    from analysis.search.index import SearchIndex

#: Neighbours kept per item in the shared graph (callers slice the first ``k``).
GRAPH_K = 16
CACHE_DIR = "cache"


@dataclass(frozen=True)
class NeighbourGraph:
    """The ``k`` nearest other items of each item of a set, by cosine.

    Attributes
    ----------
    item_ids : numpy.ndarray
        (N,) int64 run item ids of the set, in the order of the rows below.
    rows : numpy.ndarray
        (N, k) int64 neighbour rows (positions in ``item_ids``), nearest first, the item itself left out
        (-1 where an approximate search found too few).
    sims : numpy.ndarray
        (N, k) float32 cosine similarities, descending along each row.
    kind : str
        'exact' or 'ivf': the search that built it.
    recall : float
        Recall@10 of that search against exact search, measured on a sample (1.0 when exact).
    note : str
        How the search was chosen (for people).
    """

    item_ids: np.ndarray
    rows: np.ndarray
    sims: np.ndarray
    kind: str
    recall: float
    note: str = ""

    @property
    def k(self) -> int:
        """Neighbours per item."""
        return int(self.rows.shape[1])

    def first(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) neighbour rows and similarities: the first ``k`` columns (``k`` at most :attr:`k`)."""
        if k > self.k:
            raise ValueError(f"the graph holds {self.k} neighbours per item, {k} asked")
        return self.rows[:, :k], self.sims[:, :k]

    def describe(self) -> str:
        """One line for people: the search and its measured recall."""
        if self.kind == "exact":
            return "exact neighbour search"
        return f"approximate ({self.kind.upper()}) neighbour search, measured recall@10 = {self.recall:.3f}"


def vector_graph(
    vectors: np.ndarray,
    k: int,
    *,
    kind: str = "auto",
    seed: int = 0,
    index: SearchIndex | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, str, float, str]:
    """The ``k`` nearest other rows of every row, by the search the rule picks from the work (N x N x D).

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32, L2-normalised.
    k : int
        Neighbours per row (clipped to N - 1).
    kind : {"auto", "exact", "ivf", "hnsw"}
        The search ('auto': :func:`analysis.search.rule.choose_kind`).
    seed : int
        Seed of the approximate index (k-means, recall sample).
    index : SearchIndex, optional
        An index already built over exactly these rows (:func:`run_index`); default: built here.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    rows : numpy.ndarray
        (N, k) int64 neighbour rows, the row itself left out.
    sims : numpy.ndarray
        (N, k) float32.
    kind : str
        The search that ran.
    recall : float
        Its measured recall@10 (1.0 when exact).
    note : str
        The index's description.
    """
    from analysis.search.exact import knn_graph
    from analysis.search.index import build_index

    report = progress or (lambda _f: None)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    k = max(0, min(int(k), n - 1))
    if k == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32), "exact", 1.0, "no neighbours"
    if index is None:
        index = build_index(
            vectors, kind=kind, n_queries=n, start_depth=1, seed=seed, progress=lambda f: report(0.3 * f)
        )
    if index.kind == "ivfpq":  # PQ codes: neighbours through its exact re-ranking, not the raw faiss index
        from analysis.search.ivfpq import self_graph

        sims, rows = self_graph(index, vectors, k, progress=lambda f: report(0.3 + 0.7 * f))
    else:
        sims, rows = knn_graph(vectors, k, index=index.index, progress=lambda f: report(0.3 + 0.7 * f))
    recall = 1.0 if index.recall is None else float(index.recall)
    return rows, sims, index.kind, recall, index.describe()


def _digest(run: Run, item_ids: np.ndarray) -> str:
    """Digest of the item set and of (a sample of) its embeddings: changes when either does."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(item_ids, dtype=np.int64).tobytes())
    step = max(1, len(item_ids) // 512)
    h.update(np.ascontiguousarray(run.embeddings[item_ids[::step]], dtype=np.float32).tobytes())
    h.update(str(run.embeddings.shape).encode())
    return h.hexdigest()


def _assignments_path(run: Run, centroids: np.ndarray) -> Path:
    """Where the cells of the run's items under ``centroids`` are kept: one (N,) int32 file per set of cells."""
    digest = hashlib.blake2b(np.ascontiguousarray(centroids, dtype=np.float32).tobytes(), digest_size=8).hexdigest()
    return Path(run.path) / CACHE_DIR / f"assign-{digest}.npy"


def _cached_assignments(run: Run, centroids: np.ndarray, item_ids: np.ndarray) -> np.ndarray | None:
    """(M,) int64 the cell of each of ``item_ids`` under ``centroids``, as an earlier index over them (or over
    any item set with these cells: every set of a modality shares them) found it; None unless all are known.

    Assigning rows to cells is the costly part of filling an index whose cells are cached (a (M, nlist) product:
    1.5 s for 200k rows and 1,024 cells here); the cells an item falls in do not depend on the other items."""
    try:
        known = np.load(_assignments_path(run, centroids), allow_pickle=False)
    except (OSError, ValueError):
        return None
    if known.shape != (len(run.items),) or known.dtype != np.int32:
        return None
    found = known[item_ids].astype(np.int64)
    if not len(found) or found.min() < 0 or found.max() >= len(centroids):
        return None
    return found


def _remember_assignments(run: Run, centroids: np.ndarray, item_ids: np.ndarray, cells: np.ndarray) -> None:
    """Add the cells ``cells`` (M,) of ``item_ids`` to the run folder's assignments under ``centroids``."""
    path = _assignments_path(run, centroids)
    try:
        known = np.load(path, allow_pickle=False)
        if known.shape != (len(run.items),) or known.dtype != np.int32:
            raise ValueError
    except (OSError, ValueError):
        known = np.full(len(run.items), -1, dtype=np.int32)
    if len(item_ids) and np.array_equal(known[item_ids], cells):
        return
    known[item_ids] = cells
    _write_array(path, known)


def _shared_cells_path(run: Run, item_ids: np.ndarray, *, seed: int) -> Path:
    """Where IVF cells trained on *any* item set of the same modalities and cell count are kept.

    The cells are k-means centroids of the embedding space; an index over another subset of the same
    modality's items (the positives alone, the anchors alone, all of them) partitions its rows as well with
    them, and its probe depth is still tuned until the measured recall holds. Sharing them spares a later
    command (label-noise after false-negatives) its k-means training. Modalities are kept apart: cells of
    one modality would fit another poorly across the modality gap.
    """
    from analysis.search.index import default_nlist

    mods = "+".join(sorted({str(m) for m in run.items["modality"].to_numpy()[item_ids]})) or "items"
    mods = "".join(ch if ch.isalnum() or ch in "+_" else "_" for ch in mods)[:40]
    dim = int(run.embeddings.shape[1])
    return Path(run.path) / CACHE_DIR / f"ivf-{mods}-d{dim}-n{default_nlist(len(item_ids))}-s{int(seed)}.npy"


def cache_path(run: Run, modality: str, k: int, digest: str) -> Path:
    """Where the graph of one item set is cached in the run folder."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(modality))[:40] or "items"
    return Path(run.path) / CACHE_DIR / f"knn-{safe}-k{int(k)}-{digest}.npz"


def _read(path: Path, item_ids: np.ndarray, k: int) -> NeighbourGraph | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            cached_ids = data["item_ids"]
            if not np.array_equal(cached_ids, item_ids) or data["rows"].shape != (len(item_ids), k):
                return None
            return NeighbourGraph(
                item_ids=cached_ids,
                rows=data["rows"],
                sims=data["sims"],
                kind=str(data["kind"]),
                recall=float(data["recall"]),
                note=str(data["note"]),
            )
    except (OSError, KeyError, ValueError):
        return None


def _write(path: Path, graph: NeighbourGraph) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                item_ids=graph.item_ids,
                rows=graph.rows,
                sims=graph.sims,
                kind=np.array(graph.kind),
                recall=np.array(graph.recall),
                note=np.array(graph.note),
            )
        os.replace(tmp, path)
    except OSError:
        return  # a read-only run folder: not cached, nothing else changes


def _write_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a plain ``.npy`` file atomically; a read-only run folder is simply not cached."""
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        return


def run_graph(
    run: Run,
    item_ids: np.ndarray,
    *,
    k: int = GRAPH_K,
    modality: str | None = None,
    kind: str = "auto",
    cache: bool = True,
    progress: Callable[[float], None] | None = None,
) -> NeighbourGraph:
    """The shared neighbour graph of ``item_ids`` in ``run``: from memory, the run folder's cache, or computed.

    Parameters
    ----------
    run : Run
        The run folder.
    item_ids : numpy.ndarray
        (N,) run item ids (one modality), in the order the graph's rows follow.
    k : int
        Neighbours per item (default ``GRAPH_K``; clipped to N - 1).
    modality : str, optional
        The items' modality, for the cache file's name (default: read from ``run.items``).
    kind : {"auto", "exact", "ivf", "hnsw"}
        The search; 'auto' lets the rule pick from the work. A graph cached by another kind is reused only
        when ``kind`` is 'auto'.
    cache : bool
        Read and write the run folder's cache (the in-memory copy is always used).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    NeighbourGraph
    """
    item_ids = np.ascontiguousarray(item_ids, dtype=np.int64)
    n = len(item_ids)
    k = max(0, min(int(k), n - 1))
    if modality is None:
        mods = run.items["modality"].to_numpy()[item_ids] if n else np.array([], dtype=object)
        modality = str(mods[0]) if n and (mods == mods[0]).all() else "mixed"
    digest = _digest(run, item_ids)
    memo: dict[str, Any] = run._cache.setdefault("neighbour_graphs", {})
    key = f"{modality}-{k}-{digest}"
    found = memo.get(key)
    if found is not None and (kind == "auto" or found.kind == kind):
        if progress is not None:
            progress(1.0)
        return found
    path = cache_path(run, modality, k, digest)
    graph = _read(path, item_ids, k) if cache else None
    if graph is None or (kind != "auto" and graph.kind != kind):
        from analysis.search.exact import take_rows

        report = progress or (lambda _f: None)
        index = run_index(run, item_ids, kind=kind, n_queries=n, cache=cache, progress=lambda f: report(0.3 * f))
        rows, sims, ran, recall, note = vector_graph(
            take_rows(run.embeddings, item_ids), k, index=index, progress=lambda f: report(0.3 + 0.7 * f)
        )
        graph = NeighbourGraph(item_ids=item_ids, rows=rows, sims=sims, kind=ran, recall=recall, note=note)
        if cache:
            _write(path, graph)
    elif progress is not None:
        progress(1.0)
    memo[key] = graph
    return graph


def release_indexes(run: Run) -> None:
    """Drop the search indexes :func:`run_index` memoised on ``run`` (their vectors: 0.4 GB for two 100k-item
    galleries), for a process that will not search those items again; a later search builds its index again,
    from the cells cached in the run folder. The neighbour graphs stay memoised."""
    run._cache.pop("search_indexes", None)


def recorded_searches(run: Run) -> list[dict[str, Any]]:
    """The neighbour graphs used on ``run`` in this process: item count, k, search kind and measured recall."""
    memo = run._cache.get("neighbour_graphs", {})
    return [
        {"items": len(g.item_ids), "k": g.k, "kind": g.kind, "recall": round(g.recall, 4), "search": g.note}
        for g in memo.values()
    ]


def run_index(
    run: Run,
    item_ids: np.ndarray,
    *,
    kind: str = "auto",
    n_queries: int | None = None,
    sample_queries: np.ndarray | None = None,
    seed: int = 0,
    cache: bool = True,
    progress: Callable[[float], None] | None = None,
) -> SearchIndex:
    """The search index over ``item_ids`` of ``run``, built once per process, item set and search kind.

    Parameters
    ----------
    run : Run
        The run folder.
    item_ids : numpy.ndarray
        (M,) run item ids; the index's row ``j`` is ``item_ids[j]``.
    kind : {"auto", "exact", "ivf", "hnsw", "ivfpq"}
        The search; 'auto': :func:`analysis.search.rule.choose_kind` from ``n_queries x M x D`` (then an
        IVF index with its probe depth tuned from 1 until recall@10 >= 0.95, or exact search where IVF is no
        faster: :func:`analysis.search.index.build_index`; IVF-PQ, trained and filled from the run's shards and
        re-ranked from them, when the corpus would not fit in memory: :mod:`analysis.search.ivfpq`).
    n_queries : int, optional
        How many queries will search it (default M), for the rule.
    sample_queries : numpy.ndarray, optional
        (S, D) queries like the real ones to measure the recall on (another modality's queries, say); default:
        a sample of the set's own rows. An index measured on given queries is kept apart from one measured on
        the set's rows.
    seed : int
        Seed of the k-means training and of the recall sample.
    cache : bool
        Read and write an IVF index's trained cells in the run folder (``RUN/cache/ivf-<digest>-s<seed>.npy``,
        a plain (nlist, D) float32 array): a later process rebuilds the same index without training it. The
        first cells trained for a modality are also kept for every other item set of that modality with the
        same cell count (:func:`_shared_cells_path`), which then skips its k-means training too.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    SearchIndex
        Reused as long as the rule resolves to the same kind (and the recall sample is the same).
    """
    from analysis.search.exact import take_rows
    from analysis.search.index import build_index, ivf_assignments, ivf_centroids
    from analysis.search.rule import resolve_kind

    item_ids = np.ascontiguousarray(item_ids, dtype=np.int64)
    m = len(item_ids)
    dim = int(run.embeddings.shape[1])
    resolved = resolve_kind(kind, m if n_queries is None else int(n_queries), m, dim)
    memo: dict[str, Any] = run._cache.setdefault("search_indexes", {})
    key = f"{resolved}-{seed}-{_digest(run, item_ids)}"
    if sample_queries is not None:
        sample_queries = np.ascontiguousarray(sample_queries, dtype=np.float32)
        key += "-" + hashlib.blake2b(sample_queries.tobytes(), digest_size=8).hexdigest()
    found = memo.get(key)
    if found is None and resolved == "ivfpq" and bool((np.diff(item_ids) > 0).all()):
        # beyond memory (or forced): trained and filled from the run's shards, re-ranked from them, never copied
        from analysis.search.ivfpq import PartedCorpus, build_ivfpq_index

        found = build_ivfpq_index(
            PartedCorpus.from_run(run, rows=item_ids), sample_queries=sample_queries, seed=seed, progress=progress
        )
        memo[key] = found
    elif found is None:
        # an IVF index's trained cells are kept in the run folder's cache: a later process only fills them
        cells = Path(run.path) / CACHE_DIR / f"ivf-{_digest(run, item_ids)}-s{int(seed)}.npy"
        shared = _shared_cells_path(run, item_ids, seed=seed)
        centroids = None
        if resolved == "ivf" and cache:
            for path in (cells, shared):
                try:
                    centroids = np.load(path, allow_pickle=False)
                    break
                except (OSError, ValueError):
                    centroids = None
        assign = None if centroids is None else _cached_assignments(run, centroids, item_ids)
        found = build_index(
            take_rows(run.embeddings, item_ids),
            kind=kind,
            n_queries=m if n_queries is None else int(n_queries),
            sample_queries=sample_queries,
            start_depth=1,
            seed=seed,
            centroids=centroids,
            assign=assign,
            progress=progress,
        )
        if found.kind == "ivf" and cache:
            trained = ivf_centroids(found.index)
            if centroids is None:
                _write_array(cells, trained)
                if not shared.exists():
                    _write_array(shared, trained)
            if assign is None:  # the rows' cells, computed by this fill: kept for the next one
                _remember_assignments(run, trained, item_ids, ivf_assignments(found.index))
        memo[key] = found
    elif progress is not None:
        progress(1.0)
    return found
