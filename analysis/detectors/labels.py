"""Wrong class labels: out-of-sample class probabilities from the embeddings, then cleanlab.

1. Which items: by default the **anchors** that carry a label. A dataset's ``label`` column is the class of
   the pair and the loader puts it on both the anchor and the positive item; the anchor is what the label
   describes (in the digits sample, the image), and examining the positive as well would count every pair
   twice and confuse a mismatched caption with a wrong label. ``examine="positives"`` or ``"all"`` (every
   labelled item) are options; items are always grouped by modality, one probe per modality, because image
   and text embeddings sit in different regions of the space.
2. Out-of-sample probabilities :math:`\\hat p(y \\mid x)` from a probe fitted on the embeddings with K-fold
   cross-validation (``sklearn.model_selection.cross_val_predict``): a logistic-regression probe (default) or
   a distance-weighted kNN classifier. Classes with fewer than two labelled items cannot be cross-validated
   and are not examined (counted in ``attrs["skipped"]``).
3. ``cleanlab.filter.find_label_issues`` (confident learning, prune by noise rate) decides ``flagged``;
   ``cleanlab.rank.get_label_quality_scores`` (self-confidence :math:`\\hat p(y = \\text{given} \\mid x)`)
   gives the quality, and ``score = 1 - quality``.
4. Evidence: each item's ``k`` nearest labelled neighbours (faiss, same modality, itself left out) with their
   labels and similarities. The share of them that disagree with the given label is also the simple baseline
   ``knn_disagreement``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from analysis.choices import LABEL_EXAMINE as EXAMINE
from analysis.choices import LABEL_METHODS as METHODS
from analysis.errors import NegScopeError
from analysis.runs.folder import Run
from analysis.search.exact import knn
from analysis.search.graph import GRAPH_K, run_graph

#: Above these items of one modality, or items x classes, the cross-validated probe gives way to
#: leave-one-out kNN probabilities read from the run's shared neighbour graph (measured on a busy two-core
#: machine: 5-fold logistic regression on 10k x 384 with 300 classes took 31 s; on 100k items, minutes).
PROBE_MAX_ITEMS = 20_000
PROBE_MAX_WORK = 1_000_000

LABEL_COLUMNS = (
    "item_id",
    "pair_id",
    "modality",
    "given_label",
    "suggested_label",
    "score",
    "flagged",
    "reason",
    "quality",
    "p_given",
    "p_suggested",
    "knn_disagreement",
    "neighbor_ids",
    "neighbor_labels",
    "neighbor_sims",
)


def labelled_items(run: Run, *, examine: str = "anchors") -> pd.DataFrame:
    """The items whose labels are examined.

    Parameters
    ----------
    run : Run
        The run folder.
    examine : {'anchors', 'positives', 'all'}
        Anchor items, positive items, or every labelled item.

    Returns
    -------
    pandas.DataFrame
        ``item_id``, ``pair_id`` (the first pair the item is the anchor of, else the positive of; NA for an
        item only listed as a negative), ``modality``, ``label`` (str); only items with a label.
    """
    if examine not in EXAMINE:
        raise NegScopeError(f"examine must be one of {EXAMINE}, not {examine!r}")
    labels = pd.Series(run.labels, dtype=object)  # normalised once (analysis.data.tables.normalise_label)
    first_as_anchor = run.pairs.drop_duplicates("anchor_id").set_index("anchor_id")["pair_id"]
    first_as_positive = run.pairs.drop_duplicates("positive_id").set_index("positive_id")["pair_id"]
    if examine == "anchors":
        ids = first_as_anchor.index.to_numpy(np.int64)
    elif examine == "positives":
        ids = first_as_positive.index.to_numpy(np.int64)
    else:
        ids = run.items["item_id"].to_numpy(np.int64)
    ids = np.sort(ids)
    pair_id = pd.Series(ids).map(first_as_anchor)
    pair_id = pair_id.where(pair_id.notna(), pd.Series(ids).map(first_as_positive))
    out = pd.DataFrame(
        {
            "item_id": ids,
            "pair_id": pair_id.to_numpy(),
            "modality": run.items["modality"].to_numpy()[ids],
            "label": labels.to_numpy()[ids],
        }
    )
    return out[out["label"].notna()].reset_index(drop=True)


def out_of_sample_probs(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "logreg",
    n_folds: int = 5,
    k: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Cross-validated class probabilities: every row predicted by a probe that never saw it.

    Parameters
    ----------
    features : numpy.ndarray
        (N, D) float32 embeddings.
    labels : numpy.ndarray
        (N,) int class codes 0..C-1, every class with at least two members.
    method : {'logreg', 'knn'}
        Logistic-regression probe, or distance-weighted kNN (cosine through L2-normalised rows).
    n_folds : int
        Folds (lowered to the smallest class size, at least 2).
    k : int
        Neighbours of the kNN probe.
    seed : int
        Fold shuffling seed.

    Returns
    -------
    numpy.ndarray
        (N, C) float64 probabilities, rows summing to 1.
    """
    if method not in METHODS:
        raise NegScopeError(f"method must be one of {METHODS}, not {method!r}")
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1
    smallest = int(np.bincount(labels, minlength=n_classes).min())
    folds = StratifiedKFold(n_splits=max(2, min(n_folds, smallest)), shuffle=True, random_state=seed)
    x = np.asarray(features, dtype=np.float64)
    if method == "logreg":
        # On unit vectors, C = 1 regularises enough that the probe does not memorise the flipped labels of
        # the training folds (measured on the digits sample and on synthetic runs; larger C or rescaled
        # features rank the flips slightly worse).
        model = LogisticRegression(C=1.0, max_iter=1000)
    else:
        n_train = len(labels) - int(np.ceil(len(labels) / folds.get_n_splits()))
        model = KNeighborsClassifier(n_neighbors=max(1, min(k, n_train)), weights="distance", algorithm="brute")
    # The problems are small: one BLAS thread avoids oversubscription, which slowed the probe 100x on a busy
    # two-core machine.
    with threadpool_limits(limits=1):
        probs = cross_val_predict(model, x, labels, cv=folds, method="predict_proba")
    probs = np.clip(probs, 0.0, None)
    return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)


