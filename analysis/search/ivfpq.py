"""IVF-PQ search over a corpus held in parts (a sharded run's memory-mapped shards), re-ranked exactly.

For a corpus that would not fit in memory (:func:`analysis.search.rule.corpus_fits_memory`), an index of
compressed codes replaces the float32 rows: faiss ``IndexIVFPQ`` (inner product; ``nlist`` k-means cells,
each row stored as ``m`` sub-quantiser codes of ``nbits`` bits plus an 8-byte id: 56 bytes per row at
D = 384, m = 48, against 1,536 for float32). The corpus itself stays on disk, part by part:

1. **train** the coarse and product quantisers on a uniform sample of the corpus rows (read part by part, so it
   is drawn from every shard);
2. **fill** the index part by part, in blocks of :data:`FILL_BLOCK_ROWS` rows (never the whole corpus in memory);
3. **search**: each query's top ``rerank`` candidates by their PQ codes, then **re-ranked exactly** against their
   float32 rows gathered from the memory-mapped parts; the top ``k`` of the exact similarities are returned
   (ties broken by the smaller corpus row);
4. **measure**: recall@``recall_k`` of that whole pipeline against an exact search (streamed over the parts) on
   a sample of queries; ``rerank`` and ``nprobe`` are doubled until it reaches ``target_recall`` or their
   limits (:data:`MAX_RERANK`, :data:`MAX_NPROBE`); the measured recall is reported with the result
   (:meth:`IVFPQIndex.describe`).

PQ's own order is coarse (within a cluster the neighbours' similarities differ by less than the code error:
BENCHMARKS.md, "IVF-PQ over a sharded corpus"); re-ranking the top R exactly is what makes the result
usable, so R is raised together with ``nprobe``.

Used through :func:`analysis.search.graph.run_index` (a run and a sorted set of its item ids: the detectors'
searches), chosen by ``auto`` via :func:`analysis.search.rule.choose_kind` or forced with ``kind="ivfpq"``.
Once the process holds more than :data:`RESIDENT_MAP_BYTES` of mapped pages, :func:`release_if_large` drops
them, so that its resident memory stays near the codes plus one block and that allowance.
"""

from __future__ import annotations

import contextlib
import math
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import faiss
import numpy as np

from analysis.errors import NegScopeError
from analysis.runs.folder import Run
from analysis.search.index import SearchIndex, exact_knn, recall_at_k
from analysis.search.rule import RECALL_SAMPLE

#: Rows read from a part at a time while filling the index or searching exactly (65,536 x 384 float32 = 96 MB).
FILL_BLOCK_ROWS = 65536
#: Re-ranked candidates per query: the first depth tried and the most the recall loop goes to.
START_RERANK = 256
MAX_RERANK = 4096
#: IVF cells probed per query: the first depth tried and the most the recall loop goes to.
START_NPROBE = 16
MAX_NPROBE = 256
#: Queries re-ranked together (their candidates' rows are gathered at once: 64 x 4,096 x 384 float32 = 384 MB
#: at the largest re-rank depth).
RERANK_QUERY_BLOCK = 64
#: Training rows per IVF cell (faiss warns below 39).
TRAIN_PER_CELL = 64
#: File-backed memory (``/proc/self/statm``'s resident shared pages: the parts' mapped pages, and the loaded
#: libraries') this process may hold before the parts' pages are dropped (:func:`release_pages`).
RESIDENT_MAP_BYTES = 1 << 30


def release_pages(part: np.ndarray) -> None:
    """Drop a memory-mapped part's pages from this process's resident memory (``madvise(MADV_DONTNEED)``).

    The pages stay in the kernel's file cache and are read back on the next access; without this, every row
    ever touched through the map counts in the process's RSS (7.7 GB after re-ranking 1,000 queries' top
    1,000 over 5M x 384). A no-op for arrays that are not memory-mapped.
    """
    mapped = getattr(part, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED)


