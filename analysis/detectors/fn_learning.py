"""Learning the false-negative evidence weights from reviewers' decisions, and re-ranking the undecided queue.

Features
    One column per evidence term of :func:`analysis.detectors.false_negatives.evidence_terms` (robust z-scores
    against the listed negatives, flags as 1/0, missing as 0), plus the robust z-scores of ``neg_sim`` and
    ``pos_sim``, computed on the whole table and then taken at the decided rows (one z-score reference, the
    listed negatives, for fitting and scoring). (The table's log-odds enter as the fixed offset of the fit, not
    as a feature: a free slope on them overfitted the first few hundred decisions in the WordNet benchmark.)

Fit
    The decided candidates are the examples: ``false_negative`` = 1, ``negative`` = 0 (``unsure`` and
    undecided rows are left out). An L2 logistic regression around the table's own log-odds ℓ (the preset
    weights), :math:`P(\\text{false negative}) = \\sigma(\\ell + b + \\sum_j w_j x_j)` (:class:`OffsetLogistic`):
    the fit learns *changes* to the preset weights and, with few or inconsistent decisions, the penalty keeps
    it at the preset ranking; its inverse regularisation strength
    ``C`` chosen from ``C_GRID`` by stratified k-fold cross-validation (the best out-of-fold average
    precision; ties keep the smaller C). The cross-validated figures are those out-of-fold predictions at the
    chosen C (each decided item predicted by a model that did not see it): precision and recall at
    probability 0.5, and AUPRC.

Re-ranking
    Undecided candidates first, ordered by the learned probability (``order="score"``) or, for uncertainty
    sampling, by :math:`|p - 0.5|` ascending (``order="uncertainty"``: the decision that teaches the model
    the most comes first); decided candidates after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold

from analysis.choices import FN_QUEUE_ORDERS
from analysis.detectors.false_negatives import LISTED_SOURCES, evidence_terms, robust_z
from analysis.errors import NegScopeError

ORDERS = FN_QUEUE_ORDERS
LABELS = {"false_negative": 1, "negative": 0}
MIN_PER_CLASS = 5
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def features(table: pd.DataFrame) -> pd.DataFrame:
    """(M, F) float64 learning features of a :func:`find_false_negatives` table (module docstring), in row order.

    Parameters
    ----------
    table : pandas.DataFrame
        Needs ``source``, ``logit`` and the evidence columns (missing ones give zeros).

    Returns
    -------
    pandas.DataFrame
        Columns: the evidence terms, ``neg_sim``, ``pos_sim``; index of ``table``.
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
    return pd.DataFrame(terms, index=table.index)


@dataclass(frozen=True)
class OffsetLogistic:
    """L2 logistic regression around an offset: :math:`P = \\sigma(o + b + x \\cdot w)`, minimising
    :math:`\\sum_i \\log(1 + e^{-s_i (o_i + b + x_i \\cdot w)}) + \\lVert w \\rVert^2 / (2C)` with
    :math:`s_i = \\pm 1` (the bias is not penalised), by Newton's method with backtracking. With no evidence
    it stays at the offset.

    Attributes
    ----------
    coef : numpy.ndarray
        (F,) w.
    bias : float
        b.
    C : float
        Inverse regularisation strength.
    """

    coef: np.ndarray
    bias: float
    C: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, offset: np.ndarray, *, C: float) -> OffsetLogistic:  # noqa: N803
        """Fit to (N, F) ``x``, (N,) 0/1 ``y`` and (N,) ``offset``."""
        x = np.asarray(x, dtype=np.float64)
        sign = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
        off = np.asarray(offset, dtype=np.float64)
        design = np.column_stack([x, np.ones(len(x))])  # (N, F + 1): the bias is the last parameter
        penalty = np.append(np.full(x.shape[1], 1.0 / float(C)), 0.0)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            margin = sign * (off + design @ theta)
            value = float(np.sum(np.logaddexp(0.0, -margin)) + 0.5 * theta @ (penalty * theta))
            q = 0.5 * (1.0 - np.tanh(0.5 * margin))  # sigma(-margin)
            grad = design.T @ (-sign * q) + penalty * theta
            return value, grad, q * (1.0 - q)

        # Newton's method with backtracking: the objective is convex, a few dozen steps reach the optimum
        theta = np.zeros(design.shape[1])
        value, grad, curv = loss(theta)
        for _ in range(200):
            hess = design.T @ (design * curv[:, None]) + np.diag(penalty) + 1e-12 * np.eye(len(theta))
            step = np.linalg.solve(hess, grad)
            decrement = float(grad @ step)
            if decrement < 1e-20:
                break
            t = 1.0
            while t > 1e-12:
                new_value, new_grad, new_curv = loss(theta - t * step)
                if new_value <= value - 1e-4 * t * decrement:
                    break
                t *= 0.5
            else:
                break
            theta, value, grad, curv = theta - t * step, new_value, new_grad, new_curv
            if float(np.max(np.abs(grad))) < 1e-10 * max(len(x), 1):
                break
        return cls(coef=theta[:-1].copy(), bias=float(theta[-1]), C=float(C))

    def probability(self, x: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """(N,) :math:`\\sigma(o + b + x \\cdot w)`."""
        z = np.asarray(offset, dtype=np.float64) + self.bias + np.asarray(x, dtype=np.float64) @ self.coef
        return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True)
