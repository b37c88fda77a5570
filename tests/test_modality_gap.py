"""Modality gap: metrics against slow references, recovery of a planted gap, the shift experiment, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.errors import NegScopeError
from analysis.metrics import modality_gap as M
from analysis.metrics.temperature import sweep
from analysis.runs.candidates import build_candidates
from analysis.runs.folder import Run, load_run, write_run
from tests.synthetic import make_synthetic_run


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gap_run(
    path: Path,
    *,
    delta: float,
    n_pairs: int = 200,
    dim: int = 24,
    k: int = 5,
    seed: int = 0,
    two_modalities: bool = True,
) -> tuple[Run, np.ndarray]:
    """Pairs share a random direction; images are offset by +delta/2 * v and texts by -delta/2 * v (v known)."""
    rng = np.random.default_rng(seed)
    v = _unit(rng.normal(size=(1, dim)))[0]
    centres = _unit(rng.normal(size=(n_pairs, dim)))
    anchors = _unit(centres + 0.3 * rng.normal(size=(n_pairs, dim)) / np.sqrt(dim) + delta / 2 * v)
    positives = _unit(centres + 0.3 * rng.normal(size=(n_pairs, dim)) / np.sqrt(dim) - delta / 2 * v)
    items = pd.DataFrame(
        {
            "item_id": np.arange(2 * n_pairs),
            "modality": (["image"] if two_modalities else ["text"]) * n_pairs + ["text"] * n_pairs,
            "content": [f"a{i}" for i in range(n_pairs)] + [f"p{i}" for i in range(n_pairs)],
            "label": [None] * (2 * n_pairs),
        }
    )
    pairs = pd.DataFrame(
        {"pair_id": np.arange(n_pairs), "anchor_id": np.arange(n_pairs), "positive_id": n_pairs + np.arange(n_pairs)}
    )
    rows = [
        (i, n_pairs + int(j), "given")
        for i in range(n_pairs)
        for j in rng.choice(np.delete(np.arange(n_pairs), i), size=k, replace=False)
    ]
    negs = pd.DataFrame(rows, columns=["pair_id", "negative_id", "source"])
    write_run(
        path,
        manifest={"dataset_hash": "gap", "logit_scale": 1 / 0.05},
        items=items,
        embeddings=np.vstack([anchors, positives]),
        pairs=pairs,
        negatives=negs,
    )
    return load_run(path), v


# ------------------------------------------------------------------------------------------------ references


def test_metrics_match_slow_references() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6))
    groups = M.Groups(
        names=("image", "text"), a_ids=np.arange(30), b_ids=np.arange(30, 80), one_modality=False, note=""
    )
    m = M.gap_metrics(x, groups)
    xs = _unit(x)
    ca, cb = xs[:30].mean(axis=0), xs[30:].mean(axis=0)
    np.testing.assert_allclose(m.gap_vector, ca - cb, rtol=1e-6, atol=1e-9)
    assert m.centroid_distance == pytest.approx(np.sqrt(np.sum((ca - cb) ** 2)), rel=1e-6)
    assert m.centroid_cosine == pytest.approx(ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb), rel=1e-6)
    for name, block in (("image", xs[:30]), ("text", xs[30:])):
        slow = np.mean([block[i] @ block[j] for i in range(len(block)) for j in range(len(block)) if i != j])
        assert m.mean_cosine[name] == pytest.approx(slow, rel=1e-6, abs=1e-9)
    cov = np.cov(xs, rowvar=False, bias=True)
    u = (ca - cb) / np.linalg.norm(ca - cb)
    assert m.gap_variance_share == pytest.approx(u @ cov @ u / np.trace(cov), rel=1e-6)
    assert (m.n_a, m.n_b) == (30, 50)


def test_variance_share_of_a_pure_offset_is_high() -> None:
    rng = np.random.default_rng(2)
    e = np.eye(5)[0]
    x = np.vstack([np.tile(e, (20, 1)), np.tile(-e, (20, 1))]) + 1e-3 * rng.normal(size=(40, 5))
    assert M.variance_share_along(x, e) > 0.99
    assert M.variance_share_along(x, np.eye(5)[1]) < 0.01


def test_recall_at_1_matches_brute_force(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=0.4, n_pairs=60)
    emb = run.embeddings.astype(np.float64)
    gallery = np.unique(np.concatenate([run.pairs["positive_id"], run.negatives["negative_id"]]))
    hits = []
    for a, p in zip(run.pairs["anchor_id"], run.pairs["positive_id"], strict=True):
        scores = emb[gallery] @ emb[a]
        hits.append(gallery[int(np.argmax(scores))] == p)
    assert M.recall_at_1(run, run.embeddings) == pytest.approx(np.mean(hits))


# ------------------------------------------------------------------------------------------------ planted gap


@pytest.mark.parametrize(("delta", "min_separability"), [(0.6, 0.8), (1.5, 0.98)])
def test_known_gap_is_recovered(tmp_path: Path, delta: float, min_separability: float) -> None:
    run, v = gap_run(tmp_path / "r", delta=delta)
    groups = M.modality_groups(run)
    assert groups.names == ("image", "text") and not groups.one_modality
    m = M.gap_metrics(run.embeddings, groups)
    direction = m.gap_vector / np.linalg.norm(m.gap_vector)
    assert direction @ v > 0.95  # image minus text points along +v
    assert m.separability > min_separability
    assert m.centroid_cosine < 1.0


def test_centroid_distance_grows_with_the_planted_gap(tmp_path: Path) -> None:
    dists = []
    for i, delta in enumerate([0.0, 0.3, 0.8, 1.6]):
        run, _ = gap_run(tmp_path / f"r{i}", delta=delta)
        dists.append(M.gap_metrics(run.embeddings, M.modality_groups(run)).centroid_distance)
    assert dists == sorted(dists)
    assert dists[0] < 0.2 < dists[-1]


def test_separability_is_chance_without_a_gap(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=0.0, n_pairs=400)
    m = M.gap_metrics(run.embeddings, M.modality_groups(run))
    assert abs(m.separability - 0.5) < 0.1


# ------------------------------------------------------------------------------------------------ shift, project out


def test_shift_embeddings_formula_and_identity(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=40)
    groups = M.modality_groups(run)
    gap = M.gap_metrics(run.embeddings, groups).gap_vector
    np.testing.assert_allclose(M.shift_embeddings(run.embeddings, groups, gap, 0.0), run.embeddings, atol=1e-6)
    shifted = M.shift_embeddings(run.embeddings, groups, gap, 0.7)
    emb = run.embeddings.astype(np.float64)
    np.testing.assert_allclose(shifted[groups.a_ids], _unit(emb[groups.a_ids] - 0.35 * gap), atol=1e-6)
    np.testing.assert_allclose(shifted[groups.b_ids], _unit(emb[groups.b_ids] + 0.35 * gap), atol=1e-6)


def test_the_closing_lambda_closes_the_gap(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.5)
    table = M.shift_experiment(run, tau=0.05, lambdas=[-0.5, 0.0, 0.5, 1.0, 1.5])
    assert table["lambda"].is_monotonic_increasing and table["closes_gap"].sum() == 1
    before = table.loc[table["lambda"] == 0.0, "centroid_distance"].iloc[0]
    closed = table.loc[table["closes_gap"], "centroid_distance"].iloc[0]
    assert closed < 0.05 * before
    assert closed == pytest.approx(table["centroid_distance"].min())
    # widening the gap (negative lambda) moves the centroids further apart
    assert table.loc[table["lambda"] == -0.5, "centroid_distance"].iloc[0] > before
    # the loss at each lambda is InfoNCE over the shifted candidates at tau
    groups = M.modality_groups(run)
    gap = M.gap_metrics(run.embeddings, groups).gap_vector
    cands = build_candidates(run, embeddings=M.shift_embeddings(run.embeddings, groups, gap, 0.5))
    ref = sweep(cands.pos_sim, cands.neg_sim, [0.05])["loss"].iloc[0]
    assert table.loc[table["lambda"] == 0.5, "loss"].iloc[0] == pytest.approx(ref, rel=1e-6)
    assert table["recall_at_1"].between(0, 1).all()


def test_project_out_removes_the_direction(tmp_path: Path) -> None:
    run, v = gap_run(tmp_path / "r", delta=1.2)
    groups = M.modality_groups(run)
    gap = M.gap_metrics(run.embeddings, groups).gap_vector
    proj = M.project_out(run.embeddings, gap)
    u = gap / np.linalg.norm(gap)
    np.testing.assert_allclose(proj @ u, 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(proj, axis=1), 1.0, atol=1e-5)
    scores, summary = M.project_out_comparison(run, tau=0.05)
    assert set(scores["embedding"]) == {"original", "gap projected out"}
    assert set(scores["kind"]) == {"positive", "negative"}
    n_pos = len(run.pairs)
    assert (scores[(scores["embedding"] == "original")]["kind"] == "positive").sum() == n_pos
    orig, after = summary.iloc[0], summary.iloc[1]
    assert after["centroid_distance"] < 0.3 * orig["centroid_distance"]
    # the planted gap pushes image·text similarities down; removing it raises the positive similarities
    assert after["mean_pos_sim"] > orig["mean_pos_sim"]


# ------------------------------------------------------------------------------------------------ one modality, PCA


def test_one_modality_groups_are_the_two_sides(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "one", n_pairs=80, two_modalities=False)
    groups = M.modality_groups(run)
    assert groups.one_modality and groups.names == ("anchor side", "positive side")
    assert "one modality" in groups.note
    assert set(groups.a_ids) == set(run.pairs["anchor_id"])
    assert set(groups.b_ids) == set(run.pairs["positive_id"]) | set(run.negatives["negative_id"])
    report = M.gap_report(run, lambdas=[0.0, 1.0])
    assert report.to_json()["one_modality"] is True


def test_gap_pca_shapes_and_pairs(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=120)
    pca = M.gap_pca(run, max_per_group=50, n_pairs=20)
    assert len(pca.pairs) == 20
    ids = set(pca.points["item_id"])
    assert set(pca.pairs["anchor_id"]) <= ids and set(pca.pairs["positive_id"]) <= ids
    assert set(pca.points["group"]) == {"image", "text"}
    assert 0 < pca.explained.sum() <= 1 + 1e-9 and pca.explained[0] >= pca.explained[1]
    # the gap dominates: the first component separates the two centroids
    c = pca.centroids.set_index("group")
    assert abs(c.loc["image", "pc1"] - c.loc["text", "pc1"]) > abs(c.loc["image", "pc2"] - c.loc["text", "pc2"])


def test_too_few_items_for_separability(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=6, k=2)
    m = M.gap_metrics(run.embeddings, M.modality_groups(run))
    assert np.isnan(m.separability)
    assert any("separability needs at least" in msg for msg in m.messages)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=80)
    assert main(["gap", str(run.path), "--json", "--lambdas", "0", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("centroid_distance", "centroid_cosine", "separability", "shift", "mean_cosine", "gap_variance_share"):
        assert key in data
    assert data["groups"] == ["image", "text"] and data["tau"] == pytest.approx(0.05)
    lambdas = [row["lambda"] for row in data["shift"]]
    assert lambdas == sorted(lambdas) and 0.0 in lambdas and 1.0 in lambdas and len(lambdas) == 3
    assert all({"lambda", "recall_at_1", "loss"} <= set(row) for row in data["shift"])
    assert data["lambda_close"] in lambdas
    m = M.gap_metrics(run.embeddings, M.modality_groups(run))
    assert data["centroid_distance"] == pytest.approx(m.centroid_distance)


def test_cli_text_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=40)
    assert main(["gap", str(run.path), "--lambdas", "0", "--tau", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "centroid distance" in out and "closes the gap" in out
    assert main(["gap", str(run.path), "--tau", "-1"]) == 2
    assert "positive" in capsys.readouterr().err
    assert main(["gap", str(tmp_path / "nope"), "--json"]) == 2


def test_bad_tau_in_shift_experiment(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=20)
    with pytest.raises(NegScopeError):
        M.shift_experiment(run, tau=0.0)


def test_sample_run_has_a_measurable_gap(sample_run) -> None:
    groups = M.modality_groups(sample_run)
    assert groups.names == ("image", "text")
    m = M.gap_metrics(sample_run.embeddings, groups)
    assert 0 < m.centroid_distance < 2 and m.separability > 0.6
    table = M.shift_experiment(sample_run, tau=sample_run.tau, lambdas=[0.0])
    closed = table.loc[table["closes_gap"], "centroid_distance"].iloc[0]
    assert closed < 0.1 * m.centroid_distance
    assert table["recall_at_1"].between(0, 1).all() and table["loss"].gt(0).all()
