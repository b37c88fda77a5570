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

How close that is, is measured rather than assumed: :func:`check_ranks` recomputes the exact ranks of a seeded
random sample of ``CHECK_SAMPLE`` queries and counts the queries whose rank differs within the top ``MRR_K``
(``min(rank, MRR_K + 1)``). Every recall@k (``k <= MRR_K``) and MRR@10 over all queries differs from the exact
one by at most the share of such queries over all of them (each query moves a recall or a reciprocal rank by at
most 1/Q), so the Clopper-Pearson upper bound of that share (95%) bounds the metrics' error: with no difference
in 800 sampled queries, +-0.0046.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import betaincinv

from analysis.search.exact import SharedExclusions, count_above, row_blocks
from analysis.search.index import SearchIndex

#: Neighbours searched per query, within which a rank is counted rather than estimated.
TOP_K = 32
#: Corpus rows sampled to estimate a rank beyond ``TOP_K``.
RANK_SAMPLE = 4096
#: Queries whose estimated ranks are checked against exact ones (:func:`check_ranks`).
CHECK_SAMPLE = 800
#: Ranks are compared within this top (recall@k for k <= it, MRR@it).
MRR_K = 10
#: Two-sided confidence level of the error bound.
CONFIDENCE = 0.95
#: Excluded rows per query up to which they are compared directly (more: one sorted look-up).
_DENSE_EXCLUSIONS = 16
_EPS = 1e-6


def _excluded(ids: np.ndarray, exclude: SharedExclusions, n_corpus: int) -> np.ndarray:
    """(Q, k) bool: whether each found row ``ids`` is excluded for its query."""
    n = ids.shape[0]
    counts = exclude.indptr[exclude.group + 1] - exclude.indptr[exclude.group]
    width = int(counts.max(initial=0))
    if width == 0:
        return np.zeros(ids.shape, dtype=bool)
    rows, cols = exclude.block(0, n)
    if width <= _DENSE_EXCLUSIONS:
        # each query's few excluded rows side by side (-2 pads: never a row, never faiss's -1)
        dense = np.full((n, width), -2, dtype=np.int64)
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        dense[rows, slot] = cols
        out = np.zeros(ids.shape, dtype=bool)
        for j in range(width):
            out |= ids == dense[:, j : j + 1]
        return out
    excluded_keys = np.unique(rows * n_corpus + cols)
    keys = np.arange(n, dtype=np.int64)[:, None] * n_corpus + np.maximum(ids, 0)
    return np.isin(keys, excluded_keys)


def error_bound(differ: int, n: int, *, population: int | None = None, level: float = CONFIDENCE) -> float:
    """Upper confidence bound of a share from ``differ`` hits among ``n`` sampled units (Clopper-Pearson).

    Parameters
    ----------
    differ : int
        Sampled units that have the property (here: a rank that differs from the exact one within the top).
    n : int
        Sampled units (drawn uniformly without replacement).
    population : int, optional
        Units in all; when the sample is all of them the share is known: ``differ / n`` is returned.
    level : float
        Two-sided confidence level (the upper end of its interval is returned).

    Returns
    -------
    float
        In ``[0, 1]``; 1.0 when nothing was sampled.
    """
    differ, n = int(differ), int(n)
    if n <= 0:
        return 1.0
    if population is not None and n >= int(population):
        return differ / n
    if differ >= n:
        return 1.0
    # the beta quantile (scipy.stats.beta.ppf) through scipy.special, which imports in a fraction of the time
    return float(betaincinv(differ + 1, n - differ, 1.0 - (1.0 - level) / 2.0))


