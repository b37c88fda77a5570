"""The embedding map: kNN graph, PCA, trustworthiness, UMAP on the sample, caching, colours, overlays, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.manifold import trustworthiness as sk_trustworthiness

from analysis.cli import main
from analysis.errors import NegScopeError
from analysis.maps.embedding_map import (
    REVIEW_STATUSES,
    MapParams,
    auto_schedule,
    compute_map,
    find_items,
    is_cached,
    item_attributes,
    item_neighbours,
    map_cache_path,
    pair_lines,
    pca_2d,
    per_item_scores,
    review_status,
    trustworthiness,
    umap_2d,
    umap_knn,
)
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import load_run
from analysis.search.exact import hnsw_index, knn_graph
from analysis.search.rule import choose_kind
from tests.synthetic import make_synthetic_run

REPO = Path(__file__).resolve().parent.parent


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(n: int, d: int, *, seed: int = 0, n_clusters: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    return _unit(centres[rng.integers(0, n_clusters, n)] + 0.4 * rng.normal(size=(n, d)))


# --- neighbours -------------------------------------------------------------------------------------


def test_knn_graph_matches_brute_force_without_self() -> None:
    x = _unit(np.random.default_rng(3).normal(size=(400, 10)))
    sims, ids = knn_graph(x, 7, block_size=64)
    ref = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(ref, -np.inf)
    order = np.argsort(-ref, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(sims, np.take_along_axis(ref, order, axis=1), atol=1e-5)
    assert not (ids == np.arange(400)[:, None]).any()


def test_knn_graph_with_duplicates_and_approximate_index() -> None:
    x = _unit(np.random.default_rng(4).normal(size=(300, 8)))
    x[1] = x[0]  # an exact duplicate: either may be ranked first, neither may list itself
    _, ids = knn_graph(x, 5)
    assert ids.shape == (300, 5)
    assert not (ids == np.arange(300)[:, None]).any()
    assert 1 in ids[0] and 0 in ids[1]
    _, approx = knn_graph(x, 5, index=hnsw_index(x))
    assert not (approx == np.arange(300)[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx, ids, strict=True)])
    assert recall > 0.9
    with pytest.raises(ValueError):
        knn_graph(x[:10], 3, index=hnsw_index(x))
    assert knn_graph(x[:1], 3)[1].shape == (1, 0)


@pytest.mark.parametrize("method", ["exact", "ivf", "hnsw"])
def test_umap_knn_puts_each_row_first_at_distance_zero(method: str) -> None:
    x = _clusters(2000, 16, seed=5)
    ids, dists, description = umap_knn(x, 10, method=method)
    assert ids.shape == dists.shape == (2000, 10)
    np.testing.assert_array_equal(ids[:, 0], np.arange(2000))
    assert (dists[:, 0] == 0).all()
    assert (np.diff(dists, axis=1) >= -1e-6).all()
    # distances are the Euclidean distances of the unit rows
    rows = np.arange(2000)[:, None]
    ref = np.linalg.norm(x[rows].astype(np.float64) - x[ids].astype(np.float64), axis=2)
    np.testing.assert_allclose(dists, ref, atol=1e-3)
    exact, _, _ = umap_knn(x, 10, method="exact")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
    assert recall >= (1.0 if method == "exact" else 0.9)
    assert ("exact" in description) == (method == "exact")


def test_auto_schedule() -> None:
    assert auto_schedule(3_000) == (200, 1.0)  # small maps: umap-learn's large-data epochs, full step
    epochs, rate = auto_schedule(50_000)
    assert epochs < 200 and rate < 1.0
    assert MapParams().key() != MapParams(learning_rate=0.5).key()


def test_auto_knn_is_exact_for_small_runs_only() -> None:
    """The map's kNN graph (N queries over N rows) follows the one search rule."""
    ample = 64.0 * 2**30  # bytes free: the memory branch (IVF-PQ) is tested in test_ivfpq.py
    assert choose_kind(3_000, 3_000, 128, memory=ample) == "exact"
    assert choose_kind(20_000, 20_000, 64, memory=ample) == "ivf"
    assert choose_kind(100_000, 100_000, 384, memory=ample) == "ivf"
    x = _clusters(5000, 16, seed=3)
    _, _, exact = umap_knn(x, 5)  # 5000 x 5000 x 16 = 4e8 multiply-adds: exact
    assert exact.startswith("exact")


# --- projections and quality ------------------------------------------------------------------------


def test_pca_matches_float64_svd() -> None:
    x = np.random.default_rng(6).normal(size=(200, 9)) * np.arange(1, 10)
    got = pca_2d(x.astype(np.float32))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    signs = np.sign(np.sum(got * ref, axis=0))  # components are defined up to sign
    np.testing.assert_allclose(got, ref * signs, rtol=1e-4, atol=1e-4)
    assert np.array_equal(pca_2d(x), pca_2d(x))


