"""False-negative candidates: evidence against slow float64 references, the score formula, planted truth, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.detectors.false_negatives import (
    DETECTOR_COLUMNS,
    Settings,
    Weights,
    find_false_negatives,
    flag_by,
    margin_flags,
    precision_at_k,
    quality_on_truth,
    retrieval_before_after,
    robust_z,
)
from analysis.errors import NegScopeError
from analysis.runs.folder import Run
from analysis.search.index import build_index, recall_at_k
from tests.synthetic import make_synthetic_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    """A two-modality synthetic run (150 pairs, 4 given negatives each) with its result."""
    run, truth = make_synthetic_run(tmp_path_factory.mktemp("fn") / "run", n_pairs=150, k=4, noise=0.4, seed=2)
    settings = Settings(mine_k=5, rank_depth=30, mutual_k=5, n_clusters=8)
    return run, truth, settings, find_false_negatives(run, settings=settings)


# --- references ----------------------------------------------------------------------------------------


def _ref_robust_z(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    ref = np.array([v for v in ref if np.isfinite(v)], dtype=np.float64)
    med = sorted(ref)[len(ref) // 2] if len(ref) % 2 else 0.5 * sum(sorted(ref)[len(ref) // 2 - 1 : len(ref) // 2 + 1])
    dev = sorted(abs(v - med) for v in ref)
    mad = dev[len(dev) // 2] if len(dev) % 2 else 0.5 * (dev[len(dev) // 2 - 1] + dev[len(dev) // 2])
    scale = 1.4826 * mad
    if scale <= 1e-12:
        scale = float(np.std(ref)) or 1.0
    return np.array([np.nan if not np.isfinite(v) else min(4.0, max(-4.0, (v - med) / scale)) for v in x])


def _ref_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    order = sorted(range(len(y)), key=lambda i: -s[i])
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if y[i]:
            hits += 1
            total += hits / rank
    return total / max(int(np.sum(y)), 1)


# --- pieces --------------------------------------------------------------------------------------------


def test_robust_z_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    for n in (7, 8, 101):
        ref = rng.normal(2.0, 3.0, size=n)
        x = np.concatenate([rng.normal(0, 10, size=50), [np.nan]])
        np.testing.assert_allclose(robust_z(x, ref), _ref_robust_z(x, ref), rtol=1e-12, equal_nan=True)
    # constant reference: falls back to std, then 1
    np.testing.assert_allclose(robust_z(np.array([3.0]), np.ones(5)), [2.0])


def test_margins_are_sentence_transformers_compatible_and_sign_safe() -> None:
    rng = np.random.default_rng(1)
    pos = rng.uniform(-1, 1, 500)
    neg = rng.uniform(-1, 1, 500)
    for m in (0.0, 0.05, 0.3):
        ref_abs = [n > p - m for p, n in zip(pos, neg, strict=True)]
        ref_rel = [n > p - abs(p) * m for p, n in zip(pos, neg, strict=True)]
        np.testing.assert_array_equal(margin_flags(pos, neg, absolute=m), ref_abs)
        np.testing.assert_array_equal(margin_flags(pos, neg, relative=m), ref_rel)
    # sign safety: with pos_sim < 0 the relative threshold stays below the positive (pos*(1-m) would not)
    assert margin_flags(np.array([-0.5]), np.array([-0.52]), relative=0.1)[0]  # -0.52 > -0.55: too close
    assert not margin_flags(np.array([-0.5]), np.array([-0.6]), relative=0.1)[0]
    assert not margin_flags(np.array([0.5]), np.array([0.3]), absolute=0.1, relative=0.1)[0]


def test_quality_metrics_match_slow_references() -> None:
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.2
    s = rng.normal(size=300) + y
    from sklearn.metrics import average_precision_score

    assert average_precision_score(y, s) == pytest.approx(_ref_average_precision(y, s), abs=1e-12)
    top = np.argsort(-s)[:100]
    assert precision_at_k(y, s, 100) == pytest.approx(y[top].mean())


# --- evidence against slow references ----------------------------------------------------------------------


def test_result_shape_and_order(small) -> None:
    run, _, settings, df = small
    assert list(df.columns[: len(DETECTOR_COLUMNS)]) == list(DETECTOR_COLUMNS)
    assert df["score"].is_monotonic_decreasing
    assert not df.duplicated(["pair_id", "candidate_id"]).any()
    assert df["score"].between(0, 1).all()
    assert (df["flagged"] == (df["score"] >= 0.5)).all()
    given = run.negatives[run.negatives["source"] == "given"]
    listed = df[df["source"] == "given"]
    assert len(listed) == len(given.drop_duplicates(["pair_id", "negative_id"]))
    assert df["reason"].str.startswith("neg_sim ").all()


def test_similarities_rank_and_anchor_side_match_references(small) -> None:
    run, _, settings, df = small
    e = run.embeddings.astype(np.float64)
    modality = run.items["modality"].to_numpy()
    pairs = run.pairs
    positives_of = pairs.groupby("anchor_id")["positive_id"].agg(set).to_dict()
    depth = max(settings.rank_depth, settings.mine_k, settings.mutual_k)
    sample = df.sample(200, random_state=0) if len(df) > 200 else df
    for r in sample.itertuples(index=False):
        a, p, c = r.anchor_id, r.positive_id, r.candidate_id
        assert r.pos_sim == pytest.approx(e[a] @ e[p], abs=1e-5)
        assert r.neg_sim == pytest.approx(e[a] @ e[c], abs=1e-5)
        assert r.sim_diff == pytest.approx(e[a] @ e[c] - e[a] @ e[p], abs=1e-5)
        assert r.sim_to_positive == pytest.approx(e[c] @ e[p], abs=1e-5)
        # rank among the anchor's neighbours of c's modality, the anchor and its positives left out
        excluded = positives_of[a] | {a}
        if c in excluded:
            expected = depth + 1
        else:
            corpus = [i for i in np.flatnonzero(modality == modality[c]) if i not in excluded]
            expected = 1 + sum(e[a] @ e[i] > e[a] @ e[c] for i in corpus)
            expected = expected if expected <= depth else depth + 1
        assert r.rank == expected
        # anchor side: a · normalised mean of the anchors whose positive is c (this pair left out)
        others = [
            int(x.anchor_id) for x in pairs.itertuples(index=False) if x.positive_id == c and x.pair_id != r.pair_id
        ]
        if others:
            v = e[others].sum(axis=0)
            assert r.anchor_side_sim == pytest.approx(e[a] @ (v / np.linalg.norm(v)), abs=1e-5)
        else:
            assert np.isnan(r.anchor_side_sim)


def test_mutual_labels_and_clusters_match_references(small) -> None:
    run, _, settings, df = small
    e = run.embeddings.astype(np.float64)
    anchors = np.unique(run.pairs["anchor_id"].to_numpy())
    labels = run.items["label"].astype(str).to_numpy()
    k = settings.mutual_k
    for r in df.sample(150, random_state=1).itertuples(index=False):
        a, c = r.anchor_id, r.candidate_id
        others = [x for x in anchors if x != c]
        top = sorted(others, key=lambda x: -(e[c] @ e[x]))[:k]
        expected = float(r.rank <= k and a in top)
        assert r.mutual == expected
        assert r.label_agree == float(labels[a] == labels[c])
        assert r.same_cluster in (0.0, 1.0)


def test_score_is_the_documented_formula(small) -> None:
    run, _, settings, df = small
    w = settings.weights
    ref_rows = df["source"].isin(["given", "in_batch"]).to_numpy()

    def z(col: pd.Series) -> np.ndarray:
        x = col.to_numpy(np.float64)
        return np.nan_to_num(_ref_robust_z(x, x[ref_rows]), nan=0.0)

    logit = (
        w.bias
        + w.sim_diff * z(df["sim_diff"])
        + w.sim_to_positive * z(df["sim_to_positive"])
        + w.anchor_side * z(df["anchor_side_sim"])
        + w.rank * z(-np.log(df["rank"].astype(float)))
        + w.mutual * df["mutual"].to_numpy()
        + w.same_cluster * np.nan_to_num(df["same_cluster"].to_numpy(), nan=0.0)
        + w.label * np.nan_to_num(2 * df["label_agree"].to_numpy() - 1, nan=0.0)
    )
    np.testing.assert_allclose(df["logit"], logit, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(df["score"], 1 / (1 + np.exp(-logit)), rtol=1e-12)


def test_mined_candidates_are_the_nearest_non_positive_items(small) -> None:
    run, _, settings, df = small
    e = run.embeddings.astype(np.float64)
    modality = run.items["modality"].to_numpy()
    texts = np.flatnonzero(modality == "text")
    listed = set(zip(run.negatives["pair_id"], run.negatives["negative_id"], strict=True))
    for pair in run.pairs.sample(20, random_state=3).itertuples(index=False):
        a = pair.anchor_id
        excluded = set(run.pairs.loc[run.pairs["anchor_id"] == a, "positive_id"]) | {a}
        nearest = [i for i in sorted(texts, key=lambda i: -(e[a] @ e[i])) if i not in excluded][: settings.mine_k]
        mined = set(df.loc[(df["pair_id"] == pair.pair_id) & (df["source"] == "mined"), "candidate_id"])
        expected = {i for i in nearest if (pair.pair_id, i) not in listed}
        assert mined == expected


def test_guide_run_and_no_label_option(small) -> None:
    run, _, settings, _ = small
    guided = find_false_negatives(run, settings=settings, guide=run)
    np.testing.assert_allclose(guided["guide_diff"], guided["sim_diff"], atol=1e-5)
    plain = find_false_negatives(run, settings=Settings(**{**settings.__dict__, "use_labels": False}))
    assert plain["label_agree"].isna().all()


def test_flag_by_switches_rules(small) -> None:
    _, _, _, df = small
    np.testing.assert_array_equal(flag_by(df, method="score", value=0.9), df["score"] >= 0.9)
    np.testing.assert_array_equal(
        flag_by(df, method="relative", value=0.1),
        df["neg_sim"] > df["pos_sim"] - df["pos_sim"].abs() * 0.1,
    )


# --- planted truth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_labels", [True, False])
def test_beats_the_margin_baseline_on_synthetic_truth(tmp_path: Path, use_labels: bool) -> None:
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=600, k=6, noise=0.5, dim=24, seed=4)
    df = find_false_negatives(run, settings=Settings(use_labels=use_labels))
    q = quality_on_truth(df, truth.false_negative)
    assert q["n"] == len(truth.false_negative)
    assert q["auprc"] > q["auprc_baseline"] + 0.15, q
    assert q["precision_at_k"] > q["precision_at_k_baseline"] + 0.15, q


def test_beats_the_margin_baseline_on_the_sample(sample_run: Run) -> None:
    """The acceptance figure of the issue: AUPRC and precision@100 on the digits sample's planted truth."""
    from analysis.data.truth import negative_truth

    truth = negative_truth(sample_run)
    assert truth is not None and truth["is_false_negative"].any()
    df = find_false_negatives(sample_run)
    q = quality_on_truth(df, truth)
    assert q["n"] == len(truth)
    assert q["auprc"] > q["auprc_baseline"] + 0.1, q
    assert q["precision_at_k"] > q["precision_at_k_baseline"] + 0.1, q
    # without class labels too (the embeddings' own evidence)
    q2 = quality_on_truth(find_false_negatives(sample_run, settings=Settings(use_labels=False)), truth)
    assert q2["auprc"] > q2["auprc_baseline"] + 0.05, q2


