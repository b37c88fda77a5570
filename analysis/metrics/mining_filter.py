"""Hard-negative mining filter preview: which listed negatives a mining rule set would keep.

The interactive version of what sentence-transformers' ``mine_hard_negatives`` and NV-Retriever's
positive-aware mining do offline. Each pair's listed negatives are ranked by ``neg_sim`` descending
(rank 0 = the hardest), and a negative is kept when it passes every enabled rule:

- rank window: ``range_min <= rank < range_max`` (the slicing sentence-transformers applies);
- max score: ``neg_sim <= max_score``;
- absolute margin ``m``: dropped if ``neg_sim > pos_sim - m``;
- relative margin ``m``: dropped if ``neg_sim > pos_sim - |pos_sim| * m`` (sign-safe: unlike
  ``pos_sim * (1 - m)``, the threshold stays below the positive also when ``pos_sim`` is negative).

The kept negatives export in the sentence-transformers column format (``anchor, positive, negative_1 ..
negative_k`` rows, or ``anchor, positive, negative`` triplets), each cell the item's content (the text, or
the image path as the dataset wrote it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError
from analysis.metrics.scores import neg_rank_within_pair
from analysis.runs.candidates import Candidates
from analysis.runs.folder import Run

RULES = ("rank_window", "max_score", "absolute_margin", "relative_margin")
OUTPUT_FORMATS = ("n-tuple", "triplet")


@dataclass(frozen=True)
class FilterSettings:
    """A mining rule set; a rule set to None is off.

    Attributes
    ----------
    range_min : int
        Skip the ``range_min`` hardest negatives of each pair (0 = skip none).
    range_max : int, optional
        Keep only negatives of rank < ``range_max``.
    max_score : float, optional
        Drop negatives with ``neg_sim > max_score``.
    absolute_margin : float, optional
        Drop negatives with ``neg_sim > pos_sim - absolute_margin``.
    relative_margin : float, optional
        Drop negatives with ``neg_sim > pos_sim - |pos_sim| * relative_margin``.
    """

    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None

    def __post_init__(self) -> None:
        if self.range_min < 0:
            raise NegScopeError(f"range_min must be >= 0, got {self.range_min}")
        if self.range_max is not None and self.range_max < self.range_min:
            raise NegScopeError(f"range_max ({self.range_max}) must be >= range_min ({self.range_min})")


@dataclass(frozen=True)
class FilterResult:
    """What a rule set keeps.

    Attributes
    ----------
    kept : numpy.ndarray
        (P, K) bool, True for a listed negative that passes every rule (False where padded).
    dropped_by : dict of str to numpy.ndarray
        Per rule in ``RULES``: (P, K) bool, True where that rule alone would drop a listed negative.
    neg_rank : numpy.ndarray
        (P, K) int64 0-based rank of each negative within its pair by ``neg_sim`` descending (-1 padded).
    """

    kept: np.ndarray
    dropped_by: dict[str, np.ndarray]
    neg_rank: np.ndarray

    @property
    def n_candidates(self) -> int:
        """Listed negatives considered."""
        return int((self.neg_rank >= 0).sum())

    @property
    def n_kept(self) -> int:
        """Negatives kept by every rule."""
        return int(self.kept.sum())

    @property
    def kept_per_pair(self) -> np.ndarray:
        """(P,) number of kept negatives of each pair."""
        return self.kept.sum(axis=1)

    def drop_counts(self) -> dict[str, int]:
        """Per rule: how many listed negatives it drops (a negative can fail several rules)."""
        return {rule: int(mask.sum()) for rule, mask in self.dropped_by.items()}

    def sole_drop_counts(self) -> dict[str, int]:
        """Per rule: how many listed negatives only that rule drops."""
        stacked = np.stack([self.dropped_by[r] for r in RULES])
        only = stacked & (stacked.sum(axis=0) == 1)
        return {rule: int(only[i].sum()) for i, rule in enumerate(RULES)}

    def pairs_below(self, k: int) -> int:
        """Pairs left with fewer than ``k`` kept negatives."""
        return int((self.kept_per_pair < int(k)).sum())


def apply_filter(cands: Candidates, settings: FilterSettings) -> FilterResult:
    """Apply a rule set to every listed negative.

    Parameters
    ----------
    cands : Candidates
        (P, K) positives and listed negatives.
    settings : FilterSettings
        The rules.

    Returns
    -------
    FilterResult
    """
    mask = cands.mask
    neg = cands.neg_sim.astype(np.float64)
    pos = cands.pos_sim.astype(np.float64)[:, None]
    rank = neg_rank_within_pair(cands.neg_sim, mask)
    window = rank < settings.range_min
    if settings.range_max is not None:
        window |= rank >= settings.range_max
    with np.errstate(invalid="ignore"):
        dropped = {
            "rank_window": window & mask,
            "max_score": (neg > settings.max_score) & mask if settings.max_score is not None else np.zeros_like(mask),
            "absolute_margin": (neg > pos - settings.absolute_margin) & mask
            if settings.absolute_margin is not None
            else np.zeros_like(mask),
            "relative_margin": (neg > pos - np.abs(pos) * settings.relative_margin) & mask
            if settings.relative_margin is not None
            else np.zeros_like(mask),
        }
    any_drop = np.logical_or.reduce([dropped[r] for r in RULES])
    return FilterResult(kept=mask & ~any_drop, dropped_by=dropped, neg_rank=rank)


def to_sentence_transformers(
    run: Run,
    cands: Candidates,
    kept: np.ndarray,
    *,
    num_negatives: int,
    output_format: str = "n-tuple",
) -> pd.DataFrame:
    """The kept negatives as a training table in the sentence-transformers column convention.

    Parameters
    ----------
    run : Run
        The run (item contents).
    cands : Candidates
        The candidates the mask refers to.
    kept : numpy.ndarray
        (P, K) bool, from :func:`apply_filter`.
    num_negatives : int
        ``n-tuple``: the k of ``negative_1 .. negative_k``; each pair contributes its ``k`` hardest kept
        negatives, and pairs with fewer than ``k`` kept are left out (as sentence-transformers does).
        ``triplet``: the most kept negatives per pair (each becomes one row).
    output_format : str
        ``"n-tuple"`` or ``"triplet"``.

    Returns
    -------
    pandas.DataFrame
        ``anchor, positive, negative_1 .. negative_k`` or ``anchor, positive, negative``; cells are item
        contents (text, or image path relative to the dataset folder).
    """
    if output_format not in OUTPUT_FORMATS:
        raise NegScopeError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    k = int(num_negatives)
    if k < 1:
        raise NegScopeError(f"the number of negatives must be at least 1, got {k}")
    content = run.items["content"].astype(str).to_numpy()
    p = len(cands.pair_ids)
    filled = np.where(kept, cands.neg_sim, -np.inf)
    order = np.argsort(-filled, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(cands.neg_ids, order, axis=1)
    sorted_kept = np.take_along_axis(kept, order, axis=1)
    n_kept = sorted_kept.sum(axis=1)
    anchors = content[cands.anchor_ids]
    positives = content[cands.positive_ids]
    if output_format == "n-tuple":
        rows = np.flatnonzero(n_kept >= k)
        table = {"anchor": anchors[rows], "positive": positives[rows]}
        for j in range(k):
            table[f"negative_{j + 1}"] = content[sorted_ids[rows, j]] if len(rows) else np.array([], dtype=object)
        return pd.DataFrame(table, columns=["anchor", "positive", *[f"negative_{j + 1}" for j in range(k)]])
    take = sorted_kept & (np.arange(sorted_kept.shape[1])[None, :] < k) if p else sorted_kept
    rows, cols = np.nonzero(take)
    return pd.DataFrame(
        {"anchor": anchors[rows], "positive": positives[rows], "negative": content[sorted_ids[rows, cols]]},
        columns=["anchor", "positive", "negative"],
    )
