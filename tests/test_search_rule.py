"""The one exact-vs-approximate rule (from queries x corpus x dims) and the recall an approximate search reports."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import NegScopeError
from analysis.search.index import build_index, recall_at_k
from analysis.search.rule import (
    EXACT_BUDGET,
    MIN_APPROX_CORPUS,
    MIN_APPROX_QUERIES,
    choose_kind,
    exact_work,
    resolve_kind,
)
from tests.synthetic import clustered_unit_vectors


def _clustered(n: int, d: int, *, seed: int) -> np.ndarray:
    return clustered_unit_vectors(np.random.default_rng(seed), n, d, n_clusters=40, spread=0.3)


@pytest.fixture(autouse=True)
def _ample_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule's memory branch (IVF-PQ beyond memory) is tested in test_ivfpq.py with explicit figures; here
    the machine's free memory must not change the answers, so it is fixed at 64 GiB."""
    monkeypatch.setattr("analysis.search.rule.available_memory", lambda: 64.0 * 2**30)


def test_small_work_is_exact_and_large_work_approximate() -> None:
    assert exact_work(1_000, 2_000, 64) == 1.28e8
    assert choose_kind(1_797, 3_600, 64) == "exact"  # the sample: far below the budget
    assert choose_kind(100_000, 200_000, 384) == "ivf"  # 100k pairs: 7.7e12 multiply-adds
    # the budget itself is the border
    q, m = 10_000, 10_000
    d = int(EXACT_BUDGET // (q * m))
    assert choose_kind(q, m, d) == "exact" and choose_kind(q, m, d + 1) == "ivf"
    assert choose_kind(q, m, 64, budget=0) == "ivf" and choose_kind(q, m, 64, budget=float("inf")) == "exact"


def test_the_rule_depends_on_the_queries_not_only_the_corpus() -> None:
    """A big corpus searched by a few queries stays exact; the same corpus searched by many does not."""
    assert choose_kind(MIN_APPROX_QUERIES, 1_000_000, 384) == "ivf"
    assert choose_kind(MIN_APPROX_QUERIES - 1, 1_000_000, 384) == "exact"  # the recall sample would dominate
    assert choose_kind(10**7, MIN_APPROX_CORPUS - 1, 384) == "exact"  # too few rows for IVF cells to pay


def test_resolve_kind_keeps_forced_kinds_and_rejects_unknown_ones() -> None:
    assert resolve_kind("exact", 10**6, 10**6, 384) == "exact"
    assert resolve_kind("hnsw", 10, 10, 4) == "hnsw"
    assert resolve_kind("auto", 10, 10, 4) == "exact"
    with pytest.raises(NegScopeError, match="unknown neighbour search"):
        resolve_kind("annoy", 10, 10, 4)
    with pytest.raises(NegScopeError):
        choose_kind(-1, 10, 4)


def test_build_index_follows_the_rule_from_the_number_of_queries() -> None:
    x = _clustered(6000, 16, seed=1)
    # 6000 x 6000 x 16 = 5.8e8 multiply-adds: exact under the default budget
    assert build_index(x).kind == "exact"
    # the same corpus with a budget below the work: approximate, with its recall measured
    approx = build_index(x, n_queries=6000, exact_budget=1e8, seed=0)
    assert approx.kind == "ivf" and approx.params["nprobe"] >= 1
    # few queries: exact whatever the budget
    assert build_index(x, n_queries=100, exact_budget=0).kind == "exact"


def test_approximate_results_report_their_measured_recall() -> None:
    x = _clustered(8000, 24, seed=2)
    approx = build_index(x, kind="auto", exact_budget=0, target_recall=0.95, seed=0)
    assert approx.kind == "ivf"
    assert approx.recall is not None and approx.recall >= 0.95
    assert f"measured recall@10 = {approx.recall:.3f}" in approx.describe()
    # the reported recall is what an exact search on the same sample gives (re-measured here independently)
    rng = np.random.default_rng(1)
    sample = x[rng.choice(len(x), size=500, replace=False)]
    ref = np.argsort(-(sample.astype(np.float64) @ x.astype(np.float64).T), axis=1, kind="stable")[:, :10]
    _, got = approx.search(sample, 10)
    assert recall_at_k(got, ref) == pytest.approx(approx.recall, abs=0.01)
    exact = build_index(x, kind="exact")
    assert exact.recall == 1.0 and "exact" in exact.describe()


def test_false_negative_mining_reports_the_search_it_ran(tmp_path) -> None:
    from analysis.detectors.false_negatives import Settings, find_false_negatives
    from tests.synthetic import make_synthetic_run

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, k=2)
    exact = find_false_negatives(run, settings=Settings(mine_k=3, rank_depth=20, mutual_k=3, n_clusters=4))
    assert "exact search" in exact.attrs["index"]  # 120 anchors: far below the budget
    ivf = find_false_negatives(
        run, settings=Settings(mine_k=3, rank_depth=20, mutual_k=3, n_clusters=4, index_kind="ivf")
    )
    assert "IVF" in ivf.attrs["index"] and "measured recall@10 = " in ivf.attrs["index"]


def test_ivf_cells_grow_with_the_corpus_and_keep_enough_rows_per_cell() -> None:
    from analysis.search.index import IVF_ROWS_PER_CELL, default_nlist

    assert default_nlist(200_000) == 1024 and default_nlist(100_000) == 1024
    assert default_nlist(1_000_000) == 2048 and default_nlist(10_000) == 128 and default_nlist(4096) == 64
    assert default_nlist(10) == 1
    for n in (100, 1_000, 4_096, 50_000, 300_000, 5_000_000):
        nlist = default_nlist(n)
        assert nlist & (nlist - 1) == 0  # a power of two
        assert n / nlist >= IVF_ROWS_PER_CELL and nlist <= 4 * np.sqrt(n)


def test_many_small_clusters_need_few_probes() -> None:
    """Data made of many small clusters (like the 100k benchmark run's ~50 items per cluster): the cells are
    small enough that probing 1-4 of them finds >= 95% of the true top 10, so IVF beats exact search."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(400, 32))
    x = centres[rng.integers(0, 400, 20_000)] + 0.25 * rng.normal(size=(20_000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    auto = build_index(x, kind="auto", n_queries=len(x), exact_budget=0, seed=0)
    assert auto.kind == "ivf" and auto.params["nlist"] == 256
    assert auto.params["nprobe"] <= 4 and auto.recall >= 0.95
    fresh = x[rng.choice(len(x), 300, replace=False)] + 0.01 * rng.normal(size=(300, 32)).astype(np.float32)
    ref = np.argsort(-(fresh.astype(np.float64) @ x.astype(np.float64).T), axis=1, kind="stable")[:, :10]
    _, got = auto.search(fresh, 10)
    assert recall_at_k(got, ref) >= 0.93