# --- retrieval before / after -----------------------------------------------------------------------------


def _ref_retrieval(run: Run, extra: set[tuple[int, int]], k: int) -> tuple[float, float]:
    e = run.embeddings.astype(np.float64)
    modality = run.items["modality"].to_numpy()
    rel: dict[int, set[int]] = {}
    for a, p in zip(run.pairs["anchor_id"], run.pairs["positive_id"], strict=True):
        rel.setdefault(int(a), set()).add(int(p))
    for a, c in extra:
        rel.setdefault(a, set()).add(c)
    hits, rr = [], []
    for a, relevant in rel.items():
        mod = modality[next(iter(rel[a]))]
        corpus = [i for i in np.flatnonzero(modality == mod) if i != a]
        ranked = sorted(corpus, key=lambda i: -(e[a] @ e[i]))
        first = next((n for n, i in enumerate(ranked, start=1) if i in relevant), 10**9)
        hits.append(first <= k)
        rr.append(1.0 / first if first <= 10 else 0.0)
    return float(np.mean(hits)), float(np.mean(rr))


def test_retrieval_before_after_matches_a_slow_reference(small) -> None:
    run, truth, _, df = small
    fn = truth.false_negative[truth.false_negative["is_false_negative"]].head(15)
    anchor_of = run.pairs.set_index("pair_id")["anchor_id"]
    extra = pd.DataFrame({"anchor_id": anchor_of.loc[fn["pair_id"]].to_numpy(), "candidate_id": fn["negative_id"]})
    table = retrieval_before_after(run, extra).set_index("metric")
    pairs = set(zip(extra["anchor_id"].astype(int), extra["candidate_id"].astype(int), strict=True))
    for k in (1, 5, 10):
        b_hit, b_mrr = _ref_retrieval(run, set(), k)
        a_hit, a_mrr = _ref_retrieval(run, pairs, k)
        assert table.loc[f"recall_at_{k}", "before"] == pytest.approx(b_hit)
        assert table.loc[f"recall_at_{k}", "after"] == pytest.approx(a_hit)
    assert table.loc["mrr_at_10", "before"] == pytest.approx(b_mrr)
    assert table.loc["mrr_at_10", "after"] == pytest.approx(a_mrr)
    assert (table["after"] >= table["before"]).all()


