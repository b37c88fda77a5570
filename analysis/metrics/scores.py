"""Score distributions: the per-pair table (positive vs listed negatives, margin, retrieval ranks) and its summary.

Definitions (cosine similarities of L2-normalised embeddings, ``sim(a, b) = a · b``):

- ``pos_sim`` = sim(anchor, positive); ``neg_sim`` = sim(anchor, negative) for every listed negative.
- ``hardest_neg`` = max over the pair's listed negatives of ``neg_sim``; ``margin = pos_sim - hardest_neg``
  (NaN for a pair with no listed negative).
- ``rank``: the positive's 1-based retrieval rank among all items of its modality given the anchor
  (:mod:`analysis.metrics.retrieval`); ``reverse_rank``: the anchor's rank given the positive, across modalities only;
  ``rank_kind`` / ``reverse_rank_kind``: how each was found ('exact'; on a large run 'counted' in an approximate top
  with exact re-scoring, or 'estimated' beyond it from a sample).
- ``auroc``: probability that a positive scores above a listed negative (ties count one half), over all
  positives and all listed negatives.
- ``frac_hardest_neg_above_pos``: share of the pairs that have at least one listed negative whose hardest
  negative scores strictly above the positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.metrics.retrieval import has_reverse, rank_kinds, retrieval_metrics, retrieval_ranks
from analysis.runs.candidates import Candidates, build_candidates
from analysis.runs.folder import NEGATIVE_SOURCES, Run

SUMMARY_KEYS = (
    "pairs",
    "pos_sim_mean",
    "neg_sim_mean",
    "auroc",
    "frac_hardest_neg_above_pos",
    "recall_at_1",
    "recall_at_5",
    "recall_at_10",
    "mrr_at_10",
    "reverse",
)
REVERSE_KEYS = ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10")


@dataclass(frozen=True)
class ScoreReport:
    """Everything the score page and the ``scores`` command show.

    Attributes
    ----------
    pairs : pandas.DataFrame
        The per-pair table of :func:`pair_table` (P rows, ``run.pairs`` order).
    summary : dict
        :func:`score_summary` (keys ``SUMMARY_KEYS``).
    candidates : Candidates
        The (P, K) matrices the table was built from.
    negatives : pandas.DataFrame
        One row per listed negative (:func:`negatives_long`).
    """

    pairs: pd.DataFrame
    summary: dict[str, Any]
    candidates: Candidates
    negatives: pd.DataFrame


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve of positives against negatives (Mann-Whitney U / (n_pos n_neg)).

    Parameters
    ----------
    pos : numpy.ndarray
        (n_pos,) scores of the positives.
    neg : numpy.ndarray
        (n_neg,) scores of the negatives.

    Returns
    -------
    float
        ``P(pos > neg) + P(pos == neg) / 2``; NaN when either side is empty.
    """
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    if not len(pos) or not len(neg):
        return float("nan")
    if np.isnan(pos).any() or np.isnan(neg).any():
        return float("nan")
    # Mann-Whitney U by counting: the negatives below each positive, ties counting a half (exact in float64)
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    tied = np.searchsorted(neg, pos, side="right") - below
    u = float(below.sum()) + 0.5 * float(tied.sum())
    return float(u / (len(pos) * len(neg)))


