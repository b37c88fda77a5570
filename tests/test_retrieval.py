"""Exact retrieval ranks and the metrics over them, against slow float64 references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.metrics.retrieval import (
    directional_ranks,
    has_reverse,
    mrr_at_k,
    recall_at_k,
    recall_curve,
    retrieval_metrics,
    retrieval_ranks,
)
from analysis.search.exact import SharedExclusions, rank_block_size, target_ranks
from tests.synthetic import make_random_run, make_synthetic_run


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_target_ranks(queries, corpus, targets, excluded: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Float64 loop: (rank assuming exact arithmetic, number of competitors within 1e-5 of the target)."""
    q64, c64 = queries.astype(np.float64), corpus.astype(np.float64)
    ranks, near = [], []
    for i in range(len(q64)):
        s = c64 @ q64[i]
        t = s[targets[i]]
        competitors = [j for j in range(len(c64)) if j != targets[i] and j not in excluded[i]]
        ranks.append(1 + sum(s[j] > t for j in competitors))
        near.append(sum(abs(s[j] - t) < 1e-5 for j in competitors))
    return np.array(ranks), np.array(near)


def reference_pair_ranks(run, *, reverse: bool) -> np.ndarray:
    """Float64 loop over pairs following the documented definition."""
    emb = run.embeddings.astype(np.float64)
    modality = run.items["modality"].to_numpy()
    anchors = run.pairs["anchor_id"].to_numpy()
    positives = run.pairs["positive_id"].to_numpy()
    queries, targets = (positives, anchors) if reverse else (anchors, positives)
    out = []
    for q, t in zip(queries, targets, strict=True):
        own = {int(x) for x in targets[queries == q]} | {int(q)}
        score_t = emb[q] @ emb[t]
        count = 0
        for j in np.flatnonzero(modality == modality[t]):
            if j != t and j not in own and emb[q] @ emb[j] > score_t:
                count += 1
        out.append(count + 1)
    return np.array(out)


@pytest.mark.parametrize("block_size", [1, 7, None])
def test_target_ranks_match_reference_with_exclusions(block_size):
    rng = np.random.default_rng(3)
    corpus = _unit(rng.normal(size=(150, 12)))
    queries = _unit(rng.normal(size=(40, 12)))
    targets = rng.integers(0, 150, size=40)
    group = rng.integers(0, 9, size=40)
    member_group = rng.integers(0, 9, size=60)
    member_row = rng.integers(-1, 150, size=60)  # -1 = not in the corpus, ignored
    exclude = SharedExclusions.from_members(group, member_group, member_row)
    excluded = [
        {int(r) for g, r in zip(member_group, member_row, strict=True) if g == group[i] and r >= 0} for i in range(40)
    ]
    got = target_ranks(queries, corpus, targets, exclude=exclude, block_size=block_size)
    want, near = reference_target_ranks(queries, corpus, targets, excluded)
    assert (near == 0).all(), "random data should have no near-ties"
    np.testing.assert_array_equal(got, want)


def test_target_ranks_exact_ties_count_for_the_target():
    # entries of +-0.5 on four coordinates: dot products are exact in float32 and often tied
    rng = np.random.default_rng(5)
    corpus = np.zeros((200, 6), dtype=np.float32)
    for i in range(200):
        corpus[i, rng.choice(6, size=4, replace=False)] = rng.choice([-0.5, 0.5], size=4)
    queries = corpus[rng.integers(0, 200, size=50)]
    targets = rng.integers(0, 200, size=50)
    got = target_ranks(queries, corpus, targets, block_size=16)
    q64, c64 = queries.astype(np.float64), corpus.astype(np.float64)
    ties = 0
    for i in range(50):
        s = c64 @ q64[i]
        assert got[i] == 1 + np.sum(s > s[targets[i]])
        ties += np.sum(s == s[targets[i]]) - 1
    assert ties > 50, "the test data must actually contain ties"