# --- approximate index ------------------------------------------------------------------------------------------


def test_ann_index_recall_is_measured_and_reaches_the_target() -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(50, 32))
    x = centres[rng.integers(0, 50, 6000)] + 0.3 * rng.normal(size=(6000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    queries = x[:300] + 0.01
    exact = build_index(x, kind="auto", exact_budget=float("inf"))
    assert exact.kind == "exact" and exact.recall == 1.0
    for kind in ("ivf", "hnsw"):
        approx = build_index(x, kind=kind if kind == "hnsw" else "auto", exact_budget=0, target_recall=0.95)
        assert approx.kind == kind
        _, got = approx.search(queries, 10)
        _, ref = exact.search(queries, 10)
        measured = recall_at_k(got, ref)
        assert approx.recall >= 0.95
        assert measured >= 0.9  # on other queries than the tuning sample it stays close
        assert "recall@10" in approx.describe()


def test_recall_at_k_reference() -> None:
    approx = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[3, 2, 9], [6, 7, 8]])
    assert recall_at_k(approx, exact) == pytest.approx(2 / 6)


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_writes_the_documented_columns_sorted(small, tmp_path: Path, capsys) -> None:
    run, _, _, _ = small
    out = tmp_path / "candidates.csv"
    assert cli_main(["false-negatives", str(run.path), "--out", str(out), "--mine-k", "5"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["pair_id", "anchor_id", "candidate_id", "source", "score", "flagged", "reason"]
    assert table["score"].is_monotonic_decreasing
    assert set(table["source"]) == {"given", "mined"}
    assert "wrote" in capsys.readouterr().out
    out2 = tmp_path / "margin.csv"
    args = ["false-negatives", str(run.path), "--out", str(out2), "--margin-relative", "0.05", "--evidence"]
    assert cli_main(args) == 0
    t2 = pd.read_csv(out2)
    np.testing.assert_array_equal(t2["flagged"], t2["neg_sim"] > t2["pos_sim"] - t2["pos_sim"].abs() * 0.05)


def test_cli_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "false-negatives", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sources": ("given", "guessed")}, "candidate sources"),
        ({"sources": ()}, "candidate sources"),
        ({"mine_k": -1}, "mine_k"),
        ({"rank_depth": 0}, "rank_depth"),
        ({"mutual_k": 0}, "mutual_k"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"threshold": float("nan")}, "threshold"),
        ({"index_kind": "annoy"}, "neighbour search"),
    ],
)
def test_settings_check_their_options(options: dict, message: str) -> None:
    """The checks live in the library (the CLI and the page both build ``Settings``)."""
    with pytest.raises(NegScopeError, match=message):
        Settings(**options)


