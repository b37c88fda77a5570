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
from analysis.errors import NegScopeError
from analysis.metrics.temperature import learned_or_default_tau, sweep
from analysis.runs.candidates import build_candidates
from analysis.runs.folder import Run
from analysis.search.exact import knn

MIN_PER_GROUP = 10


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
    emb = _unit(embeddings)
    xa, xb = emb[groups.a_ids], emb[groups.b_ids]
    messages = []
    if len(xa) == 0 or len(xb) == 0:
        raise NegScopeError(f"the run has no {groups.names[0] if len(xa) == 0 else groups.names[1]} items")
    ca, cb = xa.mean(axis=0), xb.mean(axis=0)
    gap = ca - cb
    denom = np.linalg.norm(ca) * np.linalg.norm(cb)
    sep, sep_std = separability(xa, xb, folds=folds, max_per_group=max_per_group, seed=seed)
    if np.isnan(sep):
        messages.append(
            f"separability needs at least {max(MIN_PER_GROUP, folds)} items in each group "
            f"({groups.names[0]}: {len(xa)}, {groups.names[1]}: {len(xb)})."
        )
    pooled = np.vstack([xa, xb])
    return GapMetrics(
        gap_vector=gap,
        centroid_distance=float(np.linalg.norm(gap)),
        centroid_cosine=float(ca @ cb / denom) if denom > 0 else float("nan"),
        mean_cosine={groups.names[0]: mean_pairwise_cosine(xa), groups.names[1]: mean_pairwise_cosine(xb)},
        gap_variance_share=variance_share_along(pooled, gap) if np.linalg.norm(gap) > 0 else float("nan"),
        separability=sep,
        separability_std=sep_std,
        n_a=len(xa),
        n_b=len(xb),
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


def centroid_distance_after_shift(embeddings: np.ndarray, groups: Groups, gap_vector: np.ndarray, lam: float) -> float:
    """``||mean(A') - mean(B')||`` after :func:`shift_embeddings` with ``lam``."""
    shifted = shift_embeddings(embeddings, groups, gap_vector, lam).astype(np.float64)
    return float(np.linalg.norm(shifted[groups.a_ids].mean(axis=0) - shifted[groups.b_ids].mean(axis=0)))


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
    res = minimize_scalar(
        lambda lam: centroid_distance_after_shift(embeddings, groups, gap_vector, lam),
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


def shift_experiment(
    run: Run,
    *,
    tau: float,
    lambdas: tuple[float, ...] | list[float] = DEFAULT_LAMBDAS,
    groups: Groups | None = None,
    include_closing: bool = True,
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """The shift experiment over ``lambdas`` (plus ``lambda_close``).

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
    gap = _unit(emb)[groups.a_ids].mean(axis=0) - _unit(emb)[groups.b_ids].mean(axis=0)
    values = sorted({float(x) for x in lambdas})
    closing = closing_lambda(emb, groups, gap) if include_closing else None
    if closing is not None:
        values = sorted({*values, closing})
    rows = []
    for i, lam in enumerate(values):
        row = shift_row(run, groups, gap, lam, tau=tau)
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
        }


def gap_report(
    run: Run,
    *,
    tau: float | None = None,
    lambdas: tuple[float, ...] | list[float] = DEFAULT_LAMBDAS,
    progress: Callable[[float], None] | None = None,
) -> GapReport:
    """Groups, metrics and the shift experiment of a run (tau: the learned one, else 0.07).

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
    table = shift_experiment(run, tau=use_tau, lambdas=lambdas, groups=groups, progress=progress)
    return GapReport(
        groups=groups, metrics=metrics, tau=use_tau, tau_is_learned=is_learned and tau is None, shift=table
    )
