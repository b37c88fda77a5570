"""Per-pair score table, summary metrics and the ``scores`` command, against slow float64 references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from analysis.cli import main
from analysis.metrics.retrieval import retrieval_ranks
from analysis.metrics.scores import (
    SUMMARY_KEYS,
    auroc,
    compute_scores,
    neg_rank_within_pair,
    negatives_long,
    pair_table,
    score_summary,
)
from analysis.runs.candidates import build_candidates
from tests.synthetic import make_random_run, make_synthetic_run


def _listed(run) -> dict:
    """pair_id -> list of (negative_id, source, float64 neg_sim), straight from the run tables."""
    emb = run.embeddings.astype(np.float64)
    anchor_of = dict(zip(run.pairs["pair_id"], run.pairs["anchor_id"], strict=True))
    out: dict = {pid: [] for pid in run.pairs["pair_id"]}
    for pid, nid, src in run.negatives[["pair_id", "negative_id", "source"]].itertuples(index=False):
        out[pid].append((int(nid), src, float(emb[anchor_of[pid]] @ emb[nid])))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_and_pairwise_reference(seed: int):
    rng = np.random.default_rng(seed)
    pos = rng.normal(0.5, 0.3, size=70)
    neg = rng.normal(0.1, 0.3, size=230)
    if seed == 2:  # heavy ties
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    got = auroc(pos, neg)
    assert got == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert got == pytest.approx(pairwise, abs=1e-12)
    assert np.isnan(auroc(pos, np.array([])))


def test_neg_rank_within_pair_matches_sorting():
    rng = np.random.default_rng(4)
    sim = np.round(rng.normal(size=(30, 6)), 1).astype(np.float32)
    mask = rng.random((30, 6)) < 0.7
    sim[~mask] = np.nan
    got = neg_rank_within_pair(sim, mask)
    for i in range(30):
        cols = [j for j in range(6) if mask[i, j]]
        order = sorted(cols, key=lambda j: (-float(sim[i, j]), j))
        for r, j in enumerate(order):
            assert got[i, j] == r
        assert (got[i, ~mask[i]] == -1).all()


@pytest.mark.parametrize("two_modalities", [True, False])
def test_pair_table_matches_reference(tmp_path: Path, two_modalities: bool):
    run = make_random_run(tmp_path / "run", n_pairs=60, two_modalities=two_modalities, string_ids=True, seed=7)
    cands = build_candidates(run)
    ranks = np.arange(1, 61)
    table = pair_table(run, cands, ranks=ranks, reverse_ranks=None)
    listed = _listed(run)
    emb = run.embeddings.astype(np.float64)
    assert list(table["pair_id"]) == list(run.pairs["pair_id"])
    assert any(len(v) == 0 for v in listed.values()), "the test needs pairs without negatives"
    for i, row in enumerate(table.itertuples(index=False)):
        negs = listed[row.pair_id]
        pos = emb[row.anchor_id] @ emb[row.positive_id]
        assert row.pos_sim == pytest.approx(pos, abs=1e-6)
        assert row.n_negatives == len(negs)
        assert row.rank == ranks[i] and pd.isna(row.reverse_rank)
        if not negs:
            assert np.isnan(row.hardest_neg) and np.isnan(row.margin) and pd.isna(row.hardest_neg_id)
            continue
        best = max(negs, key=lambda n: n[2])
        assert row.hardest_neg == pytest.approx(best[2], abs=1e-6)
        assert row.margin == pytest.approx(pos - best[2], abs=1e-6)
        assert emb[row.anchor_id] @ emb[row.hardest_neg_id] == pytest.approx(best[2], abs=1e-6)
        assert row.hardest_neg_source == dict((n[0], n[1]) for n in negs)[row.hardest_neg_id]
        wide = {(int(getattr(row, f"neg_id_{j}")), getattr(row, f"neg_source_{j}")) for j in range(1, len(negs) + 1)}
        assert wide == {(n[0], n[1]) for n in negs}
        for j in range(1, len(negs) + 1):
            nid = int(getattr(row, f"neg_id_{j}"))
            assert getattr(row, f"neg_sim_{j}") == pytest.approx(emb[row.anchor_id] @ emb[nid], abs=1e-6)


def test_negatives_long_matches_run_tables(tmp_path: Path):
    run = make_random_run(tmp_path / "run", seed=3)
    cands = build_candidates(run)
    long = negatives_long(cands)
    assert len(long) == len(run.negatives)
    listed = _listed(run)
    for row in long.itertuples(index=False):
        sims = sorted((n[2] for n in listed[row.pair_id]), reverse=True)
        assert row.neg_sim == pytest.approx(sims[row.neg_rank], abs=1e-6)
        assert (row.negative_id, row.source) in {(n[0], n[1]) for n in listed[row.pair_id]}


@pytest.mark.parametrize("two_modalities", [True, False])
def test_summary_matches_reference(tmp_path: Path, two_modalities: bool):
    run = make_random_run(tmp_path / "run", n_pairs=90, two_modalities=two_modalities, seed=11)
    report = compute_scores(run)
    s = report.summary
    assert tuple(s) == SUMMARY_KEYS
    listed = _listed(run)
    emb = run.embeddings.astype(np.float64)
    pos = np.array([emb[a] @ emb[p] for a, p in zip(run.pairs["anchor_id"], run.pairs["positive_id"], strict=True)])
    neg = np.array([n[2] for pid in run.pairs["pair_id"] for n in listed[pid]])
    assert s["pairs"] == 90
    assert s["pos_sim_mean"] == pytest.approx(pos.mean(), abs=1e-6)
    assert s["neg_sim_mean"] == pytest.approx(neg.mean(), abs=1e-6)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert s["auroc"] == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-5)
    above = [max(n[2] for n in listed[pid]) > pos[i] for i, pid in enumerate(run.pairs["pair_id"]) if listed[pid]]
    assert s["frac_hardest_neg_above_pos"] == pytest.approx(np.mean(above))
    ranks = report.pairs["rank"].to_numpy(dtype=np.int64)
    for k in (1, 5, 10):
        assert s[f"recall_at_{k}"] == pytest.approx(np.mean(ranks <= k))
    assert s["mrr_at_10"] == pytest.approx(np.mean([1 / r if r <= 10 else 0 for r in ranks]))
    if two_modalities:
        rev = report.pairs["reverse_rank"].to_numpy(dtype=np.int64)
        np.testing.assert_array_equal(rev, retrieval_ranks(run, reverse=True))
        assert set(s["reverse"]) == {"recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10"}
        assert s["reverse"]["recall_at_5"] == pytest.approx(np.mean(rev <= 5))
        assert s["reverse"]["mrr_at_10"] == pytest.approx(np.mean([1 / r if r <= 10 else 0 for r in rev]))
    else:
        assert s["reverse"] is None
        assert report.pairs["reverse_rank"].isna().all()


def test_summary_without_negatives_is_null_not_nan(tmp_path: Path):
    run = make_random_run(tmp_path / "run", k_max=0)
    cands = build_candidates(run)
    s = score_summary(cands, ranks=np.ones(len(run.pairs), dtype=np.int64))
    assert s["neg_sim_mean"] is None and s["auroc"] is None and s["frac_hardest_neg_above_pos"] is None
    assert s["recall_at_1"] == 1.0
    json.dumps(s, allow_nan=False)


def test_sources_filter(tmp_path: Path):
    run = make_random_run(tmp_path / "run", seed=5)
    report = compute_scores(run, sources=("given",))
    assert report.pairs["hardest_neg_source"].dropna().eq("given").all()
    n_given = run.negatives["source"].eq("given").sum()
    assert report.pairs["n_negatives"].sum() == n_given


def test_planted_mismatches_have_low_margins(tmp_path: Path):
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=300, mismatch_rate=0.1, noise=0.2, seed=2)
    table = compute_scores(run).pairs
    bad = truth.mismatched
    assert bad.sum() >= 10
    # planted mismatched pairs sit at the low end of pos_sim and of the margin (clean pairs can also have low
    # margins: their listed negatives include planted false negatives of the same class)
    assert auroc(-table["pos_sim"].to_numpy()[bad], -table["pos_sim"].to_numpy()[~bad]) > 0.95
    assert auroc(-table["margin"].to_numpy()[bad], -table["margin"].to_numpy()[~bad]) > 0.8
    worst = table.sort_values("pos_sim").head(int(bad.sum()))
    assert bad[worst.index.to_numpy()].mean() > 0.7


def test_cli_json_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = make_random_run(tmp_path / "run", seed=6)
    out = tmp_path / "out" / "pairs.csv"
    assert main(["scores", str(run.path), "--json", "--pairs-out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    summary = json.loads(printed)
    searches = summary.pop("rank_search")  # how the ranks were computed (exact on a run this small)
    assert searches["forward"]["rank_kind"] == "exact"
    assert list(summary) == list(SUMMARY_KEYS)
    assert summary == json.loads(json.dumps(compute_scores(run).summary))
    csv = pd.read_csv(out)
    want = compute_scores(run).pairs
    assert list(csv.columns) == list(want.columns)
    np.testing.assert_allclose(csv["margin"].to_numpy(), want["margin"].to_numpy(dtype=np.float64), atol=1e-9)
    np.testing.assert_array_equal(csv["rank"].to_numpy(), want["rank"].to_numpy(dtype=np.int64))


def test_cli_text_and_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = make_random_run(tmp_path / "run", seed=6, two_modalities=False)
    assert main(["scores", str(run.path), "--sources", "given,mined"]) == 0
    text = capsys.readouterr().out
    assert "auroc" in text and "anchor -> positive" in text and "positive -> anchor" not in text
    assert main(["scores", str(run.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reverse"] is None


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["scores", str(tmp_path / "missing"), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    run = make_random_run(tmp_path / "run", seed=7, two_modalities=False)
    assert main(["scores", str(run.path), "--sources", "given,bogus"]) == 2  # checked by the library
    err = capsys.readouterr().err
    assert "unknown negative sources ['bogus']" in err and len(err.strip().splitlines()) == 1