def hardest_negatives(cands: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's hardest listed negative.

    Returns
    -------
    hardest_sim : numpy.ndarray
        (P,) float32 max ``neg_sim`` (NaN for a pair with no negative).
    hardest_col : numpy.ndarray
        (P,) int64 column of it in the (P, K) matrices (-1 for a pair with no negative; first of ties).
    """
    p, k = cands.neg_sim.shape
    if k == 0:
        return np.full(p, np.nan, dtype=np.float32), np.full(p, -1, dtype=np.int64)
    filled = np.where(cands.mask, cands.neg_sim, -np.inf)
    col = np.argmax(filled, axis=1).astype(np.int64)
    has = cands.mask.any(axis=1)
    hardest = np.where(has, filled[np.arange(p), col], np.nan).astype(np.float32)
    return hardest, np.where(has, col, -1)


def pair_table(
    run: Run,
    cands: Candidates,
    *,
    ranks: np.ndarray | None = None,
    reverse_ranks: np.ndarray | None = None,
    wide: bool = True,
    rank_kinds: np.ndarray | None = None,
    reverse_rank_kinds: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per pair with its scores, in ``run.pairs`` order.

    Parameters
    ----------
    run : Run
        The run folder (for the item modality; ids are its item ids).
    cands : Candidates
        From :func:`analysis.runs.candidates.build_candidates`.
    ranks, reverse_ranks : numpy.ndarray, optional
        (P,) retrieval ranks (:mod:`analysis.metrics.retrieval`); missing ones become null columns.
    wide : bool
        Also add ``neg_id_i``, ``neg_sim_i``, ``neg_source_i`` for i = 1 .. K (every listed negative, in the
        order the run lists them).
    rank_kinds, reverse_rank_kinds : numpy.ndarray, optional
        (P,) how each rank was found (:func:`analysis.metrics.retrieval.rank_kinds`); null where not given.

    Returns
    -------
    pandas.DataFrame
        ``pair_id, anchor_id, positive_id, pos_sim, n_negatives, hardest_neg, hardest_neg_id,
        hardest_neg_source, margin, rank, reverse_rank, rank_kind, reverse_rank_kind`` (+ the wide negative
        columns).
    """
    p = len(cands.pair_ids)
    hardest, col = hardest_negatives(cands)
    rows = np.arange(p)
    has = col >= 0
    names = cands.source_names()
    hardest_id = pd.array([pd.NA] * p, dtype="Int64")
    hardest_src = np.full(p, None, dtype=object)
    if has.any():
        hardest_id[has] = cands.neg_ids[rows[has], col[has]]
        hardest_src[has] = names[rows[has], col[has]]

    def rank_col(values: np.ndarray | None) -> pd.api.extensions.ExtensionArray:
        if values is None:
            return pd.array([pd.NA] * p, dtype="Int64")
        return pd.array(np.asarray(values, dtype=np.int64), dtype="Int64")

    table = pd.DataFrame(
        {
            "pair_id": cands.pair_ids,
            "anchor_id": cands.anchor_ids,
            "positive_id": cands.positive_ids,
            "pos_sim": cands.pos_sim.astype(np.float64),
            "n_negatives": cands.mask.sum(axis=1).astype(np.int64),
            "hardest_neg": hardest.astype(np.float64),
            "hardest_neg_id": hardest_id,
            "hardest_neg_source": hardest_src,
            "margin": cands.pos_sim.astype(np.float64) - hardest.astype(np.float64),
            "rank": rank_col(ranks),
            "reverse_rank": rank_col(reverse_ranks),
            "rank_kind": np.full(p, None, dtype=object) if rank_kinds is None else np.asarray(rank_kinds, dtype=object),
            "reverse_rank_kind": (
                np.full(p, None, dtype=object)
                if reverse_rank_kinds is None
                else np.asarray(reverse_rank_kinds, dtype=object)
            ),
        }
    )
    if wide:
        extra = {}
        for j in range(cands.neg_ids.shape[1]):
            present = cands.mask[:, j]
            ids = pd.array(np.where(present, cands.neg_ids[:, j], 0), dtype="Int64")
            ids[~present] = pd.NA
            extra[f"neg_id_{j + 1}"] = ids
            extra[f"neg_sim_{j + 1}"] = cands.neg_sim[:, j].astype(np.float64)
            extra[f"neg_source_{j + 1}"] = np.where(present, names[:, j], None)
        table = pd.concat([table, pd.DataFrame(extra)], axis=1)
    return table


def negatives_long(cands: Candidates) -> pd.DataFrame:
    """One row per listed negative: ``pair_id, negative_id, source, neg_sim, pos_sim, neg_rank``.

    ``neg_rank`` is the negative's 0-based place among its pair's listed negatives by ``neg_sim``,
    descending (0 = the hardest).
    """
    mask = cands.mask
    rows, cols = np.nonzero(mask)
    order = neg_rank_within_pair(cands.neg_sim, mask)
    return pd.DataFrame(
        {
            "pair_id": cands.pair_ids[rows],
            "negative_id": cands.neg_ids[rows, cols],
            "source": cands.source_names()[rows, cols],
            "neg_sim": cands.neg_sim[rows, cols].astype(np.float64),
            "pos_sim": cands.pos_sim[rows].astype(np.float64),
            "neg_rank": order[rows, cols],
        }
    )


def neg_rank_within_pair(neg_sim: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(P, K) int64 0-based rank of each listed negative within its pair by ``neg_sim`` descending, -1 where padded.

    Ties keep the listed order (stable sort).
    """
    filled = np.where(mask, neg_sim, -np.inf)
    order = np.argsort(-filled, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return np.where(mask, ranks, -1).astype(np.int64)


def _clean(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def score_summary(
    cands: Candidates,
    *,
    ranks: np.ndarray,
    reverse_ranks: np.ndarray | None = None,
) -> dict[str, Any]:
    """The summary numbers, with exactly the keys ``SUMMARY_KEYS`` (undefined values are None).

    Parameters
    ----------
    cands : Candidates
        Positives and listed negatives.
    ranks : numpy.ndarray
        (P,) forward retrieval ranks (anchor -> positive).
    reverse_ranks : numpy.ndarray, optional
        (P,) reverse ranks (positive -> anchor); None for a one-modality run, then ``reverse`` is None.

    Returns
    -------
    dict
        ``pairs``, ``pos_sim_mean``, ``neg_sim_mean``, ``auroc``, ``frac_hardest_neg_above_pos``,
        ``recall_at_1``, ``recall_at_5``, ``recall_at_10``, ``mrr_at_10``, and ``reverse`` (a dict of the four
        retrieval metrics, or None).
    """
    pos = cands.pos_sim.astype(np.float64)
    neg = cands.neg_sim[cands.mask].astype(np.float64)
    hardest, col = hardest_negatives(cands)
    has = col >= 0
    out: dict[str, Any] = {
        "pairs": int(len(pos)),
        "pos_sim_mean": _clean(pos.mean()) if len(pos) else None,
        "neg_sim_mean": _clean(neg.mean()) if len(neg) else None,
        "auroc": _clean(auroc(pos, neg)),
        "frac_hardest_neg_above_pos": _clean(np.mean(hardest[has] > cands.pos_sim[has])) if has.any() else None,
    }
    out.update({k: _clean(v) for k, v in retrieval_metrics(ranks).items()})
    out["reverse"] = (
        None if reverse_ranks is None else {k: _clean(v) for k, v in retrieval_metrics(reverse_ranks).items()}
    )
    return out


def score_report(
    run: Run,
    cands: Candidates,
    *,
    ranks: np.ndarray,
    reverse_ranks: np.ndarray | None = None,
    wide: bool = True,
    rank_kinds: np.ndarray | None = None,
    reverse_rank_kinds: np.ndarray | None = None,
) -> ScoreReport:
    """Assemble the per-pair table, the summary and the long negatives table from precomputed ranks."""
    return ScoreReport(
        pairs=pair_table(
            run,
            cands,
            ranks=ranks,
            reverse_ranks=reverse_ranks,
            wide=wide,
            rank_kinds=rank_kinds,
            reverse_rank_kinds=reverse_rank_kinds,
        ),
        summary=score_summary(cands, ranks=ranks, reverse_ranks=reverse_ranks),
        candidates=cands,
        negatives=negatives_long(cands),
    )


def compute_scores(
    run: Run,
    *,
    sources: tuple[str, ...] = NEGATIVE_SOURCES,
    max_block_bytes: int = 512 * 2**20,
    progress: Callable[[float], None] | None = None,
) -> ScoreReport:
    """Per-pair table and summary of a run (both retrieval directions where the modalities differ).

    Parameters
    ----------
    run : Run
        The run folder.
    sources : tuple of str
        Negative sources to include (``given``, ``in_batch``, ``mined``).
    max_block_bytes : int
        Working memory of one block of the exhaustive retrieval search.
    progress : callable, optional
        Called with the fraction done of the ranking step.
    """
    cands = build_candidates(run, sources=tuple(sources))
    both = has_reverse(run)

    def part(offset: float, share: float) -> Callable[[float], None] | None:
        if progress is None:
            return None
        return lambda frac: progress(offset + share * frac)

    share = 0.5 if both else 1.0
    ranks = retrieval_ranks(run, max_block_bytes=max_block_bytes, progress=part(0.0, share))
    reverse_ranks = (
        retrieval_ranks(run, reverse=True, max_block_bytes=max_block_bytes, progress=part(0.5, 0.5)) if both else None
    )
    return score_report(
        run,
        cands,
        ranks=ranks,
        reverse_ranks=reverse_ranks,
        rank_kinds=rank_kinds(run),
        reverse_rank_kinds=rank_kinds(run, reverse=True) if both else None,
    )
