"""Label noise: mismatched pairs, wrong class labels and near-duplicate anchors, in one flag table.

The three detectors live in :mod:`analysis.detectors.mismatch`, :mod:`analysis.detectors.labels` and
:mod:`analysis.detectors.duplicates`, each returning the shared detector shape (ids, ``score``, ``flagged``,
``reason``) plus its own evidence columns. :func:`detect_label_noise` runs them and :meth:`LabelNoise.table`
stacks them into the table the CLI writes and the page lists; :func:`evaluate_on_truth` measures them on
planted ground truth against simple baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from analysis.choices import LABEL_NOISE_KINDS as KINDS
from analysis.detectors.duplicates import DEFAULT_THRESHOLD, DUPLICATE_COLUMNS, near_duplicate_anchors
from analysis.detectors.labels import LABEL_COLUMNS, label_issues
from analysis.detectors.mismatch import MISMATCH_COLUMNS, mismatched_pairs
from analysis.errors import NegScopeError
from analysis.runs.folder import Run
from analysis.search.graph import release_indexes

FLAG_COLUMNS = (
    "kind",
    "pair_id",
    "item_id",
    "other_item_id",
    "score",
    "flagged",
    "reason",
    "given_label",
    "suggested_label",
)


@dataclass(frozen=True)
class LabelNoise:
    """The three detectors' results for one run (an empty frame for a kind that was not run).

    Attributes
    ----------
    mismatch : pandas.DataFrame
        :func:`analysis.detectors.mismatch.mismatched_pairs`, one row per pair.
    labels : pandas.DataFrame
        :func:`analysis.detectors.labels.label_issues`, one row per examined labelled item.
    duplicates : pandas.DataFrame
        :func:`analysis.detectors.duplicates.near_duplicate_anchors`, one row per anchor item.
    """

    mismatch: pd.DataFrame
    labels: pd.DataFrame
    duplicates: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """All rows of all kinds in ``FLAG_COLUMNS``, each kind sorted by score (highest first).

        ``item_id`` is the anchor for ``mismatched_pair`` and ``duplicate`` rows and the labelled item for
        ``label`` rows; ``other_item_id`` is the positive, or the nearest other anchor, or empty.
        """
        parts = []
        if len(self.mismatch):
            m = self.mismatch
            parts.append(
                pd.DataFrame(
                    {
                        "kind": "mismatched_pair",
                        "pair_id": m["pair_id"].astype(object),
                        "item_id": m["anchor_id"].astype("Int64"),
                        "other_item_id": m["positive_id"].astype("Int64"),
                        "score": m["score"].astype(float),
                        "flagged": m["flagged"].astype(bool),
                        "reason": m["reason"],
                        "given_label": None,
                        "suggested_label": None,
                    }
                )
            )
        if len(self.labels):
            lab = self.labels
            parts.append(
                pd.DataFrame(
                    {
                        "kind": "label",
                        "pair_id": lab["pair_id"].astype(object),
                        "item_id": lab["item_id"].astype("Int64"),
                        "other_item_id": pd.array([pd.NA] * len(lab), dtype="Int64"),
                        "score": lab["score"].astype(float),
                        "flagged": lab["flagged"].astype(bool),
                        "reason": lab["reason"],
                        "given_label": lab["given_label"].astype(object),
                        "suggested_label": lab["suggested_label"].astype(object),
                    }
                )
            )
        if len(self.duplicates):
            d = self.duplicates
            parts.append(
                pd.DataFrame(
                    {
                        "kind": "duplicate",
                        "pair_id": d["pair_id"].astype(object),
                        "item_id": d["item_id"].astype("Int64"),
                        "other_item_id": d["other_item_id"].astype("Int64"),
                        "score": d["score"].astype(float),
                        "flagged": d["flagged"].astype(bool),
                        "reason": d["reason"],
                        "given_label": None,
                        "suggested_label": None,
                    }
                )
            )
        if not parts:
            return pd.DataFrame(columns=list(FLAG_COLUMNS))
        out = pd.concat(parts, ignore_index=True)
        out["_kind"] = pd.Categorical(out["kind"], categories=list(KINDS))
        out = out.sort_values(["_kind", "score"], ascending=[True, False], kind="stable").drop(columns="_kind")
        return out.reset_index(drop=True)[list(FLAG_COLUMNS)]

    def summary(self) -> pd.DataFrame:
        """Per kind: rows examined and rows flagged."""
        rows = []
        for kind, frame in zip(KINDS, (self.mismatch, self.labels, self.duplicates), strict=True):
            flagged = int(frame["flagged"].sum()) if len(frame) else 0
            rows.append({"kind": kind, "examined": len(frame), "flagged": flagged})
        return pd.DataFrame(rows)


def detect_label_noise(
    run: Run,
    *,
    kinds: Sequence[str] = KINDS,
    flag_rank: float | None = None,
    examine: str = "anchors",
    method: str = "logreg",
    k: int = 10,
    n_folds: int = 5,
    duplicate_threshold: float = DEFAULT_THRESHOLD,
    search: str = "auto",
    keep_indexes: bool = True,
    progress: Callable[[float], None] | None = None,
) -> LabelNoise:
    """Run the label-noise detectors.

    Parameters
    ----------
    run : Run
        The run folder.
    kinds : sequence of str
        Which of ``KINDS`` to run.
    flag_rank : float, optional
        Mismatched pairs: mutual-rank cut (default: :func:`analysis.detectors.mismatch.default_flag_rank`).
    examine, method, k, n_folds
        Wrong labels: which items, which probe, neighbours shown, folds (see
        :func:`analysis.detectors.labels.label_issues`).
    duplicate_threshold : float
        Near duplicates: cosine at or above which two anchors are flagged.
    search : {"auto", "exact", "ivf", "hnsw"}
        The neighbour search of all three (their galleries and the run's shared graphs): 'auto' lets
        :func:`analysis.search.rule.choose_kind` pick from the work, 'exact' forces exact search.
    keep_indexes : bool
        Keep the search indexes the mismatched-pair step built over its galleries in the run's memo (for a
        later search of the same items: the page, whose run lives on). False releases them once that step is
        done, so that the wrong-label step's (N, C) probabilities and cleanlab's copies of them reuse their
        memory (the CLI, whose process ends with the command: the two indexes hold 0.4 GB at 100k pairs; the
        neighbour graphs the later steps read stay memoised).
    progress : callable, optional
        Called with the fraction done.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not len(kinds):
        what = f"unknown label-noise kinds {sorted(unknown)}" if unknown else "no label-noise kind given"
        raise NegScopeError(f"{what}; expected some of {list(KINDS)}")
    if int(k) < 1 or int(n_folds) < 2:
        raise NegScopeError(f"k must be at least 1 and n_folds at least 2, got k={k}, n_folds={n_folds}")
    if flag_rank is not None and not flag_rank > 0:
        raise NegScopeError(f"flag_rank must be a positive number, got {flag_rank}")
    if not -1.0 <= float(duplicate_threshold) <= 1.0:
        raise NegScopeError(f"duplicate_threshold is a cosine in [-1, 1], got {duplicate_threshold}")
    report = progress or (lambda _f: None)
    steps = [kind for kind in KINDS if kind in kinds]
    results: dict[str, pd.DataFrame] = {}
    for i, kind in enumerate(steps):

        def sub(f: float, i: int = i) -> None:
            report((i + f) / len(steps))

        if kind == "mismatched_pair":
            results[kind] = mismatched_pairs(run, flag_rank=flag_rank, search=search, progress=sub)
            if not keep_indexes:
                release_indexes(run)
        elif kind == "label":
            results[kind] = label_issues(
                run, examine=examine, method=method, k=k, n_folds=n_folds, search=search, progress=sub
            )
        else:
            results[kind] = near_duplicate_anchors(run, threshold=duplicate_threshold, search=search, progress=sub)
    report(1.0)
    return LabelNoise(
        mismatch=results.get("mismatched_pair", pd.DataFrame(columns=list(MISMATCH_COLUMNS))),
        labels=results.get("label", pd.DataFrame(columns=list(LABEL_COLUMNS))),
        duplicates=results.get("duplicate", pd.DataFrame(columns=list(DUPLICATE_COLUMNS))),
    )