def graph_probs(
    rows: np.ndarray, sims: np.ndarray, labels: np.ndarray, *, smoothing: float = 1.0, dtype: type = np.float64
) -> np.ndarray:
    """Leave-one-out class probabilities from each item's nearest other items (out of sample by construction).

    ``p[i, c] = (sum_j w_ij [y_j = c] + smoothing / C) / (sum_j w_ij + smoothing)`` over the neighbours ``j``
    of ``i`` (the item itself never among them), with weights ``w_ij = max(sim_ij, 0)``.

    Parameters
    ----------
    rows : numpy.ndarray
        (N, k) int64 neighbour rows (-1: none).
    sims : numpy.ndarray
        (N, k) float32 similarities.
    labels : numpy.ndarray
        (N,) int class codes 0..C-1.
    smoothing : float
        Weight of a uniform prior (keeps every probability above zero).
    dtype : type
        Of the result (float32 halves the (N, C) array and cleanlab's copies of it at scale: 0.8 GB at 100k
        items x 2,000 classes); the weights are summed in float64 either way.

    Returns
    -------
    numpy.ndarray
        (N, C) probabilities of ``dtype``, rows summing to 1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, n_classes = len(labels), int(labels.max()) + 1
    valid = rows >= 0
    w = np.where(valid, np.maximum(sims.astype(np.float64), 0.0), 0.0)
    # the (N, k) votes summed per (item, class) cell
    cells, inverse = np.unique(
        np.arange(n, dtype=np.int64)[:, None] * n_classes + labels[np.where(valid, rows, 0)], return_inverse=True
    )
    votes = np.bincount(inverse.ravel(), weights=w.ravel(), minlength=len(cells))
    denom = (w.sum(axis=1) + smoothing).astype(dtype)
    prior = np.asarray(smoothing / n_classes, dtype=dtype)
    # one (N, C) array written once (at 100k items x 2,000 classes: no second copy, no second pass): each row's
    # prior share, then the voted cells, each rounded as (prior + votes) / denominator in ``dtype``
    probs = np.empty((n, n_classes), dtype=dtype)
    probs[...] = (prior / denom)[:, None]
    probs.reshape(-1)[cells] = (prior + votes.astype(dtype)) / denom[cells // n_classes]
    return probs


def knn_evidence(features: np.ndarray, labels: np.ndarray, *, k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows (by cosine), their similarities, and the disagreement baseline.

    Parameters
    ----------
    features : numpy.ndarray
        (N, D) float32, L2-normalised.
    labels : numpy.ndarray
        (N,) class codes.
    k : int
        Neighbours (clipped to N - 1).

    Returns
    -------
    rows : numpy.ndarray
        (N, k) int64 neighbour rows, nearest first, the row itself left out.
    sims : numpy.ndarray
        (N, k) float32 similarities.
    disagreement : numpy.ndarray
        (N,) share of the ``k`` neighbours whose label differs from the row's.
    """
    n = len(labels)
    k = max(0, min(int(k), n - 1))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), np.zeros(n)
    sims, rows = knn(features, features, k + 1)
    keep = rows != np.arange(n)[:, None]
    # Drop the row itself; when ties hide it beyond the list, drop the last neighbour instead.
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False
    rows = rows[keep].reshape(n, k)
    sims = sims[keep].reshape(n, k)
    disagreement = (labels[rows] != labels[:, None]).mean(axis=1)
    return rows, sims, disagreement


