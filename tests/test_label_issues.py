"""Wrong class labels: the cross-validated probe, the neighbour evidence, cleanlab on planted flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.detectors.labels import (
    _neighbour_lists,
    _reason,
    _reasons,
    _release_cleanlab_copies,
    graph_probs,
    knn_evidence,
    label_issues,
    labelled_items,
    out_of_sample_probs,
)
from analysis.errors import NegScopeError
from analysis.runs.folder import Run, load_run, write_run
from tests.synthetic import make_synthetic_run


def _with_labels(run: Run, path: Path, labels: list[object]) -> Run:
    items = run.items.copy()
    items["label"] = pd.array(labels, dtype="string")
    write_run(
        path, manifest=run.manifest, items=items, embeddings=run.embeddings, pairs=run.pairs, negatives=run.negatives
    )
    return load_run(path)


def _flipped(
    tmp_path: Path, *, n_pairs: int, noise: float, rate: float, seed: int
) -> tuple[Run, np.ndarray, np.ndarray]:
    """A synthetic run with ``rate`` of its pair labels flipped; returns (run, flipped mask, true classes)."""
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=n_pairs, noise=noise, mismatch_rate=0.0, seed=seed)
    rng = np.random.default_rng(seed + 100)
    labels = truth.pair_class.copy()
    flip = rng.random(n_pairs) < rate
    labels[flip] = (labels[flip] + rng.integers(1, 10, size=flip.sum())) % 10
    run = _with_labels(run, tmp_path / "flipped", [str(v) for v in np.concatenate([labels, labels])])
    return run, flip, truth.pair_class


def test_knn_evidence_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=50)
    rows, sims, disagree = knn_evidence(x.astype(np.float32), labels, k=5)
    for i in range(50):
        s = x @ x[i]
        s[i] = -np.inf
        order = np.argsort(-s, kind="stable")[:5]
        np.testing.assert_array_equal(rows[i], order)
        np.testing.assert_allclose(sims[i], s[order], atol=1e-5)
        assert disagree[i] == pytest.approx(np.mean(labels[order] != labels[i]))


def _graph_with_gaps(seed: int, n: int = 40, k: int = 6, n_classes: int = 5):
    """Random neighbour rows (some -1, some negative similarities) and labels of ``n`` items."""
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(np.delete(np.arange(n), i), size=k, replace=False) for i in range(n)])
    rows[rng.random((n, k)) < 0.15] = -1
    rows[3] = -1  # an item without any neighbour: the uniform prior alone
    sims = rng.uniform(-0.3, 1.0, size=(n, k)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=n)
    labels[:n_classes] = np.arange(n_classes)  # every class present
    return rows, sims, labels


def test_graph_probs_match_a_float64_reference() -> None:
    rows, sims, labels = _graph_with_gaps(0)
    n, n_classes, smoothing = len(labels), int(labels.max()) + 1, 0.7
    want = np.zeros((n, n_classes))
    for i in range(n):
        votes, total = np.zeros(n_classes), 0.0
        for r, s in zip(rows[i], sims[i], strict=True):
            if r >= 0:
                votes[labels[r]] += max(float(s), 0.0)
                total += max(float(s), 0.0)
        want[i] = (votes + smoothing / n_classes) / (total + smoothing)
    got64 = graph_probs(rows, sims, labels, smoothing=smoothing)
    got32 = graph_probs(rows, sims, labels, smoothing=smoothing, dtype=np.float32)
    assert got64.dtype == np.float64 and got32.dtype == np.float32 and got32.shape == (n, n_classes)
    np.testing.assert_allclose(got64, want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got32, want, rtol=2e-7, atol=0)
    np.testing.assert_allclose(want[3], 1.0 / n_classes)
    np.testing.assert_allclose(got64.sum(axis=1), 1.0, rtol=1e-12)


def test_neighbour_lists_and_reasons_equal_the_row_by_row_reference() -> None:
    rows, sims, codes = _graph_with_gaps(1)
    classes = np.array(["a", "b", "7", "d'x", "e"], dtype=object)
    item_ids = np.arange(len(codes)) * 3 + 100
    got = _neighbour_lists(rows, sims, item_ids, classes[codes])
    for i, (r, s) in enumerate(zip(rows, sims, strict=True)):
        assert got["neighbor_ids"][i] == item_ids[r[r >= 0]].tolist()
        assert got["neighbor_labels"][i] == classes[codes[r[r >= 0]]].tolist()
        assert got["neighbor_sims"][i] == s[r >= 0].astype(float).round(4).tolist()
    assert got["neighbor_ids"][3] == [] and got["neighbor_sims"][3] == []
    rng = np.random.default_rng(2)
    n, k = len(codes), rows.shape[1]
    probs = rng.dirichlet(np.ones(len(classes)), size=n).astype(np.float32)
    best = probs.argmax(axis=1)
    p_given, p_sugg = probs[np.arange(n), codes], probs[np.arange(n), best]
    disagree = rng.integers(0, k + 1, size=n) / k
    flagged = rng.random(n) < 0.3
    agree = k - np.rint(disagree * k).astype(np.int64)
    # the reference: NumPy scalars straight from the arrays, as each row was formatted before
    want = [
        _reason(
            str(classes[codes[i]]),
            str(classes[best[i]]),
            p_given[i],
            p_sugg[i],
            k - int(round(disagree[i] * k)),
            k,
            bool(flagged[i]),
        )
        for i in range(n)
    ]
    assert _reasons(classes, codes, best, p_given, p_sugg, agree, k, flagged) == want
    assert any(text.startswith("cleanlab flags it: ") for text in want)


def test_cleanlab_copies_are_released_without_changing_results() -> None:
    import cleanlab.filter
    from cleanlab.filter import find_label_issues

    rows, sims, labels = _graph_with_gaps(3, n=60, k=8, n_classes=4)
    probs = graph_probs(rows, sims, labels, dtype=np.float32)
    first = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    assert cleanlab.filter.pred_probs_by_class is not None  # the copy cleanlab leaves behind
    _release_cleanlab_copies()
    assert cleanlab.filter.pred_probs_by_class is None and cleanlab.filter.prune_count_matrix_cols is None
    again = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    np.testing.assert_array_equal(first, again)


def test_probabilities_are_out_of_sample() -> None:
    # Two well separated classes plus one point of class 0 sitting inside class 1: a probe that had seen the
    # point would give it its own label; out of sample it cannot.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 4)) * 0.1 + np.array([1, 0, 0, 0])
    b = rng.normal(size=(40, 4)) * 0.1 + np.array([0, 1, 0, 0])
    odd = np.array([[0.0, 1.0, 0.02, 0.0]])
    x = np.vstack([a, b, odd]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.array([0] * 40 + [1] * 40 + [0])
    for method in ("logreg", "knn"):
        probs = out_of_sample_probs(x, y, method=method, n_folds=5)
        assert probs.shape == (81, 2)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        assert probs[-1, 0] < 0.2, method
        np.testing.assert_array_equal(probs[:80].argmax(axis=1), y[:80])
    with pytest.raises(NegScopeError):
        out_of_sample_probs(x, y, method="svm")


def test_flipped_labels_are_found_with_neighbour_evidence(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    run, flip, true_class = _flipped(tmp_path, n_pairs=400, noise=0.2, rate=0.06, seed=3)
    got = label_issues(run)
    assert len(got) == 400 and (got["modality"] == "image").all()  # the anchors
    y = flip[got["pair_id"].to_numpy(int)]
    assert roc_auc_score(y, got["score"]) > 0.98
    flagged = got["flagged"].to_numpy()
    # cleanlab's confident learning is conservative on small classes (40 items here): most flips, few others
    assert (flagged & y).sum() / y.sum() > 0.5
    assert (flagged & y).sum() / flagged.sum() > 0.8
    caught = got[flagged & y]
    # the probe's suggestion is the true class for most caught flips
    assert (caught["suggested_label"].astype(int).to_numpy() == true_class[caught["pair_id"].astype(int)]).mean() > 0.8
    row = caught.iloc[0]
    assert row["suggested_label"] != row["given_label"]
    assert row["reason"].startswith("cleanlab flags it: given")
    assert len(row["neighbor_ids"]) == 10 and len(row["neighbor_labels"]) == 10
    assert row["item_id"] not in row["neighbor_ids"]
    labels_of = run.items["label"].to_numpy()
    assert [labels_of[i] for i in row["neighbor_ids"]] == row["neighbor_labels"]
    assert row["score"] == pytest.approx(1 - row["p_given"])
    assert row["knn_disagreement"] == pytest.approx(np.mean(np.array(row["neighbor_labels"]) != row["given_label"]))


def test_logreg_probe_ranks_flips_at_least_as_well_as_the_knn_baseline(tmp_path: Path) -> None:
    from sklearn.metrics import average_precision_score

    run, flip, _ = _flipped(tmp_path, n_pairs=500, noise=0.5, rate=0.06, seed=4)
    got = label_issues(run)
    y = flip[got["pair_id"].to_numpy(int)]
    ours = average_precision_score(y, got["score"])
    base = average_precision_score(y, got["knn_disagreement"])
    assert ours > base


def test_which_items_are_examined(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=40, seed=2)
    anchors = labelled_items(run)
    assert anchors["item_id"].tolist() == list(range(40)) and anchors["pair_id"].tolist() == list(range(40))
    positives = labelled_items(run, examine="positives")
    assert positives["item_id"].tolist() == list(range(40, 80)) and positives["pair_id"].tolist() == list(range(40))
    both = label_issues(run, examine="all")
    assert set(both["modality"]) == {"image", "text"} and len(both) == 80
    with pytest.raises(NegScopeError):
        labelled_items(run, examine="negatives")


def test_missing_and_rare_labels(tmp_path: Path) -> None:
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=60, seed=9)
    labels: list[object] = [str(c) for c in truth.pair_class] * 2
    labels[0] = None  # unlabelled anchor: not examined
    labels[1] = "lonely"  # a class of one: cannot be cross-validated, skipped
    got = label_issues(_with_labels(run, tmp_path / "l", labels))
    assert 0 not in set(got["item_id"]) and 1 not in set(got["item_id"])
    assert len(got) == 58 and got.attrs["skipped"] == 1
    none = label_issues(_with_labels(run, tmp_path / "n", [None] * 120))
    assert none.empty and "flagged" in none.columns
    one = label_issues(_with_labels(run, tmp_path / "o", ["x"] * 120))
    assert one.empty and one.attrs["skipped"] == 60
