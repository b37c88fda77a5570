"""The rank of one target per query, exact or (above the rule's budget) from the top of an approximate ranking.

Retrieval metrics (recall@k, MRR@10) only need the top of each ranking. When
:func:`analysis.search.rule.choose_kind` says the exact computation (``Q x M x D``) is too much work,
:func:`estimated_target_ranks` searches each query's top ``top_k`` through an approximate index (IVF, its
recall@10 measured on a sample), re-scores them exactly (an IVF-Flat index holds the raw vectors, so each
found similarity is exact), and

- where the target lies within that top (``rank <= top_k``), its rank is the count of the non-excluded rows
  found above it, plus one: exact up to the index's measured recall (a row the index missed can only make
  the rank too small);
- beyond it, the rank is estimated from a uniform sample of ``sample`` corpus rows (the share of the sample
  above the target, times M), never below ``top_k + 1``.

So recall@k and MRR@10 for ``k <= top_k`` are those of the exact ranks, up to the recall; deeper ranks are
estimates (``rank_kind = "estimated"`` says so next to them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from analysis.search.exact import SharedExclusions, count_above
from analysis.search.index import SearchIndex

#: Neighbours searched per query, within which a rank is counted rather than estimated.
TOP_K = 32
#: Corpus rows sampled to estimate a rank beyond ``TOP_K``.
RANK_SAMPLE = 4096
_EPS = 1e-6


def estimated_target_ranks(
    queries: np.ndarray,
    corpus: np.ndarray,
    targets: np.ndarray,
    index: SearchIndex,
    *,
    exclude: SharedExclusions | None = None,
    top_k: int = TOP_K,
    sample: int = RANK_SAMPLE,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """1-based rank of each query's target among ``corpus``: counted in the approximate top, estimated beyond.

    Parameters
    ----------
    queries : numpy.ndarray
        (Q, D) float32.
    corpus : numpy.ndarray
        (M, D) float32, the rows ``index`` was built over, in order.
    targets : numpy.ndarray
        (Q,) int corpus row of each query's target.
    index : SearchIndex
        An index over ``corpus`` (approximate or exact).
    exclude : SharedExclusions, optional
        Corpus rows that do not compete, per query.
    top_k : int
        Rows searched per query.
    sample : int
        Corpus rows sampled (uniformly, ``seed``) for ranks beyond ``top_k``.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    numpy.ndarray
        (Q,) int64 ranks in ``[1, M]``.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    n, m = queries.shape[0], corpus.shape[0]
    if n == 0 or m == 0:
        return np.ones(n, dtype=np.int64)
    threshold = np.einsum("ij,ij->i", queries, corpus[targets]) + _EPS
    top_k = max(1, min(int(top_k), m))
    sims, ids = index.search(queries, top_k, progress=None if progress is None else lambda f: progress(0.7 * f))
    found = ids >= 0
    competing = found & (ids != targets[:, None])
    if exclude is not None:
        rows, cols = exclude.block(0, n)
        if len(rows):
            excluded_keys = np.unique(rows * m + cols)
            keys = np.arange(n, dtype=np.int64)[:, None] * m + np.maximum(ids, 0)
            competing &= ~np.isin(keys, excluded_keys)
    in_top = np.count_nonzero(competing & (sims > threshold[:, None]), axis=1)
    # the target's threshold lies within the searched top when a found row scores at or below it
    within = (found & (sims <= threshold[:, None])).any(axis=1) | (ids == targets[:, None]).any(axis=1)
    ranks = 1 + in_top.astype(np.int64)
    deep = np.flatnonzero(~within)
    if len(deep):
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(m, size=min(int(sample), m), replace=False))
        above = count_above(queries[deep], corpus[picked], threshold[deep], block_size=4096)
        scaled = np.rint(above * (m / len(picked))).astype(np.int64)
        ranks[deep] = np.minimum(np.maximum(1 + scaled, top_k + 1), m)
    if progress is not None:
        progress(1.0)
    return ranks
