"""The modality gap (Liang et al. 2022, "Mind the Gap"): how far apart the two sides sit, and what closing it changes.

Groups
------
Two-modality runs: group A = every image item, group B = every text item, and
``gap_vector = mean(image) - mean(text)`` over the L2-normalised rows. One-modality runs (text on both sides):
group A = the **anchor side** (every item used as an anchor), group B = the **positive side** (every other item:
positives and negatives), which measures the query/document asymmetry instead.

Metrics
-------
- ``centroid_distance`` = ``||gap_vector||``; ``centroid_cosine`` = cosine between the two centroids.
- ``mean_cosine`` of each group: mean cosine over distinct pairs within the group (1 = a needle-thin cone).
- ``gap_variance_share``: the share of the pooled embeddings' total variance that lies along the gap direction.
- ``separability``: cross-validated accuracy of a logistic regression predicting the group from the embedding,
  on a balanced subsample (0.5 = indistinguishable, 1 = perfectly separated).

Shift experiment
----------------
Move group A by ``-lambda/2 * gap_vector`` and group B by ``+lambda/2 * gap_vector``, re-normalise, and measure
Recall@1 (each anchor retrieves among every positive-side item: positives and listed negatives, exact search) and
the mean InfoNCE loss over each pair's candidates at the learned tau. ``lambda = 0`` is the checkpoint,
``lambda = 1`` moves the (pre-normalisation) centroids onto each other, and ``lambda_close`` (found by a bounded
1-D search) makes the re-normalised centroids coincide. "Project out" removes the gap direction from every
embedding instead (``x - (x·u) u``, re-normalised) and recomputes the score distributions.

Large runs
----------
The metrics use every item (summed block by block, never a float64 copy of the whole matrix), except
separability (a balanced sample of at most 2,000 per group). The shift experiment costs an exact search per
lambda, so :func:`shift_experiment` and :func:`gap_report` can run it on seeded samples, and say so
(:class:`ShiftSample`): the closing lambda and each lambda's centroid distance on at most ``max_items`` items
(half from each group), recall@1, loss and candidate accuracy on at most ``max_pairs`` pairs, whose positives
and listed negatives are then the search gallery (a smaller gallery than the whole positive side, so recall@1 is
that of the sample's retrieval task). A 95% interval of a share measured on ``n`` pairs is at most
``+-1.96 sqrt(0.25 / n)`` (+-0.031 at 1,024 pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from analysis.choices import GAP_LAMBDAS as DEFAULT_LAMBDAS
from analysis.choices import GAP_MAX_SHIFT_ITEMS as MAX_SHIFT_ITEMS
from analysis.choices import GAP_MAX_SHIFT_PAIRS as MAX_SHIFT_PAIRS
from analysis.errors import NegScopeError
from analysis.metrics.temperature import learned_or_default_tau, sweep
from analysis.runs.candidates import build_candidates
from analysis.runs.folder import Run
from analysis.search.exact import knn

MIN_PER_GROUP = 10
#: Rows re-normalised at a time when summing over every item (bounds the float64 working copy).
_CHUNK = 32768


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------------------------ groups


@dataclass(frozen=True)
class Groups:
    """The two sides whose gap is measured.

    Attributes
    ----------
    names : tuple of str
        (name of A, name of B): ``("image", "text")`` or ``("anchor side", "positive side")``.
    a_ids, b_ids : numpy.ndarray
        Item ids of each group (disjoint, together every item that takes part).
    one_modality : bool
        True when both sides are one modality (the groups are then roles, not modalities).
    note : str
        One sentence saying what the groups are, for the page and the CLI.
    """

    names: tuple[str, str]
    a_ids: np.ndarray
    b_ids: np.ndarray
    one_modality: bool
    note: str


def modality_groups(run: Run) -> Groups:
    """Image vs text items for two-modality runs; anchor side vs positive side for one-modality runs."""
    modality = run.items["modality"].astype(str).to_numpy()
    kinds = sorted(set(modality), key=lambda m: (m != "image", m))
    if len(kinds) >= 2:
        a, b = kinds[0], kinds[1]
        return Groups(
            names=(a, b),
            a_ids=np.flatnonzero(modality == a),
            b_ids=np.flatnonzero(modality == b),
            one_modality=False,
            note=f"The two groups are the {a} and the {b} embeddings; gap_vector = mean({a}) - mean({b}).",
        )
    is_anchor = np.zeros(len(modality), dtype=bool)
    is_anchor[run.pairs["anchor_id"].to_numpy(np.int64)] = True
    used = np.zeros(len(modality), dtype=bool)
    used[run.pairs["positive_id"].to_numpy(np.int64)] = True
    used[run.negatives["negative_id"].to_numpy(np.int64)] = True
    return Groups(
        names=("anchor side", "positive side"),
        a_ids=np.flatnonzero(is_anchor),
        b_ids=np.flatnonzero(used & ~is_anchor),
        one_modality=True,
        note=(
            f"This dataset has one modality ({kinds[0] if kinds else 'none'}), so the two groups are the anchor side "
            "(every item used as an anchor) and the positive side (positives and negatives): the gap measures the "
            "query/document asymmetry."
        ),
    )


# ------------------------------------------------------------------------------------------------ metrics


def mean_pairwise_cosine(x: np.ndarray) -> float:
    """Mean cosine over distinct pairs of rows: ``(||sum x_i||^2 - n) / (n (n - 1))`` for unit rows.

    Returns NaN for fewer than two rows.
    """
    x = _unit(x)
    n = len(x)
    if n < 2:
        return float("nan")
    s = x.sum(axis=0)
    return float((s @ s - np.sum(x * x)) / (n * (n - 1)))


def variance_share_along(x: np.ndarray, direction: np.ndarray) -> float:
    """Share of the total variance of the rows of ``x`` (N, D) that lies along ``direction`` (D,)."""
    x = np.asarray(x, dtype=np.float64)
    u = _unit(np.asarray(direction, dtype=np.float64)[None])[0]
    xc = x - x.mean(axis=0)
    total = float(np.mean(np.sum(xc * xc, axis=1)))
    if total <= 0:
        return float("nan")
    return float(np.mean((xc @ u) ** 2) / total)


def separability(
    xa: np.ndarray,
    xb: np.ndarray,
    *,
    folds: int = 5,
    max_per_group: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Cross-validated accuracy of a logistic regression telling group A from group B.

    Both groups are subsampled to the same size (at most ``max_per_group``), so chance level is 0.5.

    Returns
    -------
    (float, float)
        Mean and standard deviation of the fold accuracies; NaN when a group has fewer than ``MIN_PER_GROUP`` rows.
    """
    n = min(len(xa), len(xb), max_per_group)
    if n < max(MIN_PER_GROUP, folds):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    sa = np.asarray(xa)[rng.choice(len(xa), size=n, replace=False)]
    sb = np.asarray(xb)[rng.choice(len(xb), size=n, replace=False)]
    x = np.vstack([sa, sb]).astype(np.float64)
    y = np.concatenate([np.zeros(n, dtype=int), np.ones(n, dtype=int)])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # one BLAS thread: these small fits only lose to thread start-up and oversubscription
    with threadpool_limits(limits=1):
        scores = cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=cv, scoring="accuracy")
    return float(scores.mean()), float(scores.std())


