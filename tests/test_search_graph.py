"""The shared neighbour graph (cached in the run folder), estimated ranks at scale, kNN label probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.search.graph as graph_module
from analysis.detectors.labels import graph_probs
from analysis.detectors.mismatch import mismatched_pairs
from analysis.metrics.retrieval import rank_info, recall_at_k, retrieval_ranks
from analysis.runs.folder import load_run
from analysis.search.exact import SharedExclusions, target_ranks
from analysis.search.graph import CACHE_DIR, run_graph, vector_graph
from analysis.search.index import build_index
from analysis.search.index import recall_at_k as neighbour_recall
from analysis.search.ranks import TOP_K, estimated_target_ranks
from tests.synthetic import clustered_unit_vectors, make_synthetic_run


def _clustered(n: int, d: int, *, seed: int, n_clusters: int = 60, spread: float = 0.35) -> np.ndarray:
    return clustered_unit_vectors(np.random.default_rng(seed), n, d, n_clusters=n_clusters, spread=spread)


def _reference_graph(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    n = len(x)
    order = np.lexsort((np.broadcast_to(np.arange(n), s.shape), -s), axis=1)[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def _public_files(run_path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_path)): p.read_bytes()
        for p in sorted(run_path.rglob("*"))
        if p.is_file() and CACHE_DIR not in p.relative_to(run_path).parts
    }


def test_the_run_graph_is_exact_on_small_runs_cached_in_the_run_folder_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=150, dim=12)
    before = _public_files(run.path)
    anchors = np.unique(run.pairs["anchor_id"].to_numpy(np.int64))
    graph = run_graph(run, anchors, k=8)
    ref_rows, ref_sims = _reference_graph(run.embeddings[anchors], 8)
    np.testing.assert_array_equal(graph.rows, ref_rows)
    np.testing.assert_allclose(graph.sims, ref_sims, rtol=1e-5, atol=1e-5)
    assert graph.kind == "exact" and graph.recall == 1.0
    files = list((run.path / CACHE_DIR).glob("knn-image-k8-*.npz"))
    assert len(files) == 1
    assert _public_files(run.path) == before  # the cache is an extra file, nothing public changes

    # a fresh load reads the cache instead of searching again
    def no_search(*_a, **_k):
        raise AssertionError("searched again instead of reading the cache")

    monkeypatch.setattr(graph_module, "vector_graph", no_search)
    again = run_graph(load_run(run.path), anchors, k=8)
    np.testing.assert_array_equal(again.rows, graph.rows)
    np.testing.assert_array_equal(again.sims, graph.sims)
    # another item set is another graph (computed, not read from the first one's file)
    with pytest.raises(AssertionError, match="searched again"):
        run_graph(load_run(run.path), anchors[:-1], k=8)


def test_an_unwritable_cache_only_skips_caching(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=60, dim=8)
    (run.path / CACHE_DIR).write_text("not a folder")  # mkdir fails: nothing cached, the graph still returned
    anchors = np.unique(run.pairs["anchor_id"].to_numpy(np.int64))
    graph = run_graph(run, anchors, k=4)
    assert graph.rows.shape == (len(anchors), 4)
    assert (run.path / CACHE_DIR).read_text() == "not a folder"


@pytest.mark.slow
def test_an_approximate_graph_reports_the_recall_it_reaches() -> None:
    x = _clustered(6000, 32, seed=1)
    rows, sims, kind, recall, note = vector_graph(x, 10, kind="ivf")
    ref_rows, _ = _reference_graph(x, 10)
    measured = neighbour_recall(rows, ref_rows)
    assert kind == "ivf" and "recall@10" in note
    assert recall >= 0.95 and measured >= 0.93  # tuned on a 500-row sample to reach 0.95
    assert abs(measured - recall) < 0.03  # the sample's recall is the graph's recall
    assert not (rows == np.arange(len(x))[:, None]).any()  # never the row itself


@pytest.mark.slow
def test_estimated_ranks_are_exact_at_the_top_and_close_beyond() -> None:
    corpus = _clustered(8000, 32, seed=2)
    rng = np.random.default_rng(3)
    q_rows = rng.choice(len(corpus), 3000, replace=False)
    queries = corpus[q_rows] + 0.05 * rng.normal(size=(3000, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    targets = rng.integers(0, len(corpus), 3000)
    targets[:1500] = q_rows[:1500]  # half the targets near the top, half anywhere
    excl = SharedExclusions.from_members(np.arange(3000), np.arange(3000), (q_rows + 1) % len(corpus))
    exact = target_ranks(queries, corpus, targets, exclude=excl)
    index = build_index(corpus, kind="ivf", n_queries=3000)
    est = estimated_target_ranks(queries, corpus, targets, index, exclude=excl)
    top = exact <= TOP_K
    assert np.mean(est[top] == exact[top]) >= 0.95
    for k in (1, 5, 10):
        assert abs(recall_at_k(est, k) - recall_at_k(exact, k)) <= 0.01
    deep = exact > 200
    rel = np.abs(est[deep] - exact[deep]) / exact[deep]
    assert np.median(rel) < 0.15 and (est[~top] > TOP_K).mean() >= 0.95


@pytest.mark.slow
def test_retrieval_ranks_say_how_they_were_computed(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=3000, dim=16, two_modalities=False)
    exact = retrieval_ranks(run, search="exact")
    assert rank_info(run)["rank_kind"] == "exact"
    est = retrieval_ranks(run, search="ivf")
    info = rank_info(run)
    assert info["rank_kind"] == "estimated" and 0.95 <= info["recall"] <= 1.0 and "IVF" in info["search"]
    assert abs(recall_at_k(est, 10) - recall_at_k(exact, 10)) <= 0.01


def test_graph_probabilities_are_leave_one_out_weighted_votes() -> None:
    rows = np.array([[1, 2, -1], [0, 2, 1], [0, 1, 1]])
    sims = np.array([[0.9, 0.5, 0.0], [0.9, -0.2, 0.3], [0.5, 0.4, 0.4]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    probs = graph_probs(rows, sims, labels, smoothing=1.0)
    ref = np.zeros((3, 2))
    for i in range(3):
        for r, s in zip(rows[i], sims[i], strict=True):
            if r >= 0:
                ref[i, labels[r]] += max(float(s), 0.0)
    ref = (ref + 0.5) / (ref.sum(axis=1, keepdims=True) + 1.0)
    np.testing.assert_allclose(probs, ref, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


@pytest.mark.slow
def test_mismatch_search_above_the_budget_finds_the_planted_pairs_like_exact(tmp_path: Path) -> None:
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=2500, dim=16, mismatch_rate=0.05)
    exact = mismatched_pairs(run, search="exact")
    approx = mismatched_pairs(load_run(run.path), search="ivf")
    assert exact.attrs["ranks"] == "exact" and approx.attrs["ranks"].startswith("estimated")
    assert approx.attrs["recall"] >= 0.95
    agree = (exact["flagged"] == approx["flagged"]).mean()
    assert agree >= 0.98
    # the best other candidate / anchor come from the searched top of the ranks (IVF), like exact search's
    assert (exact["best_id"] == approx["best_id"]).mean() >= 0.95
    assert (exact["best_anchor_id"] == approx["best_anchor_id"]).mean() >= 0.95
    np.testing.assert_allclose(exact["pos_sim"], approx["pos_sim"], rtol=1e-6)
    planted = truth.mismatched
    assert planted.sum() > 50
    caught_exact = (exact["flagged"].to_numpy() & planted).sum()
    caught_approx = (approx["flagged"].to_numpy() & planted).sum()
    assert caught_approx >= caught_exact - 0.02 * planted.sum()


def test_graph_probabilities_in_float32_match_float64() -> None:
    rng = np.random.default_rng(4)
    rows = rng.integers(-1, 50, size=(50, 6))
    sims = rng.uniform(-0.2, 1.0, size=(50, 6)).astype(np.float32)
    labels = np.arange(50) % 7
    p64 = graph_probs(rows, sims, labels)
    p32 = graph_probs(rows, sims, labels, dtype=np.float32)
    assert p64.dtype == np.float64 and p32.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-7)


def test_one_index_per_item_set_is_shared_by_the_graph_and_the_galleries(tmp_path: Path) -> None:
    from analysis.search.graph import run_index

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=300, dim=16, two_modalities=False)
    anchors = np.unique(run.pairs["anchor_id"].to_numpy())
    first = run_index(run, anchors, kind="ivf", n_queries=300)
    assert run_index(run, anchors, kind="ivf", n_queries=300) is first  # built once
    assert first.kind == "ivf" and first.recall is not None and 0.0 < first.recall <= 1.0
    assert run_index(run, anchors, kind="exact") is not first  # another kind: its own index
    graph = run_graph(run, anchors, kind="ivf", cache=False)
    assert graph.kind == "ivf" and graph.recall == pytest.approx(first.recall)
    # its trained cells are cached in the run folder: another process rebuilds the same index without training
    # (two files: the cells of this item set, and the same cells kept for other item sets of its modality)
    assert len(list((Path(run.path) / CACHE_DIR).glob("ivf-*.npy"))) == 2
    again = run_index(load_run(run.path), anchors, kind="ivf", n_queries=300)
    assert again is not first and again.params == first.params and again.recall == first.recall
    queries = run.embeddings[anchors[:50]]
    for got, want in zip(again.search(queries, 5), first.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)


def test_another_item_set_of_the_same_modality_reuses_the_trained_cells(tmp_path: Path) -> None:
    """label-noise's positive gallery after false-negatives' corpus: one k-means training, recall still measured."""
    from analysis.search.graph import run_index
    from analysis.search.index import ivf_centroids

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=300, dim=16, two_modalities=False)
    anchors = np.unique(run.pairs["anchor_id"].to_numpy())
    positives = np.unique(run.pairs["positive_id"].to_numpy())
    assert not np.array_equal(anchors, positives)
    first = run_index(run, anchors, kind="ivf", n_queries=300)
    other = run_index(load_run(run.path), positives, kind="ivf", n_queries=300)
    np.testing.assert_array_equal(ivf_centroids(other.index), ivf_centroids(first.index))
    assert other.recall is not None and other.recall >= 0.95
    # exact top-5 of some positives among the positives, in float64, found by the shared-cell index
    x = run.embeddings[positives].astype(np.float64)
    want = np.argsort(-(x[:40] @ x.T), axis=1, kind="stable")[:, :5]
    _, got = other.search(run.embeddings[positives[:40]], 5)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, want, strict=True)]) >= 0.9


def test_label_flags_through_an_approximate_graph_agree_with_exact(tmp_path: Path) -> None:
    """Above ``PROBE_MAX_WORK`` the label detector reads the shared graph: IVF and exact give the same flags."""
    from analysis.detectors.labels import label_issues

    # 4,000 anchors x 300 classes: the graph path; 4,096 or more rows are needed for IVF cells to pay
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=4200, dim=24, n_classes=300, noise=0.2, two_modalities=False)
    exact = label_issues(run, search="exact")
    approx = label_issues(load_run(run.path), search="ivf")
    assert "exact neighbour search" in exact.attrs["probes"][0]
    assert "IVF" in approx.attrs["probes"][0] and "measured recall@10" in approx.attrs["probes"][0]
    assert exact["flagged"].sum() > 0
    assert (exact["flagged"] == approx["flagged"]).mean() >= 0.98
    assert (exact["suggested_label"] == approx["suggested_label"]).mean() >= 0.98


def test_label_noise_cli_says_which_search_ran_and_can_force_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from analysis.cli import main

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=300, seed=3, two_modalities=False)
    out = tmp_path / "flags.csv"
    assert main(["label-noise", str(run.path), "--kinds", "mismatched_pair", "--index", "ivf", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "IVF (nlist=" in printed and "measured recall@10 = " in printed and "ranks estimated" in printed
    approx = pd.read_csv(out)
    assert main(["label-noise", str(run.path), "--kinds", "mismatched_pair", "--index", "exact", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ranks exact" in printed and "IVF" not in printed
    exact = pd.read_csv(out)
    assert len(exact) == len(approx) == 300
    with pytest.raises(SystemExit) as stop:
        main(["label-noise", str(run.path), "--index", "annoy"])
    assert stop.value.code == 2


def test_cells_of_items_are_cached_and_fill_a_later_index_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later process filling an index over the same cells (any item set of the modality) reads each row's cell
    from the run folder instead of assigning it again: the same index, the same neighbours."""
    import analysis.search.index as index_module
    from analysis.search.graph import run_index
    from analysis.search.index import build_index, ivf_assignments, ivf_centroids

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=300, dim=16, two_modalities=False)
    items = np.arange(len(run.items))
    subset = items[items % 10 != 0]  # another item set, as many cells (the shared cells need the same count)
    first = run_index(run, items, kind="ivf", n_queries=len(items))
    cells = ivf_centroids(first.index)
    # the cells each row went to, read back from the lists, are the quantizer's nearest centroid
    _, nearest = first.index.quantizer.search(run.embeddings[items], 1)
    np.testing.assert_array_equal(ivf_assignments(first.index), nearest[:, 0])
    assert len(list((Path(run.path) / CACHE_DIR).glob("assign-*.npy"))) == 1

    given: list[bool] = []
    real = index_module.build_ivf
    monkeypatch.setattr(
        index_module, "build_ivf", lambda *a, **kw: given.append(kw.get("assign") is not None) or real(*a, **kw)
    )
    later = run_index(load_run(run.path), subset, kind="ivf", n_queries=len(subset))
    assert given == [True]  # filled from the cached cells of its rows
    fresh = build_index(run.embeddings[subset], kind="ivf", n_queries=len(subset), start_depth=1, centroids=cells)
    assert given == [True, False]
    np.testing.assert_array_equal(ivf_assignments(later.index), ivf_assignments(fresh.index))
    queries = run.embeddings[subset[:60]]
    later.index.nprobe = fresh.index.nprobe = 2
    for got, want in zip(later.search(queries, 5), fresh.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)