def sample_target_ranks(
    queries: np.ndarray,
    corpus: np.ndarray,
    targets: np.ndarray,
    *,
    exclude: SharedExclusions | None = None,
    block_size: int = 128,
) -> np.ndarray:
    """Exact 1-based ranks of a few queries' targets, as :func:`analysis.search.exact.target_ranks` defines them.

    The same count (rows scoring strictly above the target's score, read from the same float32 product; the
    target and excluded rows never compete) through numpy's matrix product in small blocks, for the few hundred
    queries of a check, where loading torch (``target_ranks``' kernel) would cost more than the search.

    Parameters
    ----------
    queries, corpus : numpy.ndarray
        (Q, D) and (M, D) float32.
    targets : numpy.ndarray
        (Q,) int corpus row of each query's target.
    exclude : SharedExclusions, optional
        Corpus rows that do not compete, per query.
    block_size : int
        Queries per product (a (block, M) float32 block is held).

    Returns
    -------
    numpy.ndarray
        (Q,) int64 ranks.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    n = queries.shape[0]
    ranks = np.ones(n, dtype=np.int64)
    for start, stop in row_blocks(n, block_size, None):
        sims = queries[start:stop] @ corpus.T
        local = np.arange(stop - start)
        own = sims[local, targets[start:stop]]
        above = sims > own[:, None]
        if exclude is not None:
            rows, cols = exclude.block(start, stop)
            above[rows, cols] = False
        ranks[start:stop] += np.count_nonzero(above, axis=1)
    return ranks


def check_ranks(
    queries: np.ndarray,
    corpus: np.ndarray,
    targets: np.ndarray,
    ranks: np.ndarray,
    *,
    exclude: SharedExclusions | None = None,
    sample: int = CHECK_SAMPLE,
    within: int = MRR_K,
    seed: int = 0,
) -> dict:
    """Compare ``ranks`` with exact ranks on a seeded random sample of the queries.

    Parameters
    ----------
    queries, corpus, targets, exclude
        As for :func:`estimated_target_ranks`: (Q, D), (M, D), (Q,) and the exclusions.
    ranks : numpy.ndarray
        (Q,) the ranks to check (1-based).
    sample : int
        Queries checked (all of them when Q is smaller).
    within : int
        Ranks are compared as ``min(rank, within + 1)``: what recall@k (``k <= within``) and MRR@``within`` see.
    seed : int
        Seed of the sample.

    Returns
    -------
    dict
        ``checked`` (queries), ``differ`` (queries whose rank differs within the top), ``within``, and
        ``max_error``: the Clopper-Pearson upper bound (95%) of the share of all Q queries that differ, which
        bounds ``|metric - exact metric|`` of every recall@k (``k <= within``) and MRR@``within``.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    n = len(ranks)
    picked = np.sort(np.random.default_rng(seed).choice(n, size=min(int(sample), n), replace=False))
    sub = None
    if exclude is not None:
        sub = SharedExclusions(group=exclude.group[picked], indptr=exclude.indptr, indices=exclude.indices)
    exact = sample_target_ranks(
        np.ascontiguousarray(queries[picked], dtype=np.float32), corpus, np.asarray(targets)[picked], exclude=sub
    )
    cap = int(within) + 1
    differ = int(np.count_nonzero(np.minimum(exact, cap) != np.minimum(ranks[picked], cap)))
    return {
        "checked": int(len(picked)),
        "differ": differ,
        "within": int(within),
        "max_error": error_bound(differ, len(picked), population=n),
    }


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
    info: dict | None = None,
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
    info : dict, optional
        Filled with ``beyond``: (Q,) bool, True where the rank lies beyond the searched top and was estimated
        from the sample (False: counted among exactly re-scored neighbours).
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
    if info is not None:
        info["beyond"] = np.zeros(n, dtype=bool)
    if n == 0 or m == 0:
        return np.ones(n, dtype=np.int64)
    threshold = np.einsum("ij,ij->i", queries, corpus[targets]) + _EPS
    top_k = max(1, min(int(top_k), m))
    sims, ids = index.search(queries, top_k, progress=None if progress is None else lambda f: progress(0.7 * f))
    found = ids >= 0
    competing = found & (ids != targets[:, None])
    if exclude is not None:
        competing &= ~_excluded(ids, exclude, m)
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
        if info is not None:
            info["beyond"][deep] = True
    if progress is not None:
        progress(1.0)
    return ranks