def _group_sums(embeddings: np.ndarray, ids: np.ndarray, direction: np.ndarray | None = None) -> dict[str, object]:
    """Sums over the re-normalised rows ``ids`` of ``embeddings``, block by block, without a float64 copy.

    Each row ``x`` counts as ``w x`` with ``w = 1 / |x|`` (float64). The rows of a run are already unit, so
    ``sum(w x) = sum(x) + sum((w - 1) x)``: the first sum in float64 (numpy's pairwise summation of the float32
    rows), the second a float32 matrix-vector product of tiny numbers, whose rounding is far below the digits
    that matter.

    Returns
    -------
    dict
        ``n``; ``sum`` (D,) of the rows; ``sq``: sum of their squared norms; with ``direction`` (D,), unit,
        also ``along``: sum of the rows' squared projections on it.
    """
    d = embeddings.shape[1]
    total, sq, along = np.zeros(d), 0.0, 0.0
    u64 = None if direction is None else np.asarray(direction, dtype=np.float64)
    u32 = None if u64 is None else u64.astype(np.float32)
    for start in range(0, len(ids), _CHUNK):
        x = np.asarray(embeddings[ids[start : start + _CHUNK]])
        norms2 = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        w = 1.0 / np.maximum(np.sqrt(norms2), 1e-12)
        sq += float(np.sum(norms2 * w * w))
        if x.dtype == np.float32 and (not len(w) or np.abs(w - 1.0).max() < 1e-3):
            # unit float32 rows (a run's): no float64 copy
            x = np.ascontiguousarray(x)
            total += x.sum(axis=0, dtype=np.float64) + (x.T @ (w - 1.0).astype(np.float32)).astype(np.float64)
            if u32 is not None:
                along += float(np.sum(((x @ u32).astype(np.float64) * w) ** 2))
        else:
            x64 = np.asarray(x, dtype=np.float64) * w[:, None]
            total += x64.sum(axis=0)
            if u64 is not None:
                along += float(np.sum((x64 @ u64) ** 2))
    return {"n": len(ids), "sum": total, "sq": sq, "along": along}


def gap_vector(embeddings: np.ndarray, groups: Groups) -> np.ndarray:
    """(D,) float64 ``mean(A) - mean(B)`` of the re-normalised rows (block by block)."""
    a, b = _group_sums(embeddings, groups.a_ids), _group_sums(embeddings, groups.b_ids)
    return a["sum"] / max(a["n"], 1) - b["sum"] / max(b["n"], 1)


