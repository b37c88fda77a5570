"""Learning the false-negative evidence weights from reviewers' decisions, and re-ranking the undecided queue.

Features
    One column per evidence term of :func:`analysis.detectors.false_negatives.evidence_terms` (robust z-scores
    against the listed negatives, flags as 1/0, missing as 0), plus the robust z-scores of ``neg_sim`` and
    ``pos_sim`` and the default score's log-odds ``prior`` (so that a handful of decisions starts from the
    hand-set weights rather than from nothing).

Fit
    The decided candidates are the examples: ``false_negative`` = 1, ``negative`` = 0 (``unsure`` and
    undecided rows are left out). An L2 logistic regression,
    :math:`P(\\text{false negative}) = \\sigma(b + \\sum_j w_j x_j)`, with its regularisation strength chosen by
    stratified k-fold cross-validation (``LogisticRegressionCV``, scoring: average precision). The
    cross-validated figures are measured on out-of-fold predictions of the decided items (each predicted by
    a model that did not see it): precision and recall at probability 0.5, and AUPRC.

Re-ranking
    Undecided candidates first, ordered by the learned probability (``order="score"``) or, for uncertainty
    sampling, by :math:`|p - 0.5|` ascending (``order="uncertainty"``: the decision that teaches the model
    the most comes first); decided candidates after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from analysis.detectors.false_negatives import LISTED_SOURCES, evidence_terms, robust_z
from analysis.errors import NegScopeError

ORDERS = ("score", "uncertainty")
LABELS = {"false_negative": 1, "negative": 0}
MIN_PER_CLASS = 5


def features(table: pd.DataFrame) -> pd.DataFrame:
    """(M, F) float64 learning features of a :func:`find_false_negatives` table (module docstring), in row order.

    Parameters
    ----------
    table : pandas.DataFrame
        Needs ``source``, ``logit`` and the evidence columns (missing ones give zeros).

    Returns
    -------
    pandas.DataFrame
        Columns: the evidence terms, ``neg_sim``, ``pos_sim``, ``prior``; index of ``table``.
    """
    source = table["source"].astype(object).to_numpy()
    cols = {name: table[name].to_numpy() for name in table.columns}
    terms = evidence_terms(cols, source)
    ref = np.isin(source, LISTED_SOURCES)
    if not ref.any():
        ref = np.ones(len(table), dtype=bool)
    for name in ("neg_sim", "pos_sim"):
        x = table[name].to_numpy(np.float64)
        terms[name] = np.nan_to_num(robust_z(x, x[ref]), nan=0.0)
    terms["prior"] = table["logit"].to_numpy(np.float64)
    return pd.DataFrame(terms, index=table.index)


@dataclass(frozen=True)
class LearnedWeights:
    """Evidence weights fitted to decisions.

    Attributes
    ----------
    weights : pandas.Series
        Log-odds weight per feature (index: the :func:`features` columns), plus ``bias``.
    n_decided, n_false_negative : int
        Examples used (false negatives + negatives) and how many are false negatives.
    cv_precision, cv_recall, cv_auprc : float
        Out-of-fold precision and recall at p >= 0.5, and AUPRC, over the decided items.
    folds : int
        Cross-validation folds.
    model : LogisticRegression
        The fitted model (all decided items).
    """

    weights: pd.Series
    n_decided: int
    n_false_negative: int
    cv_precision: float
    cv_recall: float
    cv_auprc: float
    folds: int
    model: LogisticRegression

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        """(M,) learned probability that each row of ``table`` is a false negative."""
        return self.model.predict_proba(features(table).to_numpy())[:, 1]

    def weight_table(self) -> pd.DataFrame:
        """``evidence``, ``weight`` rows, the largest absolute weight first (``bias`` last)."""
        w = self.weights.drop("bias")
        order = np.lexsort((w.index.to_numpy(str), -np.abs(w.to_numpy())))
        out = pd.DataFrame({"evidence": w.index.to_numpy(str)[order], "weight": w.to_numpy()[order]})
        return pd.concat([out, pd.DataFrame({"evidence": ["bias"], "weight": [self.weights["bias"]]})], ignore_index=True)


def decided_labels(table: pd.DataFrame) -> np.ndarray:
    """(M,) float 1 / 0 from the ``decision`` column (false_negative / negative), NaN otherwise."""
    if "decision" not in table.columns:
        return np.full(len(table), np.nan)
    return table["decision"].map(LABELS).to_numpy(np.float64)


def fit_weights(table: pd.DataFrame, *, folds: int = 5, seed: int = 0) -> LearnedWeights:
    """Fit the evidence weights to the decided rows of ``table`` (module docstring).

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`find_false_negatives` table with a ``decision`` column
        (:func:`analysis.detectors.false_negatives.with_decisions`).
    folds : int
        Cross-validation folds (fewer when a class has fewer examples, at least 2).
    seed : int
        Seeds the fold split.

    Returns
    -------
    LearnedWeights

    Raises
    ------
    NegScopeError
        When fewer than ``MIN_PER_CLASS`` false negatives or negatives have been decided.
    """
    y_all = decided_labels(table)
    rows = np.flatnonzero(np.isfinite(y_all))
    y = y_all[rows].astype(int)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        raise NegScopeError(
            f"learning needs at least {MIN_PER_CLASS} decided false negatives and {MIN_PER_CLASS} negatives; "
            f"there are {n_pos} and {n_neg}"
        )
    x = features(table.iloc[rows]).to_numpy()
    k = int(max(2, min(folds, n_pos, n_neg)))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    search = LogisticRegressionCV(Cs=np.logspace(-3, 2, 11), cv=cv, scoring="average_precision", max_iter=2000)
    search.fit(x, y)
    c_best = float(np.atleast_1d(search.C_)[0])
    model = LogisticRegression(C=c_best, max_iter=2000).fit(x, y)
    oof = cross_val_predict(LogisticRegression(C=c_best, max_iter=2000), x, y, cv=cv, method="predict_proba")[:, 1]
    pred = oof >= 0.5
    names = list(features(table.iloc[:0]).columns)
    weights = pd.Series(np.append(model.coef_[0], model.intercept_[0]), index=[*names, "bias"], dtype=np.float64)
    return LearnedWeights(
        weights=weights,
        n_decided=len(y),
        n_false_negative=n_pos,
        cv_precision=float(y[pred].mean()) if pred.any() else float("nan"),
        cv_recall=float(pred[y == 1].mean()),
        cv_auprc=float(average_precision_score(y, oof)),
        folds=k,
        model=model,
    )


def rerank(table: pd.DataFrame, learned: LearnedWeights, *, order: str = "score") -> pd.DataFrame:
    """``table`` with ``learned_score`` (the learned probability), undecided rows first in ``order``.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`find_false_negatives` table, with or without a ``decision`` column.
    learned : LearnedWeights
    order : {"score", "uncertainty"}
        Learned probability descending, or :math:`|p - 0.5|` ascending (uncertainty sampling); exact ties
        keep ``table``'s order.

    Returns
    -------
    pandas.DataFrame
        Same rows and columns plus ``learned_score``, index reset.
    """
    if order not in ORDERS:
        raise NegScopeError(f"unknown queue order {order!r}; expected one of {ORDERS}")
    prob = learned.probability(table)
    decided = np.isfinite(decided_labels(table)) | (
        table["decision"].astype(str).ne("").to_numpy() if "decision" in table.columns else False
    )
    key = -prob if order == "score" else np.abs(prob - 0.5)
    idx = np.lexsort((np.arange(len(table)), key, decided))
    out = table.assign(learned_score=prob).iloc[idx].reset_index(drop=True)
    out.attrs = dict(table.attrs)
    return out