def _ranking_quality(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    if y.all() or not y.any():
        return float("nan"), float("nan")
    return float(roc_auc_score(y, score)), float(average_precision_score(y, score))


def evaluate_on_truth(result: LabelNoise, truth: pd.DataFrame) -> pd.DataFrame:
    """AUROC / AUPRC of the detectors and of simple baselines on planted ground truth.

    Parameters
    ----------
    result : LabelNoise
        Detector output for the run.
    truth : pandas.DataFrame
        One row per pair: ``pair_id`` and the bool columns ``mismatched`` and/or ``label_flipped``
        (as :func:`analysis.data.truth.pair_truth` returns).

    Returns
    -------
    pandas.DataFrame
        Rows (task, method): ``mismatched_pair`` with ``ours`` (mutual-rank score) and ``pos_sim``
        (baseline: ``-pos_sim``); ``label`` with ``ours`` (1 - cleanlab label quality) and
        ``knn_disagreement`` (baseline: share of the k nearest labelled neighbours with another label).
        Columns ``auroc``, ``auprc``, ``n``, ``n_true``, ``precision`` and ``recall`` of ``flagged`` (ours only).
    """
    truth = truth.set_index(truth["pair_id"].astype(str))
    rows = []
    tasks = (
        ("mismatched_pair", "mismatched", result.mismatch, "pos_sim", lambda f: -f["pos_sim"].to_numpy(float)),
        ("label", "label_flipped", result.labels, "knn_disagreement", lambda f: f["knn_disagreement"].to_numpy()),
    )
    for task, column, frame, base_name, base_score in tasks:
        if column not in truth.columns or frame.empty:
            continue
        y = truth[column].reindex(frame["pair_id"].astype(str)).to_numpy()
        known = pd.notna(y)
        y = y[known].astype(bool)
        sub = frame[known]
        flagged = sub["flagged"].to_numpy(bool)
        for method, score in (("ours", sub["score"].to_numpy(float)), (base_name, base_score(sub))):
            auroc, auprc = _ranking_quality(y, score)
            row = {"task": task, "method": method, "auroc": auroc, "auprc": auprc, "n": len(y), "n_true": int(y.sum())}
            if method == "ours":
                row["precision"] = float((y & flagged).sum() / max(flagged.sum(), 1))
                row["recall"] = float((y & flagged).sum() / max(y.sum(), 1))
            rows.append(row)
    return pd.DataFrame(rows, columns=["task", "method", "auroc", "auprc", "n", "n_true", "precision", "recall"])
