"""The check of estimated retrieval ranks against exact ones on a sample, and its error bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from analysis.metrics.retrieval import directional_ranks, mrr_at_k, recall_at_k
from analysis.search.exact import SharedExclusions, target_ranks
from analysis.search.ranks import check_ranks, error_bound


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _problem(seed: int, n_queries: int = 3000, n_corpus: int = 2000, dim: int = 16):
    rng = np.random.default_rng(seed)
    corpus = _unit(rng.normal(size=(n_corpus, dim)))
    targets = rng.integers(0, n_corpus, n_queries)
    queries = _unit(corpus[targets] + 0.6 * rng.normal(size=(n_queries, dim)))
    # each query excludes one other corpus row (as an anchor's other known positives do)
    excl = SharedExclusions.from_members(np.arange(n_queries), np.arange(n_queries), (targets + 1) % n_corpus)
    exact = target_ranks(queries, corpus, targets, exclude=excl)
    return queries, corpus, targets, excl, exact


def test_error_bound_is_the_share_itself_when_the_sample_is_everything() -> None:
    assert error_bound(7, 500, population=500) == pytest.approx(7 / 500)
    assert error_bound(0, 500, population=500) == 0.0
    # below the whole: Clopper-Pearson's upper end, two-sided 95% (compared with scipy's exact binomial test)
    for differ, n in ((0, 800), (3, 800), (40, 1000)):
        ci = binomtest(differ, n).proportion_ci(confidence_level=0.95, method="exact")
        assert error_bound(differ, n, population=10 * n) == pytest.approx(ci.high, rel=1e-9)
    assert error_bound(0, 800, population=100_000) == pytest.approx(1 - 0.025 ** (1 / 800), rel=1e-9)
    assert error_bound(0, 0) == 1.0 and error_bound(5, 5, population=10) == 1.0


def test_exact_ranks_pass_the_check_and_a_full_sample_counts_every_difference() -> None:
    queries, corpus, targets, excl, exact = _problem(0)
    same = check_ranks(queries, corpus, targets, exact, exclude=excl, sample=500)
    assert same["checked"] == 500 and same["differ"] == 0 and 0 < same["max_error"] < 0.01
    wrong = exact.copy()
    wrong[::10] += 1  # a tenth of the ranks off by one: differs within the top 10 where the rank is <= 10
    expected = np.minimum(wrong, 11) != np.minimum(exact, 11)
    full = check_ranks(queries, corpus, targets, wrong, exclude=excl, sample=len(exact))
    assert full["checked"] == len(exact) and full["differ"] == int(expected.sum())
    assert full["max_error"] == pytest.approx(expected.mean())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_bound_covers_the_metrics_error_over_all_queries(seed: int) -> None:
    queries, corpus, targets, excl, exact = _problem(seed)
    rng = np.random.default_rng(100 + seed)
    est = exact.copy()
    off = rng.random(len(est)) < 0.03  # 3% of the ranks wrong (as a missed neighbour makes them)
    est[off] = np.maximum(1, est[off] + rng.choice([-2, -1, 1, 2], size=int(off.sum())))
    checked = check_ranks(queries, corpus, targets, est, exclude=excl, sample=600, seed=seed)
    share = float(np.mean(np.minimum(est, 11) != np.minimum(exact, 11)))
    assert share <= checked["max_error"] < 0.1
    for k in (1, 5, 10):
        assert abs(recall_at_k(est, k) - recall_at_k(exact, k)) <= checked["max_error"]
    assert abs(mrr_at_k(est) - mrr_at_k(exact)) <= checked["max_error"]


def test_estimated_ranks_record_their_check_and_per_pair_kinds() -> None:
    rng = np.random.default_rng(5)
    centres = _unit(rng.normal(size=(60, 16)))
    n = 6000
    emb = _unit(centres[rng.integers(0, 60, n)] + 0.15 * rng.normal(size=(n, 16)))
    modality = np.array(["text"] * n, dtype=object)
    queries, targets = np.arange(3000), 3000 + np.arange(3000)
    info: dict = {}
    est = directional_ranks(emb, modality, queries, targets, search="ivf", info=info)
    exact = directional_ranks(emb, modality, queries, targets, search="exact")
    assert info["rank_kind"] == "estimated" and set(info["pair_kinds"]) <= {"counted", "estimated"}
    assert np.all(est[info["pair_kinds"] == "estimated"] > 32)
    check = info["check"]
    assert check["checked"] == 800 and "differ within the top 10" in info["search"]
    for k in (1, 5, 10):
        assert abs(recall_at_k(est, k) - recall_at_k(exact, k)) <= max(check["max_error"], 0.01)
    exact_info: dict = {}
    directional_ranks(emb, modality, queries, targets, search="exact", info=exact_info)
    assert "check" not in exact_info and set(exact_info["pair_kinds"]) == {"exact"}


def test_sample_ranks_equal_the_exact_kernel() -> None:
    from analysis.search.ranks import sample_target_ranks

    queries, corpus, targets, excl, exact = _problem(4, n_queries=700)
    np.testing.assert_array_equal(sample_target_ranks(queries, corpus, targets, exclude=excl, block_size=100), exact)
    plain = target_ranks(queries, corpus, targets)
    np.testing.assert_array_equal(sample_target_ranks(queries, corpus, targets), plain)
