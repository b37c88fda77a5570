"""A search index, exact or approximate (IVF or HNSW, through faiss) as :mod:`analysis.search.rule` decides.

Exact inner-product search costs ``Q M D`` multiply-adds for Q queries over M corpus rows; ``kind="auto"``
asks :func:`analysis.search.rule.choose_kind` (the one rule, from that work), and above its budget switches
to an inverted-file index (``IndexIVFFlat``: k-means cells, each query scans the ``nprobe`` nearest cells);
an HNSW graph is available on request. An approximate index
is only useful when one knows what it misses, so every approximate index built here has its recall@k
against exact search measured on a sample of queries, and its search depth (``nprobe`` or ``efSearch``)
is raised until that recall reaches ``target_recall``:

.. math:: \\text{recall@}k = \\frac{1}{|Q|} \\sum_{q \\in Q} \\frac{|\\text{ANN}_k(q) \\cap \\text{exact}_k(q)|}{k}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

from analysis.search.blas import exact_kernel
from analysis.search.exact import flat_index, hnsw_index, knn, torch_knn
from analysis.search.rule import EXACT_BUDGET, RECALL_SAMPLE, resolve_kind
from analysis.search.rule import INDEX_KINDS as INDEX_KINDS

BLAS_DATABASE_BLOCK = 16384  # corpus rows per faiss BLAS block in exact search (faiss's default: 1024)
#: IVF cells per sqrt(corpus rows): ``nlist`` is the power of two at or below ``IVF_CELLS_PER_SQRT * sqrt(M)``.
IVF_CELLS_PER_SQRT = 4
#: k-means training rows per IVF cell (faiss warns below 39), and the fewest corpus rows per cell.
IVF_ROWS_PER_CELL = 40
#: k-means iterations of the IVF training (faiss's default is 25; 10 loses < 0.01 recall@10 at nprobe 1 on the
#: 100k benchmark run and trains in 0.6 of the time).
IVF_KMEANS_ITER = 10


@contextmanager
def blas_blocks(database_rows: int = BLAS_DATABASE_BLOCK) -> Iterator[None]:
    """Let faiss's exact search multiply (queries x ``database_rows``) blocks instead of (queries x 1024).

    Larger blocks give the BLAS bigger matrix products (measured: ~1.2x the default's throughput on the
    mining benchmark) at the cost of a (4096, ``database_rows``) float32 scratch block (256 MB at 16384). The
    setting is process-wide in faiss, so it is restored afterwards; it changes speed only, never results.
    """
    previous = faiss.cvar.distance_compute_blas_database_bs
    faiss.cvar.distance_compute_blas_database_bs = int(database_rows)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_database_bs = previous


def exact_knn(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product without building (copying the corpus into) an index.

    Returns (Q, k) float32 similarities and (Q, k) int64 corpus row ids.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    k = min(int(k), corpus.shape[0])
    if exact_kernel() == "torch":
        return torch_knn(queries, corpus, k)
    with blas_blocks():
        sims, ids = faiss.knn(queries, corpus, k, metric=faiss.METRIC_INNER_PRODUCT)
    return sims, ids


@dataclass
class SearchIndex:
    """A built index and what is known about its quality.

    Attributes
    ----------
    index : faiss.Index
        The faiss index (inner product).
    kind : str
        'exact', 'ivf' or 'hnsw'.
    recall : float or None
        Measured recall@``recall_k`` against exact search (1.0 for exact search).
    recall_k : int
        The k of that recall.
    params : dict
        Build and search parameters (``nlist``, ``nprobe``, ``m``, ``ef_search`` ...).
    """

    index: faiss.Index
    kind: str
    recall: float | None = 1.0
    recall_k: int = 10
    params: dict = field(default_factory=dict)
    note: str = ""

    @property
    def ntotal(self) -> int:
        """Rows in the index."""
        return int(self.index.ntotal)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        block_size: int = 4096,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours by inner product: (Q, k) float32 similarities and (Q, k) int64 ids (-1: none)."""
        if self.kind == "exact":
            with blas_blocks():
                return knn(queries, self.index, k, block_size=block_size, progress=progress)
        return knn(queries, self.index, k, block_size=block_size, progress=progress)

    def describe(self) -> str:
        """One line for people: the kind, its parameters and its measured recall."""
        if self.kind == "exact":
            kernel = "torch matmul" if exact_kernel() == "torch" else "faiss IndexFlatIP"
            return f"exact search ({kernel})" + (f"; {self.note}" if self.note else "")
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind.upper()} ({params}), measured recall@{self.recall_k} = {self.recall:.3f}"


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each query's exact top-k found in its approximate top-k.

    Parameters
    ----------
    approx_ids, exact_ids : numpy.ndarray
        (Q, k) int64 neighbour ids (-1 entries of ``approx_ids`` never match).
    """
    approx_ids = np.asarray(approx_ids)
    exact_ids = np.asarray(exact_ids)
    if exact_ids.size == 0:
        return 1.0
    k = exact_ids.shape[1]
    hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx_ids, exact_ids, strict=True))
    return hits / (k * len(exact_ids))


def _set_depth(index: faiss.Index, kind: str, depth: int) -> None:
    if kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(depth)
    elif kind == "hnsw":
        index.hnsw.efSearch = int(depth)


def default_nlist(n: int) -> int:
    """IVF cells for a corpus of ``n`` rows: the power of two at or below ``4 sqrt(n)``, with at least
    ``IVF_ROWS_PER_CELL`` rows per cell (so small corpora get few cells), at least 1.

    Many small cells let one probed cell hold a query's whole neighbourhood: on the 100k benchmark run (2,000
    clusters of ~50 anchors) 256 cells (~sqrt(M)) gave recall@10 0.68 at nprobe 1 and needed 128 of 256 cells
    for 0.95, while 1,024 cells give 0.99 at nprobe 1. The training cost, ``40 nlist x nlist x D`` per k-means
    iteration, grows with ``nlist^2``, which is why the factor stays at 4 (measured: 1,024 cells train in 4 s
    at 384 dims, 2,048 in 20 s).

    Examples: 200,000 and 100,000 rows -> 1,024 cells; 10,000 -> 128; 4,096 -> 64; 1,000,000 -> 2,048.
    """
    n = int(n)
    if n < 2 * IVF_ROWS_PER_CELL:
        return 1
    target = min(IVF_CELLS_PER_SQRT * math.sqrt(n), n / IVF_ROWS_PER_CELL)
    return int(2 ** math.floor(math.log2(max(target, 1.0))))


def build_ivf(
    corpus: np.ndarray,
    *,
    nlist: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    centroids: np.ndarray | None = None,
    assign: np.ndarray | None = None,
) -> faiss.IndexIVFFlat:
    """Train and fill an inner-product ``IndexIVFFlat`` over ``corpus`` (M, D) float32.

    ``nlist`` defaults to :func:`default_nlist` (a power of two at or below ``4 sqrt(M)``); k-means
    (``IVF_KMEANS_ITER`` iterations) is trained on ``train_size`` rows (default ``IVF_ROWS_PER_CELL * nlist``,
    faiss's recommended minimum, at most M) drawn at random. ``centroids`` (nlist, D) float32 from an earlier
    training on the same rows (:func:`ivf_centroids`) skip the training; ``assign`` (M,) the cell of each row
    under those centroids (:func:`ivf_assignments` of an earlier index) skips assigning the rows to cells too
    (the rows go to the same cells, in the same order: the same index).
    """
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    n, d = corpus.shape
    if nlist is None:
        nlist = default_nlist(n)
    nlist = int(max(1, min(nlist, n)))
    train_size = int(min(n, train_size or IVF_ROWS_PER_CELL * nlist))
    rng = np.random.default_rng(seed)
    sample = corpus[np.sort(rng.choice(n, size=train_size, replace=False))] if train_size < n else corpus
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(seed)
    index.cp.niter = IVF_KMEANS_ITER
    if centroids is not None and centroids.shape == (nlist, d):
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index.is_trained = True
    else:
        index.train(sample)
        assign = None  # cells of its own: an assignment to other cells does not hold
    if assign is not None:
        assign = np.ascontiguousarray(assign, dtype=np.int64)
        if assign.shape != (n,) or (n and (assign.min() < 0 or assign.max() >= nlist)):
            assign = None
    for start in range(0, n, 65536):
        if assign is None:
            index.add(corpus[start : start + 65536])
        else:
            add_preassigned(index, corpus[start : start + 65536], assign[start : start + 65536])
    return index


def ivf_assignments(index: faiss.Index) -> np.ndarray:
    """(M,) int64 the cell (inverted list) of each row of a filled IVF index, read from its lists."""
    ivf = faiss.extract_index_ivf(index)
    out = np.full(int(ivf.ntotal), -1, dtype=np.int64)
    lists = ivf.invlists
    for list_no in range(int(ivf.nlist)):
        size = int(lists.list_size(list_no))
        if size:
            out[faiss.rev_swig_ptr(lists.get_ids(list_no), size)] = list_no
    return out


def ivf_centroids(index: faiss.Index) -> np.ndarray:
    """(nlist, D) float32 cell centroids of a trained IVF index (to rebuild it without training)."""
    ivf = faiss.extract_index_ivf(index)
    return ivf.quantizer.reconstruct_n(0, int(ivf.nlist))


def tune_depth(
    index: faiss.Index,
    kind: str,
    queries: np.ndarray,
    exact_ids: np.ndarray,
    *,
    start: int,
    limit: int,
    target_recall: float,
) -> tuple[int, float]:
    """Double the search depth (IVF ``nprobe`` / HNSW ``efSearch``) from ``start`` until the recall reaches
    ``target_recall`` or the depth reaches ``limit``; returns (depth, recall)."""
    k = exact_ids.shape[1]
    depth = max(1, int(start))
    while True:
        _set_depth(index, kind, depth)
        _, ids = index.search(queries, k)
        recall = recall_at_k(ids, exact_ids)
        if recall >= target_recall or depth >= limit:
            return depth, recall
        depth = min(2 * depth, int(limit))


def build_index(
    corpus: np.ndarray,
    *,
    kind: str = "auto",
    n_queries: int | None = None,
    exact_budget: float = EXACT_BUDGET,
    target_recall: float = 0.95,
    recall_k: int = 10,
    sample_queries: np.ndarray | None = None,
    n_sample: int = RECALL_SAMPLE,
    start_depth: int | None = None,
    nlist: int | None = None,
    hnsw_m: int = 32,
    seed: int = 0,
    centroids: np.ndarray | None = None,
    assign: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> SearchIndex:
    """Build the index to search ``corpus`` (M, D) float32 with, measuring an approximate one's recall.

    Parameters
    ----------
    corpus : numpy.ndarray
        (M, D) float32 rows (L2-normalised for cosine similarity).
    kind : {"auto", "exact", "ivf", "hnsw", "ivfpq"}
        'auto': :func:`analysis.search.rule.choose_kind` from the work ``n_queries x M x D`` and
        ``exact_budget`` (exact, or IVF), and an IVF index that needs more than 1/8 of its cells probed to
        reach ``target_recall`` (unclustered data), where exact search is as fast, falls back to exact search
        and says so in ``note``.
    n_queries : int, optional
        How many queries will be searched (default M: a kNN graph of the corpus itself).
    exact_budget : float
        Multiply-adds up to which 'auto' searches exactly.
    target_recall : float
        The search depth of an approximate index is raised until its recall@``recall_k`` on the sample
        reaches this (or the depth reaches its maximum; the achieved recall is reported either way).
    sample_queries : numpy.ndarray, optional
        (S, D) queries like the real ones to measure recall on (default: ``n_sample`` random corpus rows).
    start_depth : int, optional
        First search depth tried, then doubled (default: 1 IVF cell, ``max(2 recall_k, 32)`` HNSW candidates).
    nlist, hnsw_m : int
        IVF cells (default :func:`default_nlist`: a power of two at or below ``4 sqrt(M)``); HNSW links per node.
    centroids : numpy.ndarray, optional
        (nlist, D) IVF centroids of an earlier training on the same corpus (the run folder's cache): no training.
    assign : numpy.ndarray, optional
        (M,) each row's cell under ``centroids`` (the run folder's cache): the rows are not assigned again.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    SearchIndex
    """
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    n, d = corpus.shape
    auto = kind == "auto"
    kind = resolve_kind(kind, n if n_queries is None else int(n_queries), n, d, budget=exact_budget)
    if kind == "ivfpq" and not auto:
        # forced: a real IVF-PQ index (PQ codes, exact re-ranking) over the in-memory rows as one part
        from analysis.search.ivfpq import PartedCorpus, build_ivfpq_index

        return build_ivfpq_index(
            PartedCorpus.from_parts([(0, corpus)]),
            sample_queries=sample_queries,
            n_sample=n_sample,
            target_recall=target_recall,
            recall_k=recall_k,
            seed=seed,
            progress=progress,
        )
    if kind == "ivfpq":
        kind = "ivf"  # 'auto' beyond memory, but these rows are in memory already: IVF serves them
    if kind == "exact" or n == 0:
        index = flat_index(corpus) if n else faiss.IndexFlatIP(corpus.shape[1])
        if progress is not None:
            progress(1.0)
        return SearchIndex(index=index, kind="exact", recall=1.0, recall_k=recall_k)

    if progress is not None:
        progress(0.0)
    if kind == "ivf":
        index = build_ivf(corpus, nlist=nlist, seed=seed, centroids=centroids, assign=assign)
        params: dict = {"nlist": int(index.nlist)}
        start, limit = start_depth or 1, int(index.nlist)
    else:
        index = hnsw_index(corpus, m=hnsw_m)
        params = {"m": int(hnsw_m)}
        start, limit = start_depth or max(2 * recall_k, 32), 4096
    if progress is not None:
        progress(0.7)

    rng = np.random.default_rng(seed + 1)
    if sample_queries is None:
        sample_queries = corpus[rng.choice(n, size=min(n_sample, n), replace=False)]
    sample_queries = np.ascontiguousarray(sample_queries, dtype=np.float32)
    k = min(recall_k, n)
    _, exact_ids = exact_knn(sample_queries, corpus, k)
    depth, recall = tune_depth(
        index, kind, sample_queries, exact_ids, start=start, limit=limit, target_recall=target_recall
    )
    params["nprobe" if kind == "ivf" else "ef_search"] = depth
    if progress is not None:
        progress(1.0)
    if auto and kind == "ivf" and depth > max(1, params["nlist"] // 8):
        # Unclustered data: reaching the recall needs scanning much of the corpus cell by cell, which is
        # slower than one exact BLAS pass (measured on uniform random vectors), so search exactly instead.
        note = f"IVF needed nprobe={depth} of {params['nlist']} cells for recall {recall:.3f}: no faster than exact"
        del index
        return SearchIndex(index=flat_index(corpus), kind="exact", recall=1.0, recall_k=k, note=note)
    return SearchIndex(index=index, kind=kind, recall=float(recall), recall_k=k, params=params)
