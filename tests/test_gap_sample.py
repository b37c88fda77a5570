"""The modality gap on a large run: block-wise metrics and the shift experiment on seeded samples."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.metrics.modality_gap as M
from analysis.cli import main
from tests.test_modality_gap import gap_run


def test_block_wise_metrics_equal_the_whole_matrix_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = gap_run(tmp_path / "r", delta=0.8, n_pairs=150)
    groups = M.modality_groups(run)
    whole = M.gap_metrics(run.embeddings, groups)
    monkeypatch.setattr(M, "_CHUNK", 7)  # many blocks, the last one short
    blocks = M.gap_metrics(run.embeddings, groups)
    np.testing.assert_allclose(blocks.gap_vector, whole.gap_vector, rtol=0, atol=1e-12)
    for name in ("centroid_distance", "centroid_cosine", "gap_variance_share", "separability"):
        # float32 projections (the variance along the gap) differ in their last digits with the blocking
        assert getattr(blocks, name) == pytest.approx(getattr(whole, name), rel=1e-7, abs=1e-14)
    # and both equal the float64 definitions on the whole matrix
    x = run.embeddings.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xa, xb = x[groups.a_ids], x[groups.b_ids]
    np.testing.assert_allclose(whole.gap_vector, xa.mean(0) - xb.mean(0), atol=1e-14)
    assert whole.gap_variance_share == pytest.approx(M.variance_share_along(np.vstack([xa, xb]), whole.gap_vector))
    assert whole.mean_cosine["image"] == pytest.approx(M.mean_pairwise_cosine(xa))


def test_samples_as_large_as_the_run_change_nothing(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=120)
    every = M.shift_experiment(run, tau=0.05, lambdas=[0.0, 0.5, 1.0])
    info: dict = {}
    same = M.shift_experiment(run, tau=0.05, lambdas=[0.0, 0.5, 1.0], max_pairs=120, max_items=240, sample_info=info)
    pd.testing.assert_frame_equal(every, same)
    assert not info["sample"].sampled and info["sample"].note() == ""


def test_the_pair_sample_is_a_compact_copy_of_those_pairs(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=300, two_modalities=False)
    groups = M.modality_groups(run)
    compact, items = M.pair_sample(run, 80, seed=3)
    assert len(compact.pairs) == 80 and len(compact.items) == len(items) < len(run.items)
    np.testing.assert_array_equal(compact.items["item_id"], np.arange(len(items)))
    # the same pairs, negatives and embeddings as the rows of the whole run they came from
    rows = np.sort(np.random.default_rng(3).choice(300, size=80, replace=False))
    whole = run.pairs.iloc[rows].reset_index(drop=True)
    np.testing.assert_array_equal(items[compact.pairs["anchor_id"]], whole["anchor_id"])
    np.testing.assert_array_equal(items[compact.pairs["positive_id"]], whole["positive_id"])
    np.testing.assert_array_equal(compact.embeddings, run.embeddings[items])
    # the experiment on the compact run = the same pairs in the whole run (every item kept, shifted)
    gap = M.gap_vector(run.embeddings, groups)
    in_place = dataclasses.replace(
        run,
        pairs=whole,
        negatives=run.negatives[run.negatives["pair_id"].isin(whole["pair_id"])].reset_index(drop=True),
        _cache={},
    )
    info: dict = {}
    table = M.shift_experiment(
        run, tau=0.05, lambdas=[0.0, 1.0], max_pairs=80, max_items=10_000, seed=3, sample_info=info, gap=gap
    )
    for _, row in table.iterrows():
        ref = M.shift_point(in_place, M.shift_embeddings(run.embeddings, groups, gap, row["lambda"]), tau=0.05)
        for key in ("recall_at_1", "loss", "candidate_accuracy", "mean_pos_sim"):
            assert row[key] == pytest.approx(ref[key], rel=1e-6), key
    sample = info["sample"]
    assert sample.pairs == 80 and sample.pairs_total == 300 and sample.items == sample.items_total
    assert "80 of 300 pairs" in sample.note()


def test_closing_lambda_and_distances_on_an_item_sample_stay_close(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=1000, dim=16)
    every = M.shift_experiment(run, tau=0.05, lambdas=[0.0, 1.0])
    part = M.shift_experiment(run, tau=0.05, lambdas=[0.0, 1.0], max_items=800)
    closing = every.loc[every["closes_gap"], "lambda"].iloc[0]
    assert part.loc[part["closes_gap"], "lambda"].iloc[0] == pytest.approx(closing, abs=0.05)
    at0 = every.loc[every["lambda"] == 0.0, "centroid_distance"].iloc[0]
    assert part.loc[part["lambda"] == 0.0, "centroid_distance"].iloc[0] == pytest.approx(at0, rel=0.05)


def test_cli_says_what_the_shift_experiment_ran_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = gap_run(tmp_path / "r", delta=1.0, n_pairs=60)
    assert main(["gap", str(run.path), "--json", "--lambdas", "0", "--max-pairs", "20", "--max-items", "50"]) == 0
    data = json.loads(capsys.readouterr().out)
    sample = data["shift_sample"]
    assert sample["pairs"] == 20 and sample["pairs_total"] == 60 and sample["items"] == 50
    assert "20 of 60 pairs" in sample["note"]
    assert main(["gap", str(run.path), "--json", "--lambdas", "0", "--max-pairs", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["shift_sample"]["pairs"] == 60
    assert main(["gap", str(run.path), "--max-pairs", "-1"]) == 2


def test_shifted_centroids_match_shifting_every_row_in_float64(tmp_path: Path) -> None:
    run, _ = gap_run(tmp_path / "r", delta=0.9, n_pairs=200)
    groups = M.modality_groups(run)
    gap = M.gap_vector(run.embeddings, groups)
    x = run.embeddings.astype(np.float64)
    for lam in (-1.0, 0.0, 0.7, 1.3, 3.0):
        moved = x.copy()
        moved[groups.a_ids] -= 0.5 * lam * gap
        moved[groups.b_ids] += 0.5 * lam * gap
        moved /= np.linalg.norm(moved, axis=1, keepdims=True)
        want = np.linalg.norm(moved[groups.a_ids].mean(0) - moved[groups.b_ids].mean(0))
        # the weights' deviations are summed in float32 (no float64 copy of the rows): ~1e-9 relative
        assert M.centroid_distance_after_shift(run.embeddings, groups, gap, lam) == pytest.approx(want, rel=1e-7)
