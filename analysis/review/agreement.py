"""Agreement between annotators: pairwise Cohen's kappa, Krippendorff's alpha, and the disputed keys.

Everything here reads the per-annotator frame of :func:`analysis.review.decisions.annotator_decisions` (one
row per kind, anchor_key, candidate_key, annotator with that annotator's current decision). A rating is
the decision, with the class for a relabel (``relabel:7``): two relabels to different classes disagree.

Cohen's kappa (scikit-learn's ``cohen_kappa_score``) compares two annotators on the keys both decided:

.. math:: \\kappa = \\frac{p_o - p_e}{1 - p_e}

with :math:`p_o` the observed agreement and :math:`p_e` the agreement expected from each annotator's own
rates. Krippendorff's alpha (the ``krippendorff`` package, nominal level) covers every annotator at once and
copes with keys that only some annotators decided; keys decided by a single annotator carry no information
about agreement and are left out:

.. math:: \\alpha = 1 - \\frac{D_o}{D_e}

Both are undefined (NaN) when the ratings compared use a single value only.
"""

from __future__ import annotations

import itertools
import warnings

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

KEY = ["kind", "anchor_key", "candidate_key"]
KAPPA_COLUMNS = ("kind", "annotator_a", "annotator_b", "items", "agreed", "kappa")
SUMMARY_COLUMNS = ("kind", "annotators", "decided", "shared", "disputed", "alpha")
CONFLICT_COLUMNS = ("kind", "anchor_key", "candidate_key", "n_annotators", "ratings", "decisions")


def ratings(states: pd.DataFrame) -> pd.Series:
    """The rating of each row of a per-annotator frame: ``decision``, or ``relabel:<label>`` for a relabel.

    Parameters
    ----------
    states : pandas.DataFrame
        Rows of :func:`analysis.review.decisions.annotator_decisions` (``decision``, ``label``).

    Returns
    -------
    pandas.Series
        One string per row (same index).
    """
    label = states["label"].astype(object).where(states["label"].notna(), "").astype(str)
    decision = states["decision"].astype(str)
    return decision.where(label == "", decision + ":" + label)


def _matrix(states: pd.DataFrame) -> pd.DataFrame:
    """Keys x annotators table of ratings (NaN where an annotator did not decide a key), sorted both ways."""
    if states.empty:
        return pd.DataFrame()
    table = states.assign(rating=ratings(states)).pivot_table(
        index=KEY, columns="annotator", values="rating", aggfunc="last"
    )
    return table.sort_index().sort_index(axis=1)


