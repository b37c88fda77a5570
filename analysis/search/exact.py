"""Exact nearest neighbours by inner product (cosine on L2-normalised rows), through faiss.

The search runs in blocks of queries so that the (block, k) result and faiss's scratch memory stay
bounded whatever the number of queries. ``target_ranks`` gives the exact rank of one target per query
among a whole corpus (retrieval ranks), also blocked.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np

from analysis.search.blas import exact_kernel

if TYPE_CHECKING:
    import torch


def take_rows(matrix: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``matrix[ids]``: a view, not a copy, when ``ids`` are consecutive ascending rows (every item of a
    one-modality run, say), else the gathered copy. A view of a memory-mapped run is read-only; its readers
    (faiss, numpy) never write to it.

    Parameters
    ----------
    matrix : numpy.ndarray
        (N, D) rows.
    ids : numpy.ndarray
        (M,) int row ids.

    Returns
    -------
    numpy.ndarray
        (M, D) the rows, in the order of ``ids``.
    """
    ids = np.asarray(ids)
    if len(ids) > 1 and int(ids[-1]) - int(ids[0]) == len(ids) - 1 and int(ids[0]) >= 0 and bool((np.diff(ids) == 1).all()):
        return matrix[int(ids[0]) : int(ids[-1]) + 1]
    return matrix[ids]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` without its warning on a read-only array (a memory-mapped run's rows, which the
    exact kernels only read)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def row_blocks(n: int, block_size: int, progress: Callable[[float], None] | None) -> Iterator[tuple[int, int]]:
    """The ``(start, stop)`` row ranges of consecutive blocks of ``n`` rows, reporting progress after each.

    Parameters
    ----------
    n : int
        Number of rows.
    block_size : int
        Rows per block (the last block may be shorter).
    progress : callable, optional
        Called with the fraction done (``stop / n``) once the caller has finished each block.

    Yields
    ------
    tuple of int
        ``(start, stop)``, half-open.
    """
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        yield start, stop
        if progress is not None:
            progress(stop / n)


def flat_index(corpus: np.ndarray) -> faiss.IndexFlatIP:
    """Build an exact inner-product index over ``corpus`` (M, D) float32."""
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    return index


def knn(
    queries: np.ndarray,
    corpus: np.ndarray | faiss.Index,
    k: int,
    *,
    block_size: int = 4096,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` neighbours of each query by inner product.

    Parameters
    ----------
    queries : numpy.ndarray
        (Q, D) float32.
    corpus : numpy.ndarray or faiss.Index
        (M, D) float32 rows, or an index already built over them.
    k : int
        Neighbours per query (clipped to M).
    block_size : int
        Queries searched at once.
    progress : callable, optional
        Called with the fraction done after each block.

    Returns
    -------
    sims : numpy.ndarray
        (Q, k) float32 similarities, descending.
    ids : numpy.ndarray
        (Q, k) int64 corpus row ids.
    """
    if exact_kernel() == "torch" and (not isinstance(corpus, faiss.Index) or isinstance(corpus, faiss.IndexFlatIP)):
        vectors = corpus if not isinstance(corpus, faiss.Index) else flat_vectors(corpus)
        return torch_knn(queries, vectors, k, progress=progress)
    index = corpus if isinstance(corpus, faiss.Index) else flat_index(corpus)
    k = min(int(k), index.ntotal)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = queries.shape[0]
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    for start, stop in row_blocks(n, block_size, progress):
        sims[start:stop], ids[start:stop] = index.search(queries[start:stop], k)
    return sims, ids


def flat_vectors(index: faiss.IndexFlat) -> np.ndarray:
    """(M, D) float32 view of the rows stored in an exact flat index (no copy)."""
    n, d = int(index.ntotal), int(index.d)
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)


def torch_knn(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    block_size: int = 1024,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product through torch's float32 matmul and top-k (the kernel
    :func:`analysis.search.blas.exact_kernel` picks where faiss's OpenBLAS runs generic kernels).

    Ties among the returned candidates are broken by the lower corpus row.

    Parameters
    ----------
    queries : numpy.ndarray
        (Q, D) float32.
    corpus : numpy.ndarray
        (M, D) float32.
    k : int
        Neighbours per query (clipped to M).
    block_size : int
        Queries multiplied at once (a (block, M) float32 score matrix is held).
    progress : callable, optional
        Called with the fraction done after each block.

    Returns
    -------
    sims : numpy.ndarray
        (Q, k) float32 similarities, descending.
    ids : numpy.ndarray
        (Q, k) int64 corpus row ids.
    """
    import torch

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    n, m = queries.shape[0], corpus.shape[0]
    k = min(int(k), m)
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    if n == 0 or k == 0:
        return sims, ids
    corpus_t = _tensor(corpus)
    with torch.inference_mode():
        for start, stop in row_blocks(n, block_size, progress):
            scores = _tensor(queries[start:stop]) @ corpus_t.T
            # one extra candidate, then a stable sort on (-score, id) so that ties go to the lower row
            top = min(k + 1, m)
            val, idx = torch.topk(scores, top, dim=1)
            v, i = val.numpy(), idx.numpy()
            order = _row_lexsort(v, i)
            v = np.take_along_axis(v, order, axis=1)[:, :k]
            i = np.take_along_axis(i, order, axis=1)[:, :k]
            sims[start:stop], ids[start:stop] = v, i
    return sims, ids


