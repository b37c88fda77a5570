"""Exact faiss kNN against a float64 brute force."""

from __future__ import annotations

import numpy as np

from analysis.search.exact import flat_index, knn


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(300, 12)).astype(np.float32)
    queries = rng.normal(size=(57, 12)).astype(np.float32)
    seen = []
    sims, ids = knn(queries, corpus, 5, block_size=10, progress=seen.append)
    ref = queries.astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-ref, axis=1)[:, :5]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(sims, np.take_along_axis(ref, order, axis=1), rtol=1e-5, atol=1e-5)
    assert seen[-1] == 1.0 and len(seen) == 6
    sims2, ids2 = knn(queries, flat_index(corpus), 500)
    assert ids2.shape == (57, 300)  # k is clipped to the corpus size
    np.testing.assert_array_equal(ids2[:, :5], ids)