def test_trustworthiness_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 12))
    y = x[:, :2] + 0.5 * rng.normal(size=(300, 2))
    for k in (5, 10):
        assert trustworthiness(x, y, k=k, block_size=37) == pytest.approx(sk_trustworthiness(x, y, n_neighbors=k))
    full = trustworthiness(x, y, k=10)
    sampled = [trustworthiness(x, y, k=10, sample=100, seed=s) for s in range(8)]
    assert abs(np.mean(sampled) - full) < 0.02
    with pytest.raises(NegScopeError):
        trustworthiness(x[:10], y[:10], k=5)


@pytest.mark.slow
def test_umap_map_of_the_sample_is_trustworthy(sample_run) -> None:
    table = compute_map(sample_run, MapParams(method="umap", seed=0), use_cache=False)
    assert list(table.columns) == ["item_id", "x", "y"]
    np.testing.assert_array_equal(table["item_id"], np.arange(len(sample_run.items)))
    coords = table[["x", "y"]].to_numpy()
    assert np.isfinite(coords).all()
    t = sk_trustworthiness(sample_run.embeddings, coords, n_neighbors=10)
    assert t >= 0.9, t
    # ours agrees with scikit-learn's on a real map too
    assert trustworthiness(sample_run.embeddings, coords, k=10) == pytest.approx(t, abs=1e-6)
    # and UMAP keeps neighbourhoods better than PCA does
    pca = compute_map(sample_run, MapParams(method="pca"), use_cache=False)
    assert t > sk_trustworthiness(sample_run.embeddings, pca[["x", "y"]].to_numpy(), n_neighbors=10)


@pytest.mark.slow
def test_umap_is_deterministic_with_a_seed() -> None:
    x = _clusters(600, 12, seed=8)
    steps: list[tuple[float, str]] = []
    a = umap_2d(x, seed=3, n_epochs=50, progress=lambda f, m: steps.append((f, m)))
    b = umap_2d(x, seed=3, n_epochs=50)
    c = umap_2d(x, seed=4, n_epochs=50)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert steps[0][0] == 0.0 and steps[-1][0] == 1.0
    assert all(f2 >= f1 for (f1, _), (f2, _) in zip(steps, steps[1:], strict=False))
    assert any("epochs" in m for _, m in steps)
    spectral = umap_2d(x, seed=3, n_epochs=50, init="spectral")
    assert spectral.shape == (600, 2) and np.isfinite(spectral).all()


@pytest.mark.slow
def test_tiny_runs_still_get_a_map() -> None:
    x = _unit(np.random.default_rng(9).normal(size=(3, 4)))
    assert umap_2d(x).shape == (3, 2)
    assert umap_2d(_unit(np.random.default_rng(9).normal(size=(12, 4))), n_epochs=20).shape == (12, 2)


def test_map_params_are_checked() -> None:
    bad_params = (
        {"method": "tsne"},
        {"knn": "lsh"},
        {"init": "random"},
        {"n_neighbors": 1},
        {"min_dist": 2.0},
        {"n_epochs": 0},
        {"learning_rate": 0.0},
    )
    for bad in bad_params:
        with pytest.raises(NegScopeError):
            MapParams(**bad)
    assert MapParams().key() != MapParams(min_dist=0.3).key()
    # PCA ignores the UMAP parameters, so they do not split its cache
    assert MapParams(method="pca").key() == MapParams(method="pca", n_neighbors=30).key()


# --- run maps and their cache -------------------------------------------------------------------------


@pytest.mark.slow
def test_compute_map_caches_in_the_run_folder(synthetic_run) -> None:
    run, _ = synthetic_run
    params = MapParams(method="umap", n_epochs=30, seed=1)
    assert not is_cached(run, params)
    first = compute_map(run, params)
    assert first.attrs["cached"] is False
    path = map_cache_path(run, params)
    assert path.parent == run.path and path.name.startswith("map_umap_") and path.is_file()
    assert is_cached(run, params)
    again = compute_map(run, params)
    assert again.attrs["cached"] is True
    pd.testing.assert_frame_equal(first, again)
    # other parameters, other file
    other = MapParams(method="umap", n_epochs=30, seed=1, min_dist=0.5)
    assert map_cache_path(run, other) != path and not is_cached(run, other)
    # a damaged cache file is recomputed, not trusted
    path.write_bytes(b"not parquet")
    assert not is_cached(run, params)
    redone = compute_map(run, params)
    assert redone.attrs["cached"] is False
    np.testing.assert_array_equal(redone[["x", "y"]].to_numpy(), first[["x", "y"]].to_numpy())