def test_target_ranks_with_target_excluded_and_duplicate_rows():
    rng = np.random.default_rng(1)
    corpus = _unit(rng.normal(size=(30, 5)))
    corpus[10] = corpus[3]  # a duplicate of the target scores exactly the same: does not beat it
    queries = _unit(rng.normal(size=(1, 5)))
    exclude = SharedExclusions.from_members(np.array([0]), np.array([0, 0, 0]), np.array([3, 3, 20]))
    got = target_ranks(queries, corpus, np.array([3]), exclude=exclude)
    s = corpus.astype(np.float64) @ queries[0].astype(np.float64)
    want = 1 + sum(s[j] > s[3] for j in range(30) if j not in (3, 20))
    assert got[0] == want


def test_target_ranks_rejects_bad_targets():
    corpus = _unit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError):
        target_ranks(corpus[:2], corpus, np.array([0, 5]))
    with pytest.raises(ValueError):
        target_ranks(corpus[:2], corpus, np.array([0]))


def test_block_size_bounds_memory():
    # 100k x 384 corpus: a block of scores + mask stays within the budget, and blocks are not degenerate
    bs = rank_block_size(100_000, max_block_bytes=512 * 2**20)
    assert 5 * bs * 100_000 <= 512 * 2**20
    assert bs >= 512
    assert rank_block_size(10**12) == 1


def test_progress_reaches_one_and_is_monotone():
    rng = np.random.default_rng(0)
    corpus = _unit(rng.normal(size=(50, 4)))
    seen: list[float] = []
    target_ranks(corpus[:20], corpus, np.arange(20), block_size=6, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4


@pytest.mark.parametrize("two_modalities", [True, False])
@pytest.mark.parametrize("quantised", [False, True])
def test_pair_ranks_match_reference(tmp_path: Path, two_modalities: bool, quantised: bool):
    run = make_random_run(
        tmp_path / "run", n_items=90, dim=6, n_pairs=120, two_modalities=two_modalities, quantised=quantised
    )
    anchors = run.pairs["anchor_id"].to_numpy()
    assert len(np.unique(anchors)) < len(anchors), "the test needs anchors shared by several pairs"
    for reverse in (False, True):
        got = retrieval_ranks(run, reverse=reverse, max_block_bytes=4000)
        np.testing.assert_array_equal(got, reference_pair_ranks(run, reverse=reverse))


def test_directional_ranks_mixed_target_modalities():
    rng = np.random.default_rng(2)
    emb = _unit(rng.normal(size=(40, 5)))
    modality = np.array(["image"] * 20 + ["text"] * 20, dtype=object)
    queries = rng.integers(0, 40, size=25)
    targets = rng.integers(0, 40, size=25)
    got = directional_ranks(emb, modality, queries, targets)
    e = emb.astype(np.float64)
    for i, (q, t) in enumerate(zip(queries, targets, strict=True)):
        own = set(targets[queries == q].tolist()) | {int(q)}
        pool = [j for j in np.flatnonzero(modality == modality[t]) if j != t and j not in own]
        assert got[i] == 1 + sum(e[q] @ e[j] > e[q] @ e[t] for j in pool)


def test_has_reverse(tmp_path: Path):
    assert has_reverse(make_random_run(tmp_path / "a", two_modalities=True))
    assert not has_reverse(make_random_run(tmp_path / "b", two_modalities=False))


def test_metrics_match_reference():
    rng = np.random.default_rng(9)
    ranks = rng.integers(1, 30, size=500)
    for k in (1, 5, 10, 17):
        assert recall_at_k(ranks, k) == pytest.approx(sum(r <= k for r in ranks) / 500)
        assert mrr_at_k(ranks, k) == pytest.approx(sum(1.0 / r if r <= k else 0.0 for r in ranks) / 500)
    metrics = retrieval_metrics(ranks)
    assert set(metrics) == {"recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10"}
    assert metrics["mrr_at_10"] == pytest.approx(mrr_at_k(ranks, 10))
    curve = recall_curve(ranks, max_k=40)
    np.testing.assert_allclose(curve, [recall_at_k(ranks, k) for k in range(1, 41)])
    assert np.isnan(recall_at_k(np.array([], dtype=int), 1)) and np.isnan(mrr_at_k(np.array([], dtype=int)))


def test_planted_mismatches_rank_worse(tmp_path: Path):
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=300, mismatch_rate=0.1, noise=0.2, seed=4)
    ranks = retrieval_ranks(run)
    assert truth.mismatched.sum() >= 10
    assert np.median(ranks[truth.mismatched]) > 3 * np.median(ranks[~truth.mismatched])
