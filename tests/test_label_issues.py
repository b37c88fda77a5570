"""Wrong class labels: the cross-validated probe, the neighbour evidence, cleanlab on planted flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.detectors.labels import knn_evidence, label_issues, labelled_items, out_of_sample_probs
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