def pairwise_kappa(states: pd.DataFrame, *, kind: str) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators of one decision kind, on the keys both decided.

    Parameters
    ----------
    states : pandas.DataFrame
        Per-annotator decisions (:func:`analysis.review.decisions.annotator_decisions`).
    kind : str
        The decision kind (``negative``, ``pair``, ``label`` ...).

    Returns
    -------
    pandas.DataFrame
        ``KAPPA_COLUMNS``, one row per annotator pair (names in sorted order) that shares at least one key:
        ``items`` keys both decided, ``agreed`` keys with the same rating, ``kappa`` (NaN when undefined:
        both annotators used one and the same value throughout).
    """
    table = _matrix(states[states["kind"] == kind])
    rows = []
    for a, b in itertools.combinations(list(table.columns), 2):
        both = table[[a, b]].dropna()
        if both.empty:
            continue
        ya, yb = both[a].to_numpy(dtype=str), both[b].to_numpy(dtype=str)
        values = sorted(set(ya) | set(yb))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kappa = cohen_kappa_score(ya, yb, labels=values)
        rows.append((kind, str(a), str(b), len(both), int((ya == yb).sum()), float(kappa)))
    return pd.DataFrame(rows, columns=list(KAPPA_COLUMNS))


def value_counts(states: pd.DataFrame, *, kind: str) -> tuple[np.ndarray, list[str]]:
    """Krippendorff's units x values table for one kind: how many annotators gave each rating to each key.

    Only keys decided by two annotators or more are kept (the others are not pairable).

    Returns
    -------
    counts : numpy.ndarray
        Shape (U, V), int64: U shared keys (sorted), V distinct ratings (sorted, listed in ``values``).
    values : list of str
        The ratings, in column order.
    """
    table = _matrix(states[states["kind"] == kind])
    if table.empty:
        return np.zeros((0, 0), dtype=np.int64), []
    table = table[table.notna().sum(axis=1) >= 2]
    values = sorted({v for v in table.to_numpy().ravel() if isinstance(v, str)})
    counts = np.zeros((len(table), len(values)), dtype=np.int64)
    col = {v: j for j, v in enumerate(values)}
    for i, row in enumerate(table.itertuples(index=False)):
        for v in row:
            if isinstance(v, str):
                counts[i, col[v]] += 1
    return counts, values


def alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) of a units x values count table; NaN when undefined.

    Parameters
    ----------
    counts : numpy.ndarray
        Shape (U, V): ratings of each value per unit. Units with fewer than two ratings are ignored.

    Returns
    -------
    float
        Alpha in [-1, 1]; NaN with no pairable unit, or when every rating has the same value (the expected
        disagreement is 0).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.size == 0:
        return float("nan")
    counts = counts[counts.sum(axis=1) >= 2]
    if counts.shape[0] == 0 or np.count_nonzero(counts.sum(axis=0)) < 2:
        return float("nan")
    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


def conflicts(states: pd.DataFrame, *, kind: str | None = None) -> pd.DataFrame:
    """The disputed keys: decided by two annotators or more who hold different ratings.

    Parameters
    ----------
    states : pandas.DataFrame
        Per-annotator decisions (:func:`analysis.review.decisions.annotator_decisions`).
    kind : str, optional
        One decision kind; default all.

    Returns
    -------
    pandas.DataFrame
        ``CONFLICT_COLUMNS``, one row per disputed key sorted by (kind, anchor_key, candidate_key):
        ``n_annotators``, ``ratings`` (distinct ratings), ``decisions`` (``"name: rating"`` joined by ``"; "``,
        names sorted).
    """
    if kind is not None:
        states = states[states["kind"] == kind]
    if states.empty:
        return pd.DataFrame(columns=list(CONFLICT_COLUMNS))
    frame = states.assign(rating=ratings(states)).sort_values([*KEY, "annotator"], kind="stable")
    rows = []
    for key, group in frame.groupby(KEY, sort=True):
        distinct = group["rating"].nunique()
        if len(group) >= 2 and distinct >= 2:
            text = "; ".join(f"{a}: {r}" for a, r in zip(group["annotator"], group["rating"], strict=True))
            rows.append((*key, len(group), int(distinct), text))
    return pd.DataFrame(rows, columns=list(CONFLICT_COLUMNS))


def agreement_summary(states: pd.DataFrame) -> pd.DataFrame:
    """Per decision kind: annotators, keys decided, keys shared by two or more, disputed keys, alpha.

    Returns
    -------
    pandas.DataFrame
        ``SUMMARY_COLUMNS``, one row per kind present in ``states`` (sorted): ``decided`` keys with any
        decision, ``shared`` keys decided by two annotators or more, ``disputed`` shared keys whose ratings
        differ, ``alpha`` Krippendorff's alpha (nominal) over the shared keys.
    """
    rows = []
    for kind in sorted(states["kind"].astype(str).unique()) if not states.empty else []:
        mine = states[states["kind"] == kind]
        per_key = mine.groupby(KEY, sort=False)["annotator"].nunique()
        counts, _ = value_counts(states, kind=kind)
        rows.append((
            kind,
            int(mine["annotator"].nunique()),
            int(len(per_key)),
            int((per_key >= 2).sum()),
            int(len(conflicts(states, kind=kind))),
            alpha_nominal(counts),
        ))  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
