"""Alignment, uniformity and tolerance against slow loops; too-few-sample messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import geometry as G
from tests.synthetic import make_synthetic_run


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _slow_uniformity(x: np.ndarray, t: float = 2.0) -> float:
    x = _unit(x.astype(np.float64))
    vals = []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            vals.append(np.exp(-t * np.sum((x[i] - x[j]) ** 2)))
    return float(np.log(np.mean(vals)))


def _slow_tolerance(x: np.ndarray, labels: list) -> float:
    x = _unit(x.astype(np.float64))
    vals = []
    for i in range(len(x)):
        for j in range(len(x)):
            if i != j and labels[i] is not None and labels[i] == labels[j]:
                vals.append(float(x[i] @ x[j]))
    return float(np.mean(vals))


@pytest.mark.parametrize("seed", [0, 1])
def test_alignment_matches_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(50, 7)), rng.normal(size=(50, 7))
    xs, ys = _unit(x), _unit(y)
    slow = np.mean([np.sum((xs[i] - ys[i]) ** 2) for i in range(50)])
    assert G.alignment(x, y) == pytest.approx(slow, rel=1e-5)
    slow3 = np.mean([np.linalg.norm(xs[i] - ys[i]) ** 3 for i in range(50)])
    assert G.alignment(x, y, alpha=3) == pytest.approx(slow3, rel=1e-5)
    assert G.alignment(x, x) == pytest.approx(0.0, abs=1e-6)
    assert G.alignment(x, -x) == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize(("seed", "n", "block"), [(0, 60, 1024), (1, 75, 16), (2, 33, 7)])
def test_uniformity_matches_loop(seed: int, n: int, block: int) -> None:
    x = np.random.default_rng(seed).normal(size=(n, 5))
    assert G.uniformity(x, block_size=block) == pytest.approx(_slow_uniformity(x), rel=1e-5)
    assert G.uniformity(x, t=1.0, block_size=block) == pytest.approx(_slow_uniformity(x, t=1.0), rel=1e-5)


def test_uniformity_extremes_and_subset() -> None:
    collapsed = np.tile([[1.0, 0.0, 0.0]], (20, 1))
    assert G.uniformity(collapsed) == pytest.approx(0.0, abs=1e-9)
    spread = np.random.default_rng(0).normal(size=(3000, 256))
    assert G.uniformity(spread) == pytest.approx(-4.0, abs=0.05)
    # the seeded subset of a big set estimates the full value
    big = np.random.default_rng(1).normal(size=(600, 8))
    assert G.uniformity(big, max_items=300) == pytest.approx(G.uniformity(big), abs=0.1)


def test_tolerance_matches_loop() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6))
    labels = [str(v) for v in rng.integers(0, 4, size=40)]
    labels[3] = None
    labels[7] = None
    assert G.tolerance(x, np.array(labels, dtype=object)) == pytest.approx(_slow_tolerance(x, labels), rel=1e-6)


def test_too_few_samples_give_nan_and_a_message(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    assert np.isnan(G.alignment(rng.normal(size=(3, 4)), rng.normal(size=(3, 4))))
    assert np.isnan(G.uniformity(rng.normal(size=(4, 4))))
    assert np.isnan(G.tolerance(rng.normal(size=(5, 4)), [None] * 5))
    run, _ = make_synthetic_run(tmp_path / "small", n_pairs=4, k=2, n_classes=2)
    report = G.geometry_report(run)
    assert np.isnan(report.alignment) and np.isnan(report.uniformity)
    text = " ".join(report.messages)
    assert "at least 10 positive pairs" in text and "this run has 4" in text
    assert "at least 10 items" in text


def test_geometry_report_on_synthetic_run(tmp_path: Path) -> None:
    tight, _ = make_synthetic_run(tmp_path / "tight", n_pairs=150, noise=0.05, gap=0.0)
    loose, _ = make_synthetic_run(tmp_path / "loose", n_pairs=150, noise=1.5, gap=0.0)
    rt, rl = G.geometry_report(tight), G.geometry_report(loose)
    assert rt.alignment < rl.alignment
    emb = tight.embeddings
    a, p = tight.pairs["anchor_id"].to_numpy(), tight.pairs["positive_id"].to_numpy()
    assert rt.alignment == pytest.approx(np.mean(np.sum((emb[a] - emb[p]) ** 2, axis=1)), rel=1e-5)
    assert set(rt.uniformity_by_group) == {"image", "text"}
    assert rt.tolerance > rl.tolerance
    assert rt.messages == []
    one, _ = make_synthetic_run(tmp_path / "one", n_pairs=50, two_modalities=False)
    assert set(G.geometry_report(one).uniformity_by_group) == {"anchor side", "other side"}


def test_geometry_report_without_labels(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "r", n_pairs=40)
    items = run.items.assign(label=pd.Series([None] * len(run.items), dtype=object))
    unlabelled = type(run)(
        path=run.path,
        manifest=run.manifest,
        items=items,
        embeddings=run.embeddings,
        pairs=run.pairs,
        negatives=run.negatives,
    )
    report = G.geometry_report(unlabelled)
    assert np.isnan(report.tolerance) and report.n_labelled == 0
    assert any("class labels" in m for m in report.messages)


def test_random_reference_sits_at_alignment_two() -> None:
    align, uni = G.random_reference(64, n=1500)
    assert align == pytest.approx(2.0, abs=0.05)
    assert -4.0 < uni < -3.0


def test_geometry_report_on_replacement_embeddings(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "r", n_pairs=60, gap=1.0)
    rng = np.random.default_rng(5)
    other = _unit(rng.normal(size=run.embeddings.shape))
    report = G.geometry_report(run, embeddings=other)
    a, p = run.pairs["anchor_id"].to_numpy(), run.pairs["positive_id"].to_numpy()
    assert report.alignment == pytest.approx(np.mean(np.sum((other[a] - other[p]) ** 2, axis=1)), rel=1e-5)
    assert report.uniformity == pytest.approx(_slow_uniformity(other), rel=1e-4)
    assert report.alignment != pytest.approx(G.geometry_report(run).alignment, rel=1e-3)
