"""A large run's UMAP: fitted on a seeded sample, every other item placed by its neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import NegScopeError
from analysis.maps.embedding_map import (
    MAX_UMAP_FIT,
    MapParams,
    fit_note,
    fit_sample,
    place_by_neighbours,
    trustworthiness,
    umap_2d,
)
from analysis.search.exact import knn_graph
from tests.synthetic import clustered_unit_vectors


def test_placement_is_the_weighted_mean_of_the_nearest_placed_neighbours() -> None:
    coords = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 8.0], [9.0, 9.0], [9.0, 9.0]])
    placed = np.array([True, True, True, False, False])
    rows = np.array(
        [
            [1, 2, -1],
            [0, 2, -1],
            [0, 1, -1],
            [4, 0, 1],  # item 4 is not placed yet in round one: item 3 uses items 0 and 1
            [3, -1, -1],  # only item 3, placed in round one: item 4 follows in round two
        ]
    )
    sims = np.array([[0.9, 0.1, 0], [0.9, 0.1, 0], [0.5, 0.4, 0], [0.99, 0.75, 0.25], [0.8, 0, 0]])
    out = place_by_neighbours(coords, placed, rows, sims, per_item=5)
    np.testing.assert_allclose(out[:3], coords[:3])
    want3 = (0.75 * coords[0] + 0.25 * coords[1]) / 1.0
    np.testing.assert_allclose(out[3], want3, rtol=1e-6)
    np.testing.assert_allclose(out[4], want3, rtol=1e-6)
    # at most per_item placed neighbours count, nearest first
    one = place_by_neighbours(coords, placed, rows, sims, per_item=1)
    np.testing.assert_allclose(one[3], coords[0])
    with pytest.raises(NegScopeError):
        place_by_neighbours(coords, np.zeros(5, dtype=bool), rows, sims)


def test_unreachable_items_go_to_the_centre() -> None:
    coords = np.array([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0]])
    out = place_by_neighbours(coords, np.array([True, True, False]), np.array([[1], [0], [-1]]), np.ones((3, 1)))
    np.testing.assert_allclose(out[2], [1.0, 1.0])


def test_notes_and_counts() -> None:
    assert fit_note(100, 100) == ""
    assert "50,000 of the 200,000 items" in fit_note(50_000, 200_000)
    assert fit_sample(200_000, MapParams()) == MAX_UMAP_FIT and fit_sample(10, MapParams()) == 10
    assert fit_sample(200_000, MapParams(method="pca")) == 200_000


@pytest.mark.slow
def test_a_map_fitted_on_a_sample_keeps_the_neighbourhoods() -> None:
    x = clustered_unit_vectors(np.random.default_rng(0), 3000, 24, n_clusters=12, spread=0.35)
    sims, ids = knn_graph(x, 15)
    full = umap_2d(x, seed=0, max_fit=None, neighbours=(ids, sims))
    sampled = umap_2d(x, seed=0, max_fit=1000, neighbours=(ids, sims))
    assert sampled.shape == (3000, 2) and np.isfinite(sampled).all()
    t_full = trustworthiness(x, full, k=10)
    t_sampled = trustworthiness(x, sampled, k=10)
    assert t_sampled >= t_full - 0.05 and t_sampled > 0.85
    # seeded: the same map again
    np.testing.assert_array_equal(sampled, umap_2d(x, seed=0, max_fit=1000, neighbours=(ids, sims)))


def test_the_sample_graph_finds_the_samples_nearest_items() -> None:
    from analysis.maps.embedding_map import sample_graph

    rng = np.random.default_rng(1)
    x = clustered_unit_vectors(rng, 6000, 32, n_clusters=40, spread=0.5)
    fit = np.sort(rng.choice(6000, 1500, replace=False))
    got_rows, got_sims = sample_graph(x, fit, 14)
    assert got_rows.shape == (1500, 14) and (got_rows != np.arange(1500)[:, None]).all()
    # float64 reference: each sampled item's 14 nearest other sampled items
    s64 = x[fit].astype(np.float64) @ x[fit].astype(np.float64).T
    np.fill_diagonal(s64, -np.inf)
    want = np.sort(s64, axis=1)[:, ::-1][:, :14]
    np.testing.assert_allclose(got_sims, want, rtol=0, atol=1e-5)
    # every kept similarity is the inner product of the item and the neighbour named, nearest first
    np.testing.assert_allclose(got_sims, s64[np.arange(1500)[:, None], got_rows], rtol=0, atol=1e-5)
    assert (np.diff(got_sims, axis=1) <= 1e-6).all()


@pytest.mark.slow
def test_the_sample_graph_through_ivf_keeps_its_measured_recall() -> None:
    """Above the exact budget the sample's graph comes from IVF, tuned to recall@10 >= 0.95: checked here."""
    from analysis.maps.embedding_map import sample_graph

    rng = np.random.default_rng(2)
    x = clustered_unit_vectors(rng, 12000, 32, n_clusters=80, spread=0.4)
    fit = np.sort(rng.choice(12000, 6000, replace=False))
    got_rows, got_sims = sample_graph(x, fit, 10, kind="ivf")
    assert (got_rows != np.arange(6000)[:, None]).all()
    s64 = x[fit].astype(np.float64) @ x[fit].astype(np.float64).T
    np.fill_diagonal(s64, -np.inf)
    want = np.argsort(-s64, axis=1, kind="stable")[:, :10]
    found = np.mean([len(np.intersect1d(g[g >= 0], w)) / 10 for g, w in zip(got_rows, want, strict=True)])
    assert found >= 0.93  # the index's own recall target is 0.95, measured on 500 sampled queries