class LearnedWeights:
    """Evidence weights fitted to decisions.

    Attributes
    ----------
    weights : pandas.Series
        Learned change of the log-odds weight per feature (index: the :func:`features` columns), plus ``bias``;
        the learned log-odds are the table's ``logit`` plus these.
    preset : pandas.Series
        The weights behind the table's ``logit`` (``attrs["settings"]``), same index; 0 for the extra
        features, NaN when unknown.
    n_decided, n_false_negative : int
        Examples used (false negatives + negatives) and how many are false negatives.
    cv_precision, cv_recall, cv_auprc : float
        Out-of-fold precision and recall at p >= 0.5, and AUPRC, over the decided items.
    folds : int
        Cross-validation folds.
    model : OffsetLogistic
        The fitted model (all decided items).
    """

    weights: pd.Series
    preset: pd.Series
    n_decided: int
    n_false_negative: int
    cv_precision: float
    cv_recall: float
    cv_auprc: float
    folds: int
    model: OffsetLogistic

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        """(M,) learned probability that each row of ``table`` is a false negative.

        Pass the whole table (as fitted), then select rows: the features' robust z-scores are taken against the
        listed negatives of the table passed, so a subset would shift them.
        """
        return self.model.probability(features(table).to_numpy(), table["logit"].to_numpy(np.float64))

    def weight_table(self) -> pd.DataFrame:
        """``evidence``, ``preset``, ``change``, ``learned`` (= preset + change) rows, the largest absolute
        learned weight first (``bias`` last)."""
        full = self.preset + self.weights
        w = full.drop("bias")
        order = np.lexsort((w.index.to_numpy(str), -np.abs(np.nan_to_num(w.to_numpy(), nan=0.0))))
        names = [*w.index.to_numpy(str)[order].tolist(), "bias"]
        return pd.DataFrame(
            {
                "evidence": names,
                "preset": self.preset[names].to_numpy(),
                "change": self.weights[names].to_numpy(),
                "learned": full[names].to_numpy(),
            }
        )


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
    # the features of the whole table, then the decided rows: the robust z-scores keep the reference (all
    # listed negatives) with which :meth:`LearnedWeights.probability` scores the queue
    x = features(table).to_numpy()[rows]
    offset = table["logit"].to_numpy(np.float64)[rows]
    k = int(max(2, min(folds, n_pos, n_neg)))
    splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y))
    best_c, best_ap, oof = C_GRID[0], -1.0, np.zeros(len(y))
    for c_value in C_GRID:
        pred_c = np.zeros(len(y))
        for train, test in splits:
            fold_model = OffsetLogistic.fit(x[train], y[train], offset[train], C=c_value)
            pred_c[test] = fold_model.probability(x[test], offset[test])
        ap = float(average_precision_score(y, pred_c))
        if ap > best_ap + 1e-12:  # ties keep the smaller C (stronger regularisation)
            best_c, best_ap, oof = c_value, ap, pred_c
    model = OffsetLogistic.fit(x, y, offset, C=best_c)
    pred = oof >= 0.5
    names = [*features(table.iloc[:0]).columns, "bias"]
    weights = pd.Series(np.append(model.coef, model.bias), index=names, dtype=np.float64)
    preset_w = (table.attrs.get("settings") or {}).get("weights")
    preset = pd.Series(
        [float(preset_w.get(n, 0.0)) if isinstance(preset_w, dict) else np.nan for n in names],
        index=names,
        dtype=np.float64,
    )
    return LearnedWeights(
        weights=weights,
        preset=preset,
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