def _disagreement(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) share of each row's found neighbours (rows >= 0) whose label differs from the row's."""
    valid = rows >= 0
    differ = (labels[np.where(valid, rows, 0)] != labels[:, None]) & valid
    return differ.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def _reason(given: str, suggested: str, p_given: float, p_sugg: float, agree: int, k: int, flagged: bool) -> str:
    neigh = f"{agree} of {k} nearest labelled neighbours say '{given}'"
    if suggested != given:
        text = f"given '{given}' but the probe says '{suggested}' (p={p_sugg:.2f}; p(given)={p_given:.2f}); {neigh}"
    else:
        text = f"the probe agrees with '{given}' (p={p_given:.2f}); {neigh}"
    return ("cleanlab flags it: " + text) if flagged else text


def _release_cleanlab_copies() -> None:
    """Let go of the copy of the probabilities that ``cleanlab.filter.find_label_issues`` leaves behind.

    With one job (and on Linux with any number) it splits ``pred_probs`` by given label into the module globals
    ``pred_probs_by_class`` / ``prune_count_matrix_cols`` for its workers and never clears them: a whole (N, C)
    copy (0.8 GB at 100k items x 2,000 classes in float32) would stay alive until the next call. The next call
    sets them again before reading them, so clearing them changes nothing in its results.
    """
    import cleanlab.filter

    for name in ("pred_probs_by_class", "prune_count_matrix_cols"):
        if getattr(cleanlab.filter, name, None) is not None:
            setattr(cleanlab.filter, name, None)


def _reasons(
    classes: np.ndarray,
    codes: np.ndarray,
    best: np.ndarray,
    p_given: np.ndarray,
    p_sugg: np.ndarray,
    agree: np.ndarray,
    k: int,
    flagged: np.ndarray,
) -> list[str]:
    """The :func:`_reason` of every row.

    Parameters
    ----------
    classes : numpy.ndarray
        (C,) class names.
    codes, best : numpy.ndarray
        (N,) int given and suggested class codes.
    p_given, p_sugg : numpy.ndarray
        (N,) probabilities of the given and the suggested class.
    agree : numpy.ndarray
        (N,) int neighbours (of ``k``) that carry the given label.
    k : int
        Neighbours looked at.
    flagged : numpy.ndarray
        (N,) bool cleanlab's flags.

    Returns
    -------
    list of str
        (N,) reasons (Python scalars throughout: the same text as formatting the NumPy ones).
    """
    names = [str(c) for c in classes]
    return [
        _reason(names[c], names[b], pg, ps, a, k, f)
        for c, b, pg, ps, a, f in zip(
            codes.tolist(), best.tolist(), p_given.tolist(), p_sugg.tolist(), agree.tolist(), flagged.tolist(),
            strict=True,
        )
    ]


def _neighbour_lists(rows: np.ndarray, sims: np.ndarray, item_ids: np.ndarray, labels: np.ndarray) -> dict[str, list]:
    """Each row's found neighbours (``rows >= 0``) as Python lists: ids, labels, similarities (4 decimals).

    Parameters
    ----------
    rows : numpy.ndarray
        (N, k) int neighbour rows (-1: none).
    sims : numpy.ndarray
        (N, k) float32 similarities.
    item_ids : numpy.ndarray
        (N,) item id of each row.
    labels : numpy.ndarray
        (N,) object label of each row.

    Returns
    -------
    dict
        ``neighbor_ids``, ``neighbor_labels``, ``neighbor_sims``: (N,) lists of lists (made by whole-array
        ``tolist`` calls; rows with missing neighbours shortened afterwards). Equal values are one shared
        Python object (one int per item, one float per distinct rounded similarity), not one per list entry:
        at 100k items x 10 neighbours, 2 million fewer small objects.
    """
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    ids = np.array(item_ids.tolist(), dtype=object)[safe].tolist()
    names = labels[safe].tolist()
    distinct, which = np.unique(sims.astype(np.float64).round(4), return_inverse=True)
    values = np.array(distinct.tolist(), dtype=object)[which.reshape(rows.shape)].tolist()
    for i in np.flatnonzero(~valid.all(axis=1)).tolist():
        keep = valid[i].tolist()
        ids[i], names[i], values[i] = (
            [v for v, ok in zip(lst[i], keep, strict=True) if ok] for lst in (ids, names, values)
        )
    return {"neighbor_ids": ids, "neighbor_labels": names, "neighbor_sims": values}


def label_issues(
    run: Run,
    *,
    examine: str = "anchors",
    method: str = "logreg",
    n_folds: int = 5,
    k: int = 10,
    seed: int = 0,
    search: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Find items whose class label looks wrong.

    Parameters
    ----------
    run : Run
        The run folder (``items.label`` holds the labels).
    examine : {'anchors', 'positives', 'all'}
        Which labelled items to examine (see the module docstring).
    method : {'logreg', 'knn'}
        The cross-validated probe.
    n_folds : int
        Cross-validation folds.
    k : int
        Neighbours shown as evidence (and of the kNN probe).
    seed : int
        Fold seed.
    search : {"auto", "exact", "ivf", "hnsw"}
        The search of the run's shared neighbour graph used at scale (``PROBE_MAX_ITEMS``): 'auto' lets the
        rule pick from the work.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    pandas.DataFrame
        One row per examined item, columns ``LABEL_COLUMNS``, in item order; ``neighbor_ids`` /
        ``neighbor_labels`` / ``neighbor_sims`` hold lists. ``attrs["skipped"]`` counts labelled items not
        examined (their class has fewer than two members in their modality). Empty when there are fewer than
        two classes to tell apart.
    """
    report = progress or (lambda _f: None)
    items = labelled_items(run, examine=examine)
    frames = []
    skipped = 0
    probes: list[str] = []
    groups = list(items.groupby("modality", sort=True))
    for g, (modality, group) in enumerate(groups):
        counts = group["label"].value_counts()
        ok_classes = counts[counts >= 2].index
        skipped += int((~group["label"].isin(ok_classes)).sum())
        group = group[group["label"].isin(ok_classes)].reset_index(drop=True)
        if len(ok_classes) < 2:
            skipped += len(group)
            continue
        classes = np.array(sorted(ok_classes, key=_class_sort_key), dtype=object)
        codes = pd.Categorical(group["label"], categories=classes).codes.astype(np.int64)
        if len(codes) > PROBE_MAX_ITEMS or len(codes) * len(classes) > PROBE_MAX_WORK:
            # at scale: the run's shared neighbour graph gives both the evidence and leave-one-out probabilities
            graph = run_graph(
                run, group["item_id"].to_numpy(), k=max(GRAPH_K, k), modality=str(modality), kind=search
            )
            rows, sims = graph.first(min(k, graph.k))
            probs = graph_probs(rows, sims, codes, dtype=np.float32)
            disagree = _disagreement(rows, codes)
            probes.append(f"{modality}: kNN probabilities from the shared graph ({graph.describe()})")
        else:
            feats = run.embeddings[group["item_id"].to_numpy()]
            probs = out_of_sample_probs(feats, codes, method=method, n_folds=n_folds, k=k, seed=seed)
            rows, sims, disagree = knn_evidence(feats, codes, k=k)
        report((g + 0.6) / len(groups))
        issues = find_label_issues(codes, probs, filter_by="prune_by_noise_rate", n_jobs=1)
        _release_cleanlab_copies()
        quality = get_label_quality_scores(codes, probs, method="self_confidence")
        best = probs.argmax(axis=1)
        p_given = probs[np.arange(len(codes)), codes]
        p_sugg = probs[np.arange(len(codes)), best]
        del probs  # (N, C): every later column comes from the (N,) arrays above
        item_ids = group["item_id"].to_numpy()
        n_k = rows.shape[1]
        agree = n_k - np.rint(disagree * n_k).astype(np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "item_id": item_ids,
                    "pair_id": group["pair_id"].to_numpy(),
                    "modality": modality,
                    "given_label": classes[codes],
                    "suggested_label": classes[best],
                    "score": 1.0 - quality,
                    "flagged": issues,
                    "reason": _reasons(classes, codes, best, p_given, p_sugg, agree, n_k, issues),
                    "quality": quality,
                    "p_given": p_given,
                    "p_suggested": p_sugg,
                    "knn_disagreement": disagree,
                    **_neighbour_lists(rows, sims, item_ids, classes[codes]),
                }
            )
        )
        report((g + 1) / len(groups))
    out = (
        pd.concat(frames, ignore_index=True).sort_values("item_id", kind="stable").reset_index(drop=True)
        if frames
        else pd.DataFrame(columns=list(LABEL_COLUMNS))
    )
    out.attrs.update({"skipped": skipped, "examine": examine, "method": method, "probes": probes})
    report(1.0)
    return out


def _class_sort_key(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then the rest alphabetically."""
    try:
        return (0, float(label), str(label))
    except ValueError:
        return (1, 0.0, str(label))