def test_compute_map_works_in_a_read_only_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = make_synthetic_run(tmp_path / "ro", n_pairs=60)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    # (chmod does not stop root, so the refusal is simulated where the cache file would be created)
    monkeypatch.setattr("analysis.maps.embedding_map.tempfile.mkstemp", refuse)
    table = compute_map(run, MapParams(method="pca"))
    assert len(table) == len(run.items) and table.attrs["cached"] is False
    assert not is_cached(run, MapParams(method="pca"))
    assert not any(p.name.startswith("map_") for p in run.path.iterdir())


@pytest.mark.slow
def test_umap_import_is_lazy_and_numba_caches_in_the_workspace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=50)
    code = (
        "import os, sys\n"
        "import numpy as np\n"
        "from analysis.maps.embedding_map import MapParams, compute_map, umap_2d\n"
        "from analysis.runs.folder import load_run\n"
        "assert 'umap' not in sys.modules and 'numba' not in sys.modules\n"
        "compute_map(load_run(sys.argv[1]), MapParams(method='pca'))\n"
        "assert 'umap' not in sys.modules\n"
        "x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)\n"
        "umap_2d(x / np.linalg.norm(x, axis=1, keepdims=True), n_epochs=10)\n"
        "print(os.environ['NUMBA_CACHE_DIR'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(NEGSCOPE_HOME=str(home), PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code, str(run.path)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cache = Path(out.stdout.strip().splitlines()[-1])
    assert cache == (home / "numba_cache").resolve()
    names = [p.name for p in cache.rglob("*.nbi")]
    # umap-learn's own kernels, compiled without cache=True upstream, are cached there too
    assert any(n.startswith("layouts._optimize_layout_euclidean_single_epoch") for n in names), names
    assert any(n.startswith("umap_.smooth_knn_dist") for n in names), names


# --- colours ------------------------------------------------------------------------------------------


def test_item_attributes_match_a_loop(synthetic_run) -> None:
    run, _ = synthetic_run
    negs = run.negatives.copy()
    extra = pd.DataFrame({"pair_id": [0, 1], "negative_id": [int(run.pairs["positive_id"][5])] * 2, "source": "mined"})
    run = type(run)(run.path, run.manifest, run.items, run.embeddings, run.pairs, pd.concat([negs, extra]))
    attrs = item_attributes(run)
    assert len(attrs) == len(run.items)
    emb = run.embeddings.astype(np.float64)
    for item in range(len(run.items)):
        as_anchor = run.pairs.index[run.pairs["anchor_id"] == item]
        as_positive = run.pairs.index[run.pairs["positive_id"] == item]
        as_negative = run.negatives[run.negatives["negative_id"] == item]
        role = (
            "anchor"
            if len(as_anchor)
            else "positive"
            if len(as_positive)
            else "negative"
            if len(as_negative)
            else "other"
        )
        assert attrs["role"][item] == role
        sources = [s for s in ("given", "in_batch", "mined") if s in set(as_negative["source"])]
        assert attrs["negative_source"][item] == ("+".join(sources) if sources else "not a negative")
        sims = [emb[run.pairs["anchor_id"][p]] @ emb[run.pairs["positive_id"][p]] for p in [*as_anchor, *as_positive]]
        if sims:
            assert attrs["pos_sim"][item] == pytest.approx(np.mean(sims), abs=1e-5)
        else:
            assert np.isnan(attrs["pos_sim"][item])
        assert attrs["n_pairs"][item] == len(sims)
    assert attrs["negative_source"][int(run.pairs["positive_id"][5])].endswith("mined")


def test_review_status_reads_the_latest_decisions(synthetic_run) -> None:
    run, _ = synthetic_run
    store = ReviewStore(Path(os.environ["NEGSCOPE_HOME"]) / "reviews.sqlite")
    key = run.items["key"].tolist()
    h = run.dataset_hash
    store.record_many(
        [
            Decision(h, "negative", key[0], key[210], "false_negative", "ann"),
            Decision(h, "negative", key[1], key[211], "negative", "ann"),
            Decision(h, "negative", key[1], key[212], "false_negative", "ann"),
            Decision(h, "negative", key[1], key[212], "negative", "bob"),  # the later decision wins
            Decision(h, "pair", key[3], key[203], "mismatched", "ann"),
            Decision(h, "label", key[4], "", "relabel", "ann", label="7"),
            Decision(h, "negative", key[2], key[203], "negative", "ann"),  # 203 is also a mismatched positive
            Decision("another-dataset", "negative", key[0], key[220], "false_negative", "ann"),
        ]
    )
    status = review_status(run, store.latest(h))
    assert status[210] == "false negative"
    assert status[211] == "confirmed negative"
    assert status[212] == "confirmed negative"
    assert status[203] == "mismatched pair"  # the more telling of its two statuses
    assert status[4] == "relabelled"
    assert status[220] == "undecided" and status[0] == "undecided"
    assert set(status) <= set(REVIEW_STATUSES)
    assert (review_status(run, store.latest("nothing")) == "undecided").all()


def test_per_item_scores_match_a_loop() -> None:
    rng = np.random.default_rng(10)
    table = pd.DataFrame(
        {
            "candidate_id": rng.integers(0, 30, 200),
            "score": rng.random(200),
            "flagged": rng.random(200) > 0.8,
        }
    )
    table.loc[3, "score"] = np.nan
    score, flagged = per_item_scores(table, 40, id_column="candidate_id")
    for item in range(40):
        rows = table[table["candidate_id"] == item]
        finite = rows["score"].dropna()
        if len(finite):
            assert score[item] == pytest.approx(finite.max())
        else:
            assert np.isnan(score[item])
        assert flagged[item] == bool(rows["flagged"].any())
    empty = per_item_scores(table.iloc[:0], 5, id_column="candidate_id")
    assert np.isnan(empty[0]).all() and not empty[1].any()


# --- overlays -------------------------------------------------------------------------------------------


def test_pair_lines_join_anchor_and_positive(synthetic_run) -> None:
    run, _ = synthetic_run
    coords = np.random.default_rng(11).normal(size=(len(run.items), 2))
    xs, ys, rows = pair_lines(run, coords, n_pairs=25, seed=2)
    assert xs.shape == ys.shape == (75,) and len(rows) == 25 == len(set(rows))
    for j, row in enumerate(rows):
        a, p = run.pairs["anchor_id"][row], run.pairs["positive_id"][row]
        assert (xs[3 * j], ys[3 * j]) == (coords[a, 0], coords[a, 1])
        assert (xs[3 * j + 1], ys[3 * j + 1]) == (coords[p, 0], coords[p, 1])
        assert np.isnan(xs[3 * j + 2]) and np.isnan(ys[3 * j + 2])
    assert len(pair_lines(run, coords, n_pairs=10_000)[2]) == len(run.pairs)
    np.testing.assert_array_equal(pair_lines(run, coords, n_pairs=25, seed=2)[2], rows)


def test_find_items_by_id_and_text(synthetic_run) -> None:
    run, _ = synthetic_run
    content = run.items["content"].astype(str)
    found = find_items(run, "CAPTION OF CLASS 3", limit=1000)
    expected = np.flatnonzero(content.str.lower().str.contains("caption of class 3", regex=False))
    np.testing.assert_array_equal(found, expected)
    assert find_items(run, "17")[0] == 17  # an id first, then texts containing "17"
    assert all("17" in content[i] for i in find_items(run, "17")[1:])
    assert len(find_items(run, "caption", limit=5)) == 5
    assert len(find_items(run, "   ")) == 0
    assert len(find_items(run, "[unbalanced(")) == 0  # literal text, not a regular expression


def test_item_neighbours_match_brute_force(synthetic_run) -> None:
    run, _ = synthetic_run
    emb = run.embeddings
    got = item_neighbours(emb, 12, 6)
    ref = emb.astype(np.float64) @ emb[12].astype(np.float64)
    ref[12] = -np.inf
    order = np.argsort(-ref, kind="stable")[:6]
    np.testing.assert_array_equal(got["item_id"], order)
    np.testing.assert_allclose(got["sim"], ref[order], atol=1e-5)
    assert list(got["rank"]) == [1, 2, 3, 4, 5, 6]


# --- CLI --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_parquet_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=80)
    out = tmp_path / "out" / "map.parquet"
    assert main(["map", str(run.path), "--method", "umap", "--epochs", "30", "--out", str(out), "--quiet"]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == ["item_id", "x", "y"]
    np.testing.assert_array_equal(table["item_id"], np.arange(len(run.items)))
    assert "computed" in capsys.readouterr().out
    # the second call reads the run folder's cache and writes the same map
    assert main(["map", str(run.path), "--method", "umap", "--epochs", "30", "--out", str(tmp_path / "m.csv")]) == 0
    captured = capsys.readouterr()
    assert "cache" in captured.out
    again = pd.read_csv(tmp_path / "m.csv")
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), table[["x", "y"]].to_numpy(), rtol=1e-6)
    assert main(["map", str(run.path), "--method", "pca", "--out", str(tmp_path / "p.parquet")]) == 0
    np.testing.assert_allclose(
        pd.read_parquet(tmp_path / "p.parquet")[["x", "y"]].to_numpy(), pca_2d(run.embeddings), rtol=1e-5, atol=1e-6
    )


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", str(tmp_path / "missing"), "--out", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=40)
    assert main(["map", str(run.path), "--n-neighbors", "1", "--out", str(tmp_path / "m.parquet")]) == 2
    assert "n_neighbors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["map", str(run.path), "--method", "tsne", "--out", str(tmp_path / "m.parquet")])
    loaded = load_run(run.path)
    assert len(loaded.items) == 80