def test_settings_accept_a_list_of_sources() -> None:
    assert Settings(sources=["given", "mined"]).sources == ("given", "mined")


def test_cli_option_errors_come_from_the_library(small, capsys) -> None:
    run, _, _, _ = small
    assert cli_main(["false-negatives", str(run.path), "--mine-k", "-2"]) == 2
    assert "mine_k" in capsys.readouterr().err
    assert cli_main(["false-negatives", str(run.path), "--sources", "given,bogus"]) == 2
    assert "candidate sources" in capsys.readouterr().err


def test_weights_change_the_ranking(small) -> None:
    run, truth, settings, df = small
    only_diff = Weights(sim_to_positive=0, anchor_side=0, rank=0, mutual=0, same_cluster=0, label=0, guide=0)
    plain = find_false_negatives(run, settings=Settings(**{**settings.__dict__, "weights": only_diff}))
    # with only sim_diff weighted, the score is a non-decreasing function of the baseline neg_sim - pos_sim
    by_diff = plain.sort_values("sim_diff", ascending=False, kind="stable")
    assert np.all(np.diff(by_diff["score"].to_numpy()) <= 1e-12)
    assert not np.allclose(plain["score"].to_numpy(), df["score"].to_numpy())


def test_exact_knn_without_an_index_and_blas_blocks_restore() -> None:
    import faiss

    from analysis.search.index import blas_blocks, exact_knn

    rng = np.random.default_rng(8)
    corpus = rng.normal(size=(2000, 24)).astype(np.float32)
    queries = rng.normal(size=(40, 24)).astype(np.float32)
    sims, ids = exact_knn(queries, corpus, 7)
    ref = queries.astype(np.float64) @ corpus.astype(np.float64).T
    np.testing.assert_array_equal(ids, np.argsort(-ref, axis=1)[:, :7])
    np.testing.assert_allclose(sims, np.sort(ref, axis=1)[:, ::-1][:, :7], rtol=1e-5, atol=1e-5)
    before = faiss.cvar.distance_compute_blas_database_bs
    with blas_blocks(4096):
        assert faiss.cvar.distance_compute_blas_database_bs == 4096
    assert faiss.cvar.distance_compute_blas_database_bs == before


def test_auto_index_falls_back_to_exact_on_unclustered_data() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(8000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    auto = build_index(x, kind="auto", exact_budget=0)
    assert auto.kind == "exact" and "no faster than exact" in auto.note
    forced = build_index(x, kind="ivf")
    assert forced.kind == "ivf" and forced.params["nprobe"] > forced.params["nlist"] // 8


def test_key_helpers_match_numpy() -> None:
    from analysis.detectors.false_negatives import _in_sorted, _unique_ids

    rng = np.random.default_rng(11)
    ids = rng.integers(0, 50, 400)
    distinct, inverse = _unique_ids(ids, 60)
    ref_distinct, ref_inverse = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(distinct, ref_distinct)
    np.testing.assert_array_equal(inverse, ref_inverse.reshape(-1))
    table = np.unique(rng.integers(0, 10**9, 300))
    keys = np.concatenate([rng.choice(table, 200), rng.integers(0, 10**9, 200), [-1, 10**10]])
    np.testing.assert_array_equal(_in_sorted(keys, table), np.isin(keys, table))
    assert not _in_sorted(keys, table[:0]).any()