@dataclass(frozen=True)
class GapMetrics:
    """Gap metrics of one embedding matrix (see the module docstring).

    Attributes
    ----------
    gap_vector : numpy.ndarray
        (D,) mean(A) - mean(B).
    centroid_distance, centroid_cosine, gap_variance_share, separability, separability_std : float
    mean_cosine : dict
        Group name -> mean pairwise cosine within the group.
    n_a, n_b : int
        Group sizes.
    messages : list of str
        Why a value is NaN.
    """

    gap_vector: np.ndarray
    centroid_distance: float
    centroid_cosine: float
    mean_cosine: dict[str, float]
    gap_variance_share: float
    separability: float
    separability_std: float
    n_a: int
    n_b: int
    messages: list[str] = field(default_factory=list)


def gap_metrics(
    embeddings: np.ndarray,
    groups: Groups,
    *,
    folds: int = 5,
    max_per_group: int = 2000,
    seed: int = 0,
) -> GapMetrics:
    """Centroid distance and cosine, cone widths, variance share along the gap, and separability.

    Parameters
    ----------
    embeddings : numpy.ndarray
        (N, D) embeddings (rows are re-normalised).
    groups : Groups
        From :func:`modality_groups`.
    folds, max_per_group, seed
        Options of :func:`separability`.
    """
    n_a, n_b = len(groups.a_ids), len(groups.b_ids)
    messages = []
    if n_a == 0 or n_b == 0:
        raise NegScopeError(f"the run has no {groups.names[0] if n_a == 0 else groups.names[1]} items")
    sa, sb = _group_sums(embeddings, groups.a_ids), _group_sums(embeddings, groups.b_ids)
    ca, cb = sa["sum"] / n_a, sb["sum"] / n_b
    gap = ca - cb
    denom = np.linalg.norm(ca) * np.linalg.norm(cb)
    # separability on a balanced sample: only the sampled rows are gathered (and re-normalised)
    n_sep = min(n_a, n_b, max_per_group)
    rng = np.random.default_rng(seed)
    pick_a = groups.a_ids[np.sort(rng.choice(n_a, size=n_sep, replace=False))]
    pick_b = groups.b_ids[np.sort(rng.choice(n_b, size=n_sep, replace=False))]
    sep, sep_std = separability(
        _unit(embeddings[pick_a]), _unit(embeddings[pick_b]), folds=folds, max_per_group=max_per_group, seed=seed
    )
    if np.isnan(sep):
        messages.append(
            f"separability needs at least {max(MIN_PER_GROUP, folds)} items in each group "
            f"({groups.names[0]}: {n_a}, {groups.names[1]}: {n_b})."
        )

    def cone(sums: dict) -> float:
        n, total = sums["n"], sums["sum"]
        return float((total @ total - sums["sq"]) / (n * (n - 1))) if n >= 2 else float("nan")

    share = float("nan")
    if np.linalg.norm(gap) > 0:
        # variance along u of the pooled rows: E[(x.u)^2] - (E[x].u)^2, over E||x||^2 - ||E[x]||^2
        u = gap / np.linalg.norm(gap)
        along = _group_sums(embeddings, groups.a_ids, u)["along"] + _group_sums(embeddings, groups.b_ids, u)["along"]
        n = n_a + n_b
        mean = (sa["sum"] + sb["sum"]) / n
        total = (sa["sq"] + sb["sq"]) / n - float(mean @ mean)
        share = float((along / n - float(mean @ u) ** 2) / total) if total > 0 else float("nan")
    return GapMetrics(
        gap_vector=gap,
        centroid_distance=float(np.linalg.norm(gap)),
        centroid_cosine=float(ca @ cb / denom) if denom > 0 else float("nan"),
        mean_cosine={groups.names[0]: cone(sa), groups.names[1]: cone(sb)},
        gap_variance_share=share,
        separability=sep,
        separability_std=sep_std,
        n_a=n_a,
        n_b=n_b,
        messages=messages,
    )


# ------------------------------------------------------------------------------------------------ shift


def shift_embeddings(embeddings: np.ndarray, groups: Groups, gap_vector: np.ndarray, lam: float) -> np.ndarray:
    """Move group A by ``-lam/2 * gap`` and group B by ``+lam/2 * gap``, then re-normalise every row.

    Returns
    -------
    numpy.ndarray
        (N, D) float32; rows of items in neither group are only re-normalised.
    """
    out = np.asarray(embeddings, dtype=np.float64).copy()
    half = 0.5 * float(lam) * np.asarray(gap_vector, dtype=np.float64)
    out[groups.a_ids] -= half
    out[groups.b_ids] += half
    return _unit(out).astype(np.float32)