def _mapped_resident_bytes() -> int | None:
    """Resident file-backed bytes of this process (``/proc/self/statm``, third field), None where unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


def release_if_large(parts: list[np.ndarray]) -> None:
    """:func:`release_pages` of every part once the process holds more than :data:`RESIDENT_MAP_BYTES` of
    file-backed pages (always, where that is unknown). Dropping pages costs page faults when they are read
    again (measured: twice the re-rank time when done after every gather), so a corpus whose touched pages fit
    the allowance keeps them."""
    held = _mapped_resident_bytes()
    if held is None or held > RESIDENT_MAP_BYTES:
        for part in parts:
            release_pages(part)


@dataclass(frozen=True, eq=False)
class PartedCorpus:
    """Rows of an (N, D) embedding matrix held as consecutive parts, optionally a sorted subset of them.

    Corpus row ``j`` (a *position*, what searches return) is global row ``rows[j]`` (``j`` itself when
    ``rows`` is None).

    Attributes
    ----------
    parts : list of numpy.ndarray
        float (rows_k, D) blocks in row order, memory-mapped where they come from a run folder.
    starts : numpy.ndarray
        (len(parts),) int64 global row of each part's first row.
    rows : numpy.ndarray or None
        (M,) int64 strictly increasing global rows making up the corpus, or None for all N rows.
    """

    parts: list[np.ndarray]
    starts: np.ndarray
    rows: np.ndarray | None = None

    @classmethod
    def from_parts(cls, parts: list[tuple[int, np.ndarray]], *, rows: np.ndarray | None = None) -> PartedCorpus:
        """A corpus from ``(first_row, block)`` parts (as :meth:`Run.embedding_parts` yields), optionally a subset.

        Parameters
        ----------
        parts : list of (int, numpy.ndarray)
            Consecutive (rows_k, D) blocks and their first global row.
        rows : numpy.ndarray, optional
            (M,) strictly increasing global rows to keep.
        """
        if not parts:
            raise NegScopeError("an IVF-PQ corpus needs at least one part")
        starts = np.asarray([s for s, _ in parts], dtype=np.int64)
        blocks = [b for _, b in parts]
        expected = np.concatenate([[0], np.cumsum([b.shape[0] for b in blocks])[:-1]])
        if not np.array_equal(starts, expected) or len({b.shape[1] for b in blocks}) != 1:
            raise NegScopeError("IVF-PQ corpus parts must be consecutive and of one dimension")
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            total = int(starts[-1] + blocks[-1].shape[0])
            if (np.diff(rows) <= 0).any():
                raise NegScopeError("corpus rows must be strictly increasing (positions follow the parts)")
            if len(rows) and (rows[0] < 0 or rows[-1] >= total):
                raise NegScopeError(f"corpus rows must lie in 0..{total - 1}")
        return cls(parts=blocks, starts=starts, rows=rows)

    @classmethod
    def from_run(cls, run: Run, *, rows: np.ndarray | None = None) -> PartedCorpus:
        """The embeddings of ``run`` part by part (its memory-mapped shards; one part when unsharded)."""
        return cls.from_parts(list(run.embedding_parts()), rows=rows)

    @classmethod
    def from_array(cls, array: np.ndarray) -> PartedCorpus:
        """One (M, D) array as a one-part corpus."""
        return cls.from_parts([(0, array)])

    @property
    def n(self) -> int:
        """M, the corpus rows."""
        if self.rows is not None:
            return len(self.rows)
        return int(self.starts[-1] + self.parts[-1].shape[0])

    @property
    def dim(self) -> int:
        """D."""
        return int(self.parts[0].shape[1])

    def _local(self, k: int) -> tuple[np.ndarray, int]:
        """Part ``k``'s local rows in the corpus and the corpus position of the first of them."""
        start, size = int(self.starts[k]), self.parts[k].shape[0]
        if self.rows is None:
            return np.arange(size, dtype=np.int64), start
        lo, hi = np.searchsorted(self.rows, [start, start + size])
        return self.rows[lo:hi] - start, int(lo)

    def blocks(self, block_rows: int = FILL_BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """The corpus in order, ``block_rows`` rows at a time, one part after another.

        Yields
        ------
        (int, numpy.ndarray)
            The corpus position of the block's first row and its float32 (rows, D) C-contiguous values.
        """
        for k, part in enumerate(self.parts):
            local, first = self._local(k)
            for i in range(0, len(local), block_rows):
                sel = local[i : i + block_rows]
                # all rows: a contiguous slice reads sequentially
                block = part[int(sel[0]) : int(sel[-1]) + 1] if self.rows is None else part[sel]
                yield first + i, np.array(block, dtype=np.float32, order="C")
            release_if_large([part])

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """float32 (len(positions), D) rows at corpus ``positions`` (any order), read part by part.

        Parameters
        ----------
        positions : numpy.ndarray
            (L,) int corpus positions in 0..M-1.
        """
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        if not len(positions):
            return out
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        global_rows = sorted_pos if self.rows is None else self.rows[sorted_pos]
        part_of = np.searchsorted(self.starts, global_rows, side="right") - 1
        bounds = np.searchsorted(part_of, np.arange(len(self.parts) + 1))
        for k in range(len(self.parts)):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                out[order[lo:hi]] = self.parts[k][global_rows[lo:hi] - self.starts[k]]
                release_if_large(self.parts)  # after each part: a gather over all parts may map most of them
        return out

    def sample(self, size: int, *, seed: int) -> np.ndarray:
        """float32 (min(size, M), D): a uniform random sample of the rows without replacement (every part
        contributes in proportion to its rows), read part by part."""
        size = min(int(size), self.n)
        if size >= self.n:
            return np.concatenate([b for _, b in self.blocks()])
        positions = np.sort(np.random.default_rng(seed).choice(self.n, size=size, replace=False))
        return self.gather(positions)


def _merge_top(
    best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of two (Q, *) candidate lists per row, by similarity then smaller id (-1 ids last)."""
    all_s = np.concatenate([best_s, s], axis=1)
    all_i = np.concatenate([best_i, i], axis=1)
    all_s = np.where(all_i < 0, -np.inf, all_s)
    order = np.lexsort((np.where(all_i < 0, np.iinfo(np.int64).max, all_i), -all_s.astype(np.float64)))[:, :k]
    return np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)


def exact_search(
    corpus: PartedCorpus, queries: np.ndarray, k: int, *, block_rows: int = FILL_BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product streamed over the corpus block by block (the reference of the recall).

    Parameters
    ----------
    corpus : PartedCorpus
        M rows.
    queries : numpy.ndarray
        (Q, D) float32.
    k : int
        Neighbours per query (at most M).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (Q, k) float32 similarities and (Q, k) int64 corpus positions, nearest first, ties by smaller position.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(int(k), corpus.n)
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for first, block in corpus.blocks(block_rows):
        # k + 1 per block so that a tie at the k-th place inside a block is resolved by id in the merge
        s, i = exact_knn(queries, block, min(k + 1, len(block)))
        best_s, best_i = _merge_top(best_s, best_i, s, np.where(i >= 0, i + first, -1), k)
    return best_s.astype(np.float32), best_i


def default_shape(n: int, dim: int) -> dict[str, int]:
    """IVF-PQ parameters for ``n`` rows of ``dim`` dims: ``nlist`` (a power of two near ``sqrt(n)``, at least
    :data:`TRAIN_PER_CELL` training rows per cell), ``m`` (the largest divisor of D at most ``D / 8``: 8 dims
    per code byte), ``nbits`` (8, fewer when there are under 39 x 256 training rows) and ``train`` rows."""
    nlist = 2 ** max(2, round(math.log2(max(math.sqrt(n), 4))))
    nlist = int(max(1, min(nlist, n // TRAIN_PER_CELL)))
    train = int(min(n, max(TRAIN_PER_CELL * nlist, 39 * 256)))
    m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    nbits = int(min(8, max(4, math.floor(math.log2(max(train / 39, 2))))))
    return {"nlist": nlist, "m": m, "nbits": nbits, "train": train}


def train_and_fill(
    corpus: PartedCorpus,
    *,
    nlist: int | None = None,
    m: int | None = None,
    nbits: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> tuple[faiss.IndexIVFPQ, dict[str, int]]:
    """Train an inner-product ``IndexIVFPQ`` on a sample of ``corpus`` and fill it part by part.

    Returns
    -------
    (faiss.IndexIVFPQ, dict)
        The index (ids = corpus positions) and its shape (``nlist``, ``m``, ``nbits``, ``train``).
    """
    shape = default_shape(corpus.n, corpus.dim)
    for key, value in (("nlist", nlist), ("m", m), ("nbits", nbits), ("train", train_size)):
        if value is not None:
            shape[key] = int(value)
    if corpus.dim % shape["m"]:
        raise NegScopeError(f"IVF-PQ needs m dividing the dimension {corpus.dim}, got m={shape['m']}")
    sample = corpus.sample(shape["train"], seed=seed)
    shape["train"] = len(sample)
    quantizer = faiss.IndexFlatIP(corpus.dim)
    index = faiss.IndexIVFPQ(quantizer, corpus.dim, shape["nlist"], shape["m"], shape["nbits"], faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(seed)
    index.pq.cp.seed = int(seed)
    index.train(sample)
    del sample
    if progress is not None:
        progress(0.3)
    for first, block in corpus.blocks():
        index.add(block)  # sequential ids: the block's corpus positions
        if progress is not None:
            progress(0.3 + 0.5 * (first + len(block)) / corpus.n)
    return index, shape


@dataclass
class IVFPQIndex(SearchIndex):
    """An IVF-PQ index over a :class:`PartedCorpus` whose results are re-ranked exactly from the corpus.

    Attributes (besides :class:`~analysis.search.index.SearchIndex`'s)
    -------------------------------------------------------------------
    corpus : PartedCorpus
        Where the exact rows are read from when re-ranking.
    rerank : int
        Candidates per query re-ranked exactly (R).
    n_recall_queries : int
        Queries the recall was measured on.
    tried : list of (int, int, float)
        ``(nprobe, rerank, recall)`` of each search depth the recall loop tried, in order.
    """

    corpus: PartedCorpus | None = None
    rerank: int = START_RERANK
    n_recall_queries: int = 0
    tried: list[tuple[int, int, float]] = field(default_factory=list)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        block_size: int = RERANK_QUERY_BLOCK,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k``: the ``rerank`` best by PQ code, re-ranked by their exact inner products.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            (Q, k) float32 exact similarities and (Q, k) int64 corpus positions (-1: none), nearest first,
            ties broken by the smaller position.
        """
        assert self.corpus is not None
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        q = len(queries)
        k = min(int(k), self.ntotal)
        depth = min(max(self.rerank, k), self.ntotal)
        sims = np.full((q, k), -np.inf, dtype=np.float32)
        ids = np.full((q, k), -1, dtype=np.int64)
        block_size = max(1, min(int(block_size), RERANK_QUERY_BLOCK))
        for start in range(0, q, block_size):
            qb = queries[start : start + block_size]
            _, cand = self.index.search(qb, depth)
            uniq, inverse = np.unique(np.maximum(cand, 0), return_inverse=True)
            rows = self.corpus.gather(uniq)[inverse.reshape(cand.shape)]  # (B, R, D)
            exact = np.einsum("brd,bd->br", rows, qb)
            empty = np.full((len(qb), 0), -1, dtype=np.int64)
            s, i = _merge_top(empty.astype(np.float32), empty, exact, cand, k)
            sims[start : start + len(qb)], ids[start : start + len(qb)] = s, i
            if progress is not None:
                progress(min(start + block_size, q) / q)
        return sims, ids

    def describe(self) -> str:
        """One line for people: the index, its parameters and the recall measured after re-ranking."""
        p = self.params
        return (
            f"IVF-PQ (nlist={p['nlist']}, m={p['m']}x{p['nbits']} bits, trained on {p['train']:,} rows, "
            f"nprobe={p['nprobe']}) over {len(self.corpus.parts) if self.corpus else 0} part(s), top "
            f"{self.rerank} re-ranked exactly from the shards, measured recall@{self.recall_k} = "
            f"{self.recall:.3f} on {self.n_recall_queries} queries"
        )


def build_ivfpq_index(
    corpus: PartedCorpus,
    *,
    sample_queries: np.ndarray | None = None,
    n_sample: int = RECALL_SAMPLE,
    target_recall: float = 0.95,
    recall_k: int = 10,
    nlist: int | None = None,
    m: int | None = None,
    nbits: int | None = None,
    train_size: int | None = None,
    start_rerank: int = START_RERANK,
    start_nprobe: int = START_NPROBE,
    max_rerank: int = MAX_RERANK,
    max_nprobe: int = MAX_NPROBE,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> IVFPQIndex:
    """Build an IVF-PQ index over ``corpus`` and raise its search depth until the measured recall holds.

    Parameters
    ----------
    corpus : PartedCorpus
        M rows of D dims (L2-normalised for cosine), e.g. ``PartedCorpus.from_run(run, rows=...)``.
    sample_queries : numpy.ndarray, optional
        (S, D) queries like the real ones to measure recall on (default: ``n_sample`` random corpus rows).
    target_recall : float
        ``rerank`` and ``nprobe`` are doubled (from ``start_rerank`` and ``start_nprobe``) until the
        recall@``recall_k`` after re-ranking reaches this, or both reach their limits (``max_rerank``,
        ``max_nprobe``, at most M and ``nlist``); the achieved recall is reported either way.
    start_rerank, start_nprobe, max_rerank, max_nprobe : int
        The first and the largest depths tried (defaults :data:`START_RERANK`, :data:`START_NPROBE`,
        :data:`MAX_RERANK`, :data:`MAX_NPROBE`).
    nlist, m, nbits, train_size : int, optional
        The index's shape (defaults: :func:`default_shape`).
    seed : int
        Seeds the training sample, k-means and the recall sample.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    IVFPQIndex
        ``kind="ivfpq"``; ``recall``, ``params`` (``nlist``, ``m``, ``nbits``, ``train``, ``nprobe``,
        ``rerank``) and ``tried`` ((nprobe, rerank, recall) of each depth tried).
    """
    if corpus.n == 0:
        raise NegScopeError("an IVF-PQ index needs at least one corpus row")
    if progress is not None:
        progress(0.0)
    index, shape = train_and_fill(
        corpus, nlist=nlist, m=m, nbits=nbits, train_size=train_size, seed=seed, progress=progress
    )
    if sample_queries is None:
        sample_queries = corpus.sample(n_sample, seed=seed + 1)
    sample_queries = np.ascontiguousarray(sample_queries, dtype=np.float32)
    k = min(int(recall_k), corpus.n)
    _, reference = exact_search(corpus, sample_queries, k)
    result = IVFPQIndex(index=index, kind="ivfpq", recall=None, recall_k=k, params=dict(shape), corpus=corpus)
    result.n_recall_queries = len(sample_queries)
    nprobe_limit = max(1, min(int(max_nprobe), shape["nlist"]))
    rerank_limit = max(k, min(int(max_rerank), corpus.n))
    nprobe, rerank = min(max(1, int(start_nprobe)), nprobe_limit), min(max(k, int(start_rerank)), rerank_limit)
    while True:
        index.nprobe = nprobe
        result.rerank = rerank
        _, found = result.search(sample_queries, k)
        recall = recall_at_k(found, reference) if len(sample_queries) else 1.0
        result.tried.append((nprobe, rerank, float(recall)))
        if recall >= target_recall or (nprobe >= nprobe_limit and rerank >= rerank_limit):
            break
        nprobe, rerank = min(2 * nprobe, nprobe_limit), min(2 * rerank, rerank_limit)
    result.recall = float(recall)
    result.params.update(nprobe=int(nprobe), rerank=int(rerank))
    if progress is not None:
        progress(1.0)
    return result


def self_graph(
    index: IVFPQIndex, vectors: np.ndarray, k: int, *, progress: Callable[[float], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of every row of the index's own corpus (``vectors``, in corpus order),
    through the re-ranking search: the twin of :func:`analysis.search.exact.knn_graph` for IVF-PQ.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (N, k) float32 exact similarities, descending, and (N, k) int64 rows, never the row itself (where
        the row is absent from its own top ``k + 1``, the last column is dropped instead).
    """
    n = len(vectors)
    k = max(0, min(int(k), n - 1))
    sims, ids = index.search(vectors, k + 1, progress=progress)
    is_self = ids == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    return sims[keep].reshape(n, k), ids[keep].reshape(n, k)