def _row_lexsort(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per row, the order by descending value, then ascending id."""
    key_id = np.argsort(ids, axis=1, kind="stable")
    by_value = np.argsort(-np.take_along_axis(values, key_id, axis=1), axis=1, kind="stable")
    return np.take_along_axis(key_id, by_value, axis=1)


def count_above(
    queries: np.ndarray,
    corpus: np.ndarray,
    thresholds: np.ndarray,
    *,
    block_size: int = 1024,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """How many corpus rows each query scores strictly above its own threshold (an exact rank).

    ``1 + count_above(q, corpus, sim(q, target))`` is the 1-based rank of ``target`` among ``corpus``
    for query ``q`` when ``target`` is not itself a corpus row (subtract it and any other rows to leave out).

    Parameters
    ----------
    queries : numpy.ndarray
        (Q, D) float32.
    corpus : numpy.ndarray
        (M, D) float32.
    thresholds : numpy.ndarray
        (Q,) similarity each query's count is taken above.
    block_size : int
        Queries scored at once (a (block, M) float32 matrix is held).
    progress : callable, optional
        Called with the fraction done after each block.

    Returns
    -------
    numpy.ndarray
        (Q,) int64 counts.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    n = queries.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    for start, stop in row_blocks(n, block_size, progress):
        sims = queries[start:stop] @ corpus.T
        counts[start:stop] = np.count_nonzero(sims > thresholds[start:stop, None], axis=1)
    return counts


def hnsw_index(corpus: np.ndarray, *, m: int = 32, ef_construction: int = 64) -> faiss.IndexHNSWFlat:
    """Build an approximate inner-product HNSW index over ``corpus`` (M, D) float32.

    Parameters
    ----------
    corpus : numpy.ndarray
        (M, D) float32 rows.
    m : int
        Links per node (higher: better recall, more memory, slower build).
    ef_construction : int
        Candidate list size while building.
    """
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    index = faiss.IndexHNSWFlat(corpus.shape[1], int(m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    index.add(corpus)
    return index


def knn_graph(
    vectors: np.ndarray,
    k: int,
    *,
    index: faiss.Index | None = None,
    block_size: int = 4096,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every row among the other rows (each row itself excluded).

    Parameters
    ----------
    vectors : numpy.ndarray
        (N, D) float32 rows, L2-normalised for cosine similarity.
    k : int
        Neighbours per row (clipped to N - 1).
    index : faiss.Index, optional
        An inner-product index already built over exactly these rows, in this order (for example an
        approximate one from :func:`hnsw_index`); default: exact search.
    block_size : int
        Rows searched at once.
    progress : callable, optional
        Called with the fraction done after each block.

    Returns
    -------
    sims : numpy.ndarray
        (N, k) float32 inner products, descending along each row.
    ids : numpy.ndarray
        (N, k) int64 row ids, never the row itself (-1 where an approximate index found too few).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    k = max(0, min(int(k), n - 1))
    if k == 0:
        return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
    if index is not None and index.ntotal != n:
        raise ValueError(f"the index holds {index.ntotal} rows, expected the {n} rows searched")
    sims, ids = knn(vectors, index if index is not None else vectors, k + 1, block_size=block_size, progress=progress)
    # Drop each row's own id; where it is absent (a duplicate ranked first, or an approximate miss),
    # drop the last column instead, so that every row keeps exactly k neighbours.
    is_self = ids == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    return sims[keep].reshape(n, k), ids[keep].reshape(n, k)


@dataclass(frozen=True)
class SharedExclusions:
    """Corpus rows that must not compete with a query's target, shared by groups of queries.

    Several queries often share one exclusion list (every pair of one anchor excludes that anchor's known
    positives), so the lists are stored once per group, in CSR form, and each query names its group.

    Attributes
    ----------
    group : numpy.ndarray
        (Q,) int64 group of each query, in ``[0, G)``.
    indptr : numpy.ndarray
        (G + 1,) int64; the excluded corpus rows of group ``g`` are ``indices[indptr[g]:indptr[g + 1]]``.
    indices : numpy.ndarray
        (nnz,) int64 corpus rows, unique within each group.
    """

    group: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_members(cls, group: np.ndarray, member_group: np.ndarray, member_row: np.ndarray) -> SharedExclusions:
        """Build the lists from (group, corpus row) memberships; duplicates are dropped.

        Parameters
        ----------
        group : numpy.ndarray
            (Q,) group of each query.
        member_group, member_row : numpy.ndarray
            (E,) each membership: corpus row ``member_row[e]`` is excluded for every query of group
            ``member_group[e]``. Rows < 0 (not in the corpus) are ignored.
        """
        group = np.asarray(group, dtype=np.int64)
        member_group = np.asarray(member_group, dtype=np.int64)
        member_row = np.asarray(member_row, dtype=np.int64)
        n_groups = int(max(group.max(initial=-1), member_group.max(initial=-1))) + 1
        keep = member_row >= 0
        pairs = np.unique(np.stack([member_group[keep], member_row[keep]], axis=1), axis=0).reshape(-1, 2)
        counts = np.bincount(pairs[:, 0], minlength=n_groups)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(group=group, indptr=indptr, indices=pairs[:, 1].astype(np.int64))

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The (local query, corpus row) exclusions of queries ``start:stop``, local index = query - start."""
        g = self.group[start:stop]
        lo, hi = self.indptr[g], self.indptr[g + 1]
        counts = hi - lo
        local = np.repeat(np.arange(stop - start, dtype=np.int64), counts)
        offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return local, self.indices[np.repeat(lo, counts) + offsets]


def rank_block_size(n_corpus: int, *, max_block_bytes: int = 512 * 2**20) -> int:
    """Queries per block so that the (block, M) float32 scores plus a bool mask fit ``max_block_bytes``."""
    return max(1, int(max_block_bytes // (5 * max(int(n_corpus), 1))))


def target_ranks(
    queries: np.ndarray,
    corpus: np.ndarray,
    targets: np.ndarray,
    *,
    exclude: SharedExclusions | None = None,
    max_block_bytes: int = 512 * 2**20,
    block_size: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Exact 1-based rank of each query's target among all corpus rows, by inner product.

    ``rank[q] = 1 + #{j : j not excluded for q, s[q, j] > s[q, targets[q]]}`` with ``s = queries @ corpus.T``:
    ties count in the target's favour, the target never competes with itself, and excluded rows never
    compete. The scores are computed in blocks of queries with one float32 matrix product per block (the
    same exhaustive inner-product search that ``faiss.IndexFlatIP`` does, but counting instead of keeping
    a top-k heap, so every rank is exact however deep), and the target's score is read from the same
    product, so rounding never makes a target beat or lose to itself.

    Parameters
    ----------
    queries : numpy.ndarray
        (Q, D) float32.
    corpus : numpy.ndarray
        (M, D) float32.
    targets : numpy.ndarray
        (Q,) int corpus row of each query's target.
    exclude : SharedExclusions, optional
        Corpus rows that do not compete, per query.
    max_block_bytes : int
        Working memory of one block (scores + mask); the block holds ``max_block_bytes / (5 M)`` queries.
    block_size : int, optional
        Queries per block (overrides ``max_block_bytes``).
    progress : callable, optional
        Called with the fraction done after each block.

    Returns
    -------
    numpy.ndarray
        (Q,) int64 ranks in ``[1, M]``.
    """
    import torch

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    n, m = queries.shape[0], corpus.shape[0]
    if targets.shape != (n,):
        raise ValueError(f"targets has shape {targets.shape}, expected ({n},)")
    if n and (targets.min() < 0 or targets.max() >= m):
        raise ValueError("targets must be corpus rows")
    ranks = np.ones(n, dtype=np.int64)
    if n == 0 or m == 0:
        return ranks
    bs = int(block_size) if block_size else rank_block_size(m, max_block_bytes=max_block_bytes)
    bs = max(1, min(bs, n))
    corpus_t = _tensor(corpus)
    query_t = _tensor(queries)
    targets_t = torch.from_numpy(targets)
    scores = torch.empty((bs, m), dtype=torch.float32)
    above = torch.empty((bs, m), dtype=torch.bool)
    with torch.inference_mode():
        for start, stop in row_blocks(n, bs, progress):
            b = stop - start
            s, a = scores[:b], above[:b]
            torch.mm(query_t[start:stop], corpus_t.T, out=s)
            local = torch.arange(b)
            t = s[local, targets_t[start:stop]]
            torch.gt(s, t[:, None], out=a)
            # numpy's byte-wise sum is several times faster than torch's bool reduction on CPU
            counts = a.numpy().view(np.uint8).sum(axis=1, dtype=np.int64)
            if exclude is not None:
                rows, cols = exclude.block(start, stop)
                if len(rows):
                    hit = a[torch.from_numpy(rows), torch.from_numpy(cols)].numpy()
                    counts = counts - np.bincount(rows[hit], minlength=b)
            ranks[start:stop] = counts + 1
    return ranks