class _ShiftedCentroids:
    """The groups' centroids after :func:`shift_embeddings`, without shifting (or copying) every row per lambda.

    A row ``x`` moved by ``-h`` (group A; ``+h`` for B) and re-normalised is ``(x - h) / r`` with
    ``r^2 = |x|^2 - 2 x.h + |h|^2``, so a group's mean is ``(X^T w - h sum(w)) / n`` with ``w = 1 / r``. The
    weights hardly vary, so ``X^T w = mean(w) X^T 1 + X^T (w - mean(w))``: the first term from the float64 row
    sum (computed once), the second a float32 matrix-vector product of small numbers (its rounding is far below
    the float64 result's last digits that matter); no float64 copy of the rows is made.
    """

    def __init__(self, embeddings: np.ndarray, groups: Groups, gap_vector: np.ndarray) -> None:
        self.gap = np.asarray(gap_vector, dtype=np.float64)
        self.rows = [np.ascontiguousarray(embeddings[ids], dtype=np.float32) for ids in (groups.a_ids, groups.b_ids)]
        self.sums = [x.sum(axis=0, dtype=np.float64) for x in self.rows]
        self.sq = [np.einsum("ij,ij->i", x, x, dtype=np.float64) for x in self.rows]
        self.dot = [(x @ self.gap.astype(np.float32)).astype(np.float64) for x in self.rows]

    def distance(self, lam: float) -> float:
        """``||mean(A') - mean(B')||`` after shifting by ``lam``."""
        h = 0.5 * float(lam) * self.gap
        hh = float(h @ h)
        means = []
        for sign, x, total, sq, dot in zip((-1.0, 1.0), self.rows, self.sums, self.sq, self.dot, strict=True):
            n = max(len(x), 1)
            w = 1.0 / np.maximum(np.sqrt(np.maximum(sq + sign * float(lam) * dot + hh, 0.0)), 1e-12)
            mean_w = float(w.mean()) if len(w) else 0.0
            xtw = mean_w * total + (x.T @ (w - mean_w).astype(np.float32)).astype(np.float64)
            means.append((xtw + sign * h * w.sum()) / n)
        return float(np.linalg.norm(means[0] - means[1]))


def centroid_distance_after_shift(embeddings: np.ndarray, groups: Groups, gap_vector: np.ndarray, lam: float) -> float:
    """``||mean(A') - mean(B')||`` after :func:`shift_embeddings` with ``lam``."""
    return _ShiftedCentroids(embeddings, groups, gap_vector).distance(lam)


def closing_lambda(
    embeddings: np.ndarray,
    groups: Groups,
    gap_vector: np.ndarray,
    *,
    upper: float = 4.0,
    max_items: int | None = None,
    seed: int = 0,
) -> float:
    """The lambda in [0, upper] that minimises the centroid distance after re-normalisation.

    Parameters
    ----------
    embeddings : numpy.ndarray
        (N, D) unit rows.
    groups : Groups
        The two groups.
    gap_vector : numpy.ndarray
        (D,) mean(A) - mean(B).
    upper : float
        Largest lambda searched.
    max_items : int, optional
        When the groups hold more items than this, the search runs on a seeded random sample of at most
        ``max_items // 2`` items per group (each step re-normalises every row, which takes seconds on 100k+
        items); None: every item.
    seed : int
        Seed of that sample.
    """
    if np.linalg.norm(gap_vector) == 0:
        return 0.0
    if max_items is not None and len(groups.a_ids) + len(groups.b_ids) > max_items:
        rng = np.random.default_rng(seed)
        a = rng.choice(groups.a_ids, size=min(len(groups.a_ids), max_items // 2), replace=False)
        b = rng.choice(groups.b_ids, size=min(len(groups.b_ids), max_items // 2), replace=False)
        embeddings = np.asarray(embeddings)[np.concatenate([a, b])]
        groups = replace(groups, a_ids=np.arange(len(a)), b_ids=len(a) + np.arange(len(b)))
    return _closing_of(_ShiftedCentroids(embeddings, groups, gap_vector), upper=upper)


def _closing_of(centroids: _ShiftedCentroids, *, upper: float = 4.0) -> float:
    """The lambda in [0, upper] minimising ``centroids.distance`` (0 when the gap vector is zero)."""
    if np.linalg.norm(centroids.gap) == 0:
        return 0.0
    res = minimize_scalar(
        centroids.distance,
        bounds=(0.0, upper),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(res.x)


def project_out(embeddings: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Remove the component along ``direction`` from every row (``x - (x·u) u``) and re-normalise.

    Returns
    -------
    numpy.ndarray
        (N, D) float32.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    u = _unit(np.asarray(direction, dtype=np.float64)[None])[0]
    return _unit(x - np.outer(x @ u, u)).astype(np.float32)


#: Pairs whose recall@1 is computed (exactly) when all of them would exceed the search rule's budget.
RECALL_SAMPLE_PAIRS = 2048


def recall_at_1(run: Run, embeddings: np.ndarray) -> float:
    """Share of pairs whose anchor's nearest positive-side item (positives and listed negatives) is its positive.

    Exact inner-product search (faiss, through :func:`analysis.search.exact.knn`); when
    :func:`analysis.search.rule.choose_kind` says searching every pair is too much work, on a seeded random
    sample of ``RECALL_SAMPLE_PAIRS`` pairs (the same pairs at every lambda; 95% interval at most +-0.022,
    +-0.006 at a recall of 0.98).
    """
    from analysis.search.rule import choose_kind

    anchors = run.pairs["anchor_id"].to_numpy(np.int64)
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    gallery = np.unique(np.concatenate([positives, run.negatives["negative_id"].to_numpy(np.int64)]))
    if len(anchors) == 0:
        return float("nan")
    if choose_kind(len(anchors), len(gallery), embeddings.shape[1]) != "exact" and len(anchors) > RECALL_SAMPLE_PAIRS:
        pick = np.sort(np.random.default_rng(0).choice(len(anchors), RECALL_SAMPLE_PAIRS, replace=False))
        anchors, positives = anchors[pick], positives[pick]
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    uniq, inverse = np.unique(anchors, return_inverse=True)
    _, ids = knn(emb[uniq], emb[gallery], 1)
    top = gallery[ids[inverse, 0]]
    return float(np.mean(top == positives))


def shift_point(run: Run, embeddings: np.ndarray, *, tau: float) -> dict[str, float]:
    """Recall@1, mean InfoNCE loss at ``tau``, and mean positive / hardest-negative similarity for ``embeddings``."""
    cands = build_candidates(run, embeddings=embeddings)
    loss = sweep(cands.pos_sim, cands.neg_sim, [tau])
    mask = cands.mask
    with np.errstate(invalid="ignore"):
        hardest = np.where(mask, cands.neg_sim, -np.inf).max(axis=1, initial=-np.inf)
    has = np.isfinite(hardest)
    return {
        "recall_at_1": recall_at_1(run, embeddings),
        "loss": float(loss["loss"].iloc[0]),
        "candidate_accuracy": float(np.mean(cands.pos_sim[has] > hardest[has])) if has.any() else float("nan"),
        "mean_pos_sim": float(np.mean(cands.pos_sim)),
        "mean_neg_sim": float(np.nanmean(cands.neg_sim)) if mask.any() else float("nan"),
    }


def shift_row(run: Run, groups: Groups, gap_vector: np.ndarray, lam: float, *, tau: float) -> dict[str, float]:
    """One lambda of the shift experiment: the centroid distance after the shift and :func:`shift_point`."""
    shifted = shift_embeddings(run.embeddings, groups, gap_vector, lam)
    s64 = shifted.astype(np.float64)
    dist = float(np.linalg.norm(s64[groups.a_ids].mean(axis=0) - s64[groups.b_ids].mean(axis=0)))
    return {"centroid_distance": dist, **shift_point(run, shifted, tau=tau)}


@dataclass(frozen=True)
class ShiftSample:
    """What the shift experiment ran on (every pair and item, or seeded samples of them).

    Attributes
    ----------
    pairs, pairs_total : int
        Pairs whose recall@1, loss and candidate accuracy were measured, of all the run's pairs.
    items, items_total : int
        Items (of both groups) the closing lambda and the centroid distances were computed on, of all.
    seed : int
        Seed of the samples.
    """

    pairs: int
    pairs_total: int
    items: int
    items_total: int
    seed: int = 0

    @property
    def sampled(self) -> bool:
        """True when either part ran on a sample."""
        return self.pairs < self.pairs_total or self.items < self.items_total

    def note(self) -> str:
        """One sentence for people (empty when nothing was sampled)."""
        parts = []
        if self.pairs < self.pairs_total:
            parts.append(
                f"recall@1, loss and candidate accuracy on {self.pairs:,} of {self.pairs_total:,} pairs, whose "
                "positives and listed negatives are the search gallery (95% interval of a share at most "
                f"+-{1.96 * np.sqrt(0.25 / max(self.pairs, 1)):.3f})"
            )
        if self.items < self.items_total:
            parts.append(f"the closing lambda and the centroid distances on {self.items:,} of {self.items_total:,} items")
        if not parts:
            return ""
        return f"Shift experiment on seeded random samples (seed {self.seed}): " + "; ".join(parts) + "."

    def to_json(self) -> dict:
        """A JSON-serialisable dict with the note."""
        return {
            "pairs": self.pairs,
            "pairs_total": self.pairs_total,
            "items": self.items,
            "items_total": self.items_total,
            "seed": self.seed,
            "note": self.note(),
        }


def pair_sample(run: Run, max_pairs: int | None, *, seed: int = 0) -> tuple[Run, np.ndarray]:
    """A compact run of a seeded random ``max_pairs`` of the pairs (and their negatives): only their items.

    Parameters
    ----------
    run : Run
        The run.
    max_pairs : int or None
        Pairs kept at most (None: all; then ``run`` itself is returned).
    seed : int
        Seed of the sample.

    Returns
    -------
    (Run, numpy.ndarray)
        The compact run (items renumbered ``0..n-1``, embeddings their rows, pair ids kept) and (n,) the
        original item id of each of its items.
    """
    if max_pairs is None or len(run.pairs) <= int(max_pairs):
        return run, np.arange(len(run.items))
    rows = np.sort(np.random.default_rng(seed).choice(len(run.pairs), size=int(max_pairs), replace=False))
    pairs = run.pairs.iloc[rows].reset_index(drop=True)
    negatives = run.negatives[run.negatives["pair_id"].isin(pairs["pair_id"].to_numpy())].reset_index(drop=True)
    keep = np.unique(
        np.concatenate(
            [
                pairs["anchor_id"].to_numpy(np.int64),
                pairs["positive_id"].to_numpy(np.int64),
                negatives["negative_id"].to_numpy(np.int64),
            ]
        )
    )
    new_id = np.full(len(run.items), -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    items = run.items.iloc[keep].reset_index(drop=True)
    items["item_id"] = np.arange(len(keep))
    pairs = pairs.assign(
        anchor_id=new_id[pairs["anchor_id"].to_numpy(np.int64)], positive_id=new_id[pairs["positive_id"].to_numpy(np.int64)]
    )
    negatives = negatives.assign(negative_id=new_id[negatives["negative_id"].to_numpy(np.int64)])
    compact = replace(
        run,
        items=items,
        embeddings=np.ascontiguousarray(run.embeddings[keep]),
        pairs=pairs,
        negatives=negatives,
        _cache={},
    )
    return compact, keep


def _restrict(groups: Groups, item_ids: np.ndarray) -> Groups:
    """``groups`` on a subset of the items, renumbered as their positions in ``item_ids``."""
    return replace(
        groups,
        a_ids=np.flatnonzero(np.isin(item_ids, groups.a_ids)),
        b_ids=np.flatnonzero(np.isin(item_ids, groups.b_ids)),
    )


def _item_sample(groups: Groups, max_items: int | None, seed: int) -> np.ndarray:
    """Sorted item ids: every item of both groups, or (above ``max_items``) a seeded ``max_items // 2`` of each."""
    if max_items is None or len(groups.a_ids) + len(groups.b_ids) <= int(max_items):
        return np.sort(np.concatenate([groups.a_ids, groups.b_ids]))
    rng = np.random.default_rng(seed)
    a = rng.choice(groups.a_ids, size=min(len(groups.a_ids), int(max_items) // 2), replace=False)
    b = rng.choice(groups.b_ids, size=min(len(groups.b_ids), int(max_items) // 2), replace=False)
    return np.sort(np.concatenate([a, b]))


def shift_experiment(
    run: Run,
    *,
    tau: float,
    lambdas: tuple[float, ...] | list[float] = DEFAULT_LAMBDAS,
    groups: Groups | None = None,
    include_closing: bool = True,
    max_pairs: int | None = None,
    max_items: int | None = None,
    seed: int = 0,
    sample_info: dict | None = None,
    gap: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """The shift experiment over ``lambdas`` (plus ``lambda_close``), on every pair or on seeded samples.

    Parameters
    ----------
    run : Run
        The run.
    tau : float
        Temperature of the loss.
    lambdas : sequence of float
        Shift sizes.
    groups : Groups, optional
        Default :func:`modality_groups`.
    include_closing : bool
        Add the lambda that closes the gap (:func:`closing_lambda`).
    max_pairs : int, optional
        Recall@1, loss and candidate accuracy on a seeded random sample of at most this many pairs, whose
        positives and listed negatives are the gallery (:func:`pair_sample`); None: every pair.
    max_items : int, optional
        The closing lambda and the centroid distances on a seeded random sample of at most this many items
        (half from each group); None: every item. The gap vector always uses every item.
    seed : int
        Seed of both samples.
    sample_info : dict, optional
        Filled with ``sample``: the :class:`ShiftSample` of this run.
    gap : numpy.ndarray, optional
        (D,) the gap vector when already known (:func:`gap_vector`).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    pandas.DataFrame
        One row per lambda, ascending: ``lambda``, ``closes_gap`` (True on the lambda_close row),
        ``centroid_distance`` (after the shift), ``recall_at_1``, ``loss``, ``candidate_accuracy``,
        ``mean_pos_sim``, ``mean_neg_sim``.
    """
    if not (np.isfinite(tau) and tau > 0):
        raise NegScopeError(f"tau must be a positive number, got {tau}")
    groups = modality_groups(run) if groups is None else groups
    emb = run.embeddings
    gap = gap_vector(emb, groups) if gap is None else np.asarray(gap, dtype=np.float64)
    items = _item_sample(groups, max_items, seed)
    # the sampled items of each group as run item ids: their rows are gathered once, by _ShiftedCentroids
    item_groups = replace(
        groups, a_ids=items[np.isin(items, groups.a_ids)], b_ids=items[np.isin(items, groups.b_ids)]
    )
    values = sorted({float(x) for x in lambdas})
    centroids = _ShiftedCentroids(emb, item_groups, gap)
    closing = _closing_of(centroids) if include_closing else None
    if closing is not None:
        values = sorted({*values, closing})
    sub, sub_items = pair_sample(run, max_pairs, seed=seed)
    sub_groups = groups if sub is run else _restrict(groups, sub_items)
    if sample_info is not None:
        sample_info["sample"] = ShiftSample(
            pairs=len(sub.pairs),
            pairs_total=len(run.pairs),
            items=len(items),
            items_total=len(groups.a_ids) + len(groups.b_ids),
            seed=seed,
        )
    rows = []
    for i, lam in enumerate(values):
        shifted = shift_embeddings(sub.embeddings, sub_groups, gap, lam)
        row = {
            "centroid_distance": centroids.distance(lam),
            **shift_point(sub, shifted, tau=tau),
        }
        rows.append({"lambda": lam, "closes_gap": closing is not None and lam == closing, **row})
        if progress is not None:
            progress((i + 1) / len(values))
    return pd.DataFrame(rows)


def score_distributions(run: Run, embeddings: np.ndarray | None = None) -> pd.DataFrame:
    """Every pair's positive similarity and every listed negative's similarity.

    Returns
    -------
    pandas.DataFrame
        ``kind`` (``positive`` | ``negative``) and ``sim``.
    """
    cands = build_candidates(run, embeddings=embeddings)
    neg = cands.neg_sim[cands.mask]
    return pd.DataFrame(
        {
            "kind": np.concatenate([np.full(len(cands.pos_sim), "positive"), np.full(len(neg), "negative")]),
            "sim": np.concatenate([cands.pos_sim, neg]).astype(np.float64),
        }
    )


def project_out_comparison(run: Run, *, tau: float, groups: Groups | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score distributions and summary numbers before and after projecting out the gap direction.

    Returns
    -------
    scores : pandas.DataFrame
        ``embedding`` (``original`` | ``gap projected out``), ``kind``, ``sim``.
    summary : pandas.DataFrame
        One row per embedding: ``recall_at_1``, ``loss``, ``candidate_accuracy``, ``mean_pos_sim``,
        ``mean_neg_sim``, ``centroid_distance``.
    """
    groups = modality_groups(run) if groups is None else groups
    emb = run.embeddings
    unit = _unit(emb)
    gap = unit[groups.a_ids].mean(axis=0) - unit[groups.b_ids].mean(axis=0)
    if np.linalg.norm(gap) == 0:
        raise NegScopeError("the two groups have the same centroid: there is no gap direction to project out")
    projected = project_out(emb, gap)
    frames, rows = [], []
    for name, e in (("original", emb), ("gap projected out", projected)):
        frames.append(score_distributions(run, e).assign(embedding=name))
        e64 = e.astype(np.float64)
        dist = float(np.linalg.norm(e64[groups.a_ids].mean(axis=0) - e64[groups.b_ids].mean(axis=0)))
        rows.append({"embedding": name, **shift_point(run, e, tau=tau), "centroid_distance": dist})
    return pd.concat(frames, ignore_index=True)[["embedding", "kind", "sim"]], pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ PCA


@dataclass(frozen=True)
class GapPCA:
    """PCA coordinates of a balanced sample of both groups.

    Attributes
    ----------
    points : pandas.DataFrame
        ``item_id``, ``group``, ``pc1``, ``pc2``, ``pc3``.
    pairs : pandas.DataFrame
        A sample of pairs with both ends in ``points``: ``pair_id``, ``anchor_id``, ``positive_id``.
    centroids : pandas.DataFrame
        ``group``, ``pc1``, ``pc2``, ``pc3`` of each group's centroid.
    explained : numpy.ndarray
        (3,) explained variance ratio of each component.
    """

    points: pd.DataFrame
    pairs: pd.DataFrame
    centroids: pd.DataFrame
    explained: np.ndarray


def gap_pca(
    run: Run,
    *,
    groups: Groups | None = None,
    embeddings: np.ndarray | None = None,
    max_per_group: int = 1500,
    n_pairs: int = 60,
    seed: int = 0,
) -> GapPCA:
    """A 3-component PCA of both groups (fit on a balanced sample), with a sample of pairs to draw as lines."""
    groups = modality_groups(run) if groups is None else groups
    emb = _unit(run.embeddings if embeddings is None else embeddings)
    rng = np.random.default_rng(seed)
    pairs = run.pairs
    group_of = np.full(len(emb), -1)
    group_of[groups.a_ids] = 0
    group_of[groups.b_ids] = 1
    both = (group_of[pairs["anchor_id"].to_numpy()] >= 0) & (group_of[pairs["positive_id"].to_numpy()] >= 0)
    candidates = np.flatnonzero(both)
    chosen = pairs.iloc[np.sort(rng.choice(candidates, size=min(n_pairs, len(candidates)), replace=False))]
    sample = []
    for gi, ids in enumerate((groups.a_ids, groups.b_ids)):
        must = np.unique(np.concatenate([chosen["anchor_id"], chosen["positive_id"]]).astype(np.int64))
        must = must[group_of[must] == gi]
        rest = np.setdiff1d(ids, must)
        take = max(0, min(max_per_group - len(must), len(rest)))
        sample.append(np.concatenate([must, rng.choice(rest, size=take, replace=False)]))
    ids = np.concatenate(sample)
    n_comp = int(min(3, emb.shape[1], len(ids)))
    if n_comp < 2:
        raise NegScopeError("too few items for a PCA of the two groups")
    pca = PCA(n_components=n_comp, random_state=seed).fit(emb[ids])
    coords = pca.transform(emb[ids])
    coords = np.hstack([coords, np.zeros((len(ids), 3 - n_comp))])
    names = np.array(groups.names, dtype=object)
    points = pd.DataFrame(
        {"item_id": ids, "group": names[group_of[ids]], "pc1": coords[:, 0], "pc2": coords[:, 1], "pc3": coords[:, 2]}
    )
    cent = pca.transform(np.vstack([emb[groups.a_ids].mean(axis=0), emb[groups.b_ids].mean(axis=0)]))
    cent = np.hstack([cent, np.zeros((2, 3 - n_comp))])
    centroids = pd.DataFrame({"group": list(groups.names), "pc1": cent[:, 0], "pc2": cent[:, 1], "pc3": cent[:, 2]})
    explained = np.concatenate([pca.explained_variance_ratio_, np.zeros(3 - n_comp)])
    return GapPCA(
        points=points,
        pairs=chosen[["pair_id", "anchor_id", "positive_id"]].reset_index(drop=True),
        centroids=centroids,
        explained=explained,
    )


# ------------------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class GapReport:
    """Everything the CLI prints: the groups, the metrics, the tau used and the shift experiment."""

    groups: Groups
    metrics: GapMetrics
    tau: float
    tau_is_learned: bool
    shift: pd.DataFrame
    sample: ShiftSample | None = None

    def to_json(self) -> dict:
        """A JSON-serialisable dict (NaN written as None)."""

        def clean(v: float) -> float | None:
            v = float(v)
            return v if np.isfinite(v) else None

        m = self.metrics
        closing = self.shift.loc[self.shift["closes_gap"], "lambda"]
        return {
            "groups": list(self.groups.names),
            "one_modality": self.groups.one_modality,
            "note": self.groups.note,
            "n": {self.groups.names[0]: m.n_a, self.groups.names[1]: m.n_b},
            "centroid_distance": clean(m.centroid_distance),
            "centroid_cosine": clean(m.centroid_cosine),
            "mean_cosine": {k: clean(v) for k, v in m.mean_cosine.items()},
            "gap_variance_share": clean(m.gap_variance_share),
            "separability": clean(m.separability),
            "separability_std": clean(m.separability_std),
            "tau": self.tau,
            "tau_is_learned": self.tau_is_learned,
            "lambda_close": clean(closing.iloc[0]) if len(closing) else None,
            "shift": [
                {
                    "lambda": clean(r["lambda"]),
                    "recall_at_1": clean(r["recall_at_1"]),
                    "loss": clean(r["loss"]),
                    "centroid_distance": clean(r["centroid_distance"]),
                    "candidate_accuracy": clean(r["candidate_accuracy"]),
                    "closes_gap": bool(r["closes_gap"]),
                }
                for _, r in self.shift.iterrows()
            ],
            "messages": list(m.messages),
            "shift_sample": None if self.sample is None else self.sample.to_json(),
        }


def gap_report(
    run: Run,
    *,
    tau: float | None = None,
    lambdas: tuple[float, ...] | list[float] = DEFAULT_LAMBDAS,
    max_pairs: int | None = MAX_SHIFT_PAIRS,
    max_items: int | None = MAX_SHIFT_ITEMS,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> GapReport:
    """Groups, metrics and the shift experiment of a run (tau: the learned one, else 0.07).

    ``max_pairs``, ``max_items`` and ``seed``: the shift experiment's samples on a large run (see
    :func:`shift_experiment`; None: every pair / item); ``GapReport.sample`` says what it ran on.

    Raises
    ------
    NegScopeError
        When ``tau`` is not a positive number or a lambda is not finite (checked before any work).
    """
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise NegScopeError(f"tau must be a positive number, got {tau}")
    bad = [x for x in lambdas if not np.isfinite(x)]
    if bad:
        raise NegScopeError(f"the shift sizes (lambdas) must be finite numbers, got {bad}")
    learned, is_learned = learned_or_default_tau(run)
    use_tau = float(tau) if tau is not None else learned
    groups = modality_groups(run)
    metrics = gap_metrics(run.embeddings, groups)
    found: dict = {}
    table = shift_experiment(
        run,
        tau=use_tau,
        lambdas=lambdas,
        groups=groups,
        max_pairs=max_pairs,
        max_items=max_items,
        seed=seed,
        sample_info=found,
        gap=metrics.gap_vector,
        progress=progress,
    )
    return GapReport(
        groups=groups,
        metrics=metrics,
        tau=use_tau,
        tau_is_learned=is_learned and tau is None,
        shift=table,
        sample=found.get("sample"),
    )
