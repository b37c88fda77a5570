"""InfoNCE against tau: float64 references, torch.autograd gradients, variants, directions, the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.cli import main
from analysis.errors import NegScopeError
from analysis.metrics import temperature as T
from analysis.review.decisions import workspace_decisions
from analysis.review.store import Decision, ReviewStore
from analysis.runs.candidates import build_candidates
from analysis.runs.folder import load_run, write_run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run

# ------------------------------------------------------------------------------------------------ references


def _random_sims(seed: int, p: int = 40, k: int = 12, pad: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.2, 0.95, size=p).astype(np.float32)
    neg = rng.uniform(-1.0, 1.0, size=(p, k)).astype(np.float32)
    if pad:
        counts = rng.integers(1, k + 1, size=p)
        for i, c in enumerate(counts):
            neg[i, c:] = np.nan
        neg[0, :] = np.nan  # a pair without negatives
    return pos, neg


def _ref_pair(pos: float, negs: np.ndarray, tau: float) -> dict[str, float]:
    """Slow float64 reference for one pair."""
    negs = np.asarray([x for x in negs if not np.isnan(x)], dtype=np.float64)
    logits = np.concatenate([[float(pos)], negs]) / tau
    m = logits.max()
    p = np.exp(logits - m) / np.sum(np.exp(logits - m))
    w = np.exp(negs / tau - (negs / tau).max())
    w = w / w.sum()
    order = np.argsort(-negs, kind="stable")
    entropy = -sum(x * np.log(x) for x in w if x > 0)
    return {
        "loss": -np.log(p[0]),
        "p_pos": p[0],
        "effective": np.exp(entropy),
        "top1": w[order[0]],
        "top5": w[order[:5]].sum(),
        "w": w,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.01, 0.07, 0.5])
def test_pair_stats_match_float64_reference(seed: int, tau: float) -> None:
    pos, neg = _random_sims(seed)
    fn = np.random.default_rng(seed + 10).random(neg.shape) < 0.2
    stats = T.pair_stats(pos, neg, tau, false_negative=fn)
    assert np.isnan(stats.effective_negatives[0]) and stats.loss[0] == 0.0
    for i in range(1, len(pos)):
        ref = _ref_pair(pos[i], neg[i], tau)
        real = ~np.isnan(neg[i])
        np.testing.assert_allclose(stats.loss[i], ref["loss"], rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(stats.p_pos[i], ref["p_pos"], rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(stats.weights[i][real], ref["w"], rtol=2e-4, atol=1e-7)
        assert np.isnan(stats.weights[i][~real]).all()
        np.testing.assert_allclose(stats.effective_negatives[i], ref["effective"], rtol=2e-4)
        np.testing.assert_allclose(stats.top1_weight[i], ref["top1"], rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(stats.top5_weight[i], ref["top5"], rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(stats.false_negative_weight[i], ref["w"][fn[i][real]].sum(), rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("seed", [3, 4])
def test_sweep_means_match_reference(seed: int) -> None:
    pos, neg = _random_sims(seed, p=60, k=20)
    fn = np.random.default_rng(seed).random(neg.shape) < 0.15
    taus = [0.003, 0.02, 0.07, 0.3, 2.0]
    table = T.sweep(pos, neg, taus, false_negative=fn)
    assert list(table.columns) == list(T.SWEEP_COLUMNS)
    np.testing.assert_allclose(table["tau"], taus)
    assert (table["n_pairs"] == len(pos) - 1).all()
    for row, tau in zip(table.itertuples(), taus, strict=True):
        refs = [_ref_pair(pos[i], neg[i], tau) for i in range(1, len(pos))]
        fn_share = [refs[i - 1]["w"][fn[i][~np.isnan(neg[i])]].sum() for i in range(1, len(pos))]
        np.testing.assert_allclose(row.loss, np.mean([r["loss"] for r in refs]), rtol=1e-4)
        np.testing.assert_allclose(row.positive_gradient, np.mean([1 - r["p_pos"] for r in refs]), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(row.effective_negatives, np.mean([r["effective"] for r in refs]), rtol=1e-4)
        np.testing.assert_allclose(row.top1_weight, np.mean([r["top1"] for r in refs]), rtol=1e-4)
        np.testing.assert_allclose(row.top5_weight, np.mean([r["top5"] for r in refs]), rtol=1e-4)
        np.testing.assert_allclose(row.false_negative_weight, np.mean(fn_share), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("block_elements", "workers"), [(1, 1), (7, 3), (40, 2), (10**9, 1)])
def test_sweep_blocking_does_not_change_results(block_elements: int, workers: int) -> None:
    pos, neg = _random_sims(5, p=50, k=9)
    fn = np.random.default_rng(5).random(neg.shape) < 0.3
    taus = T.tau_grid(0.01, 1.0, 13)
    _, d, s0, mask, has, hardest = T._prepare(pos, neg, "cpu")
    pos_t = torch.as_tensor(pos)[has]
    fn_t = torch.as_tensor(fn)[has] & mask[has]
    args = (pos_t, d[has], s0[has], hardest[has], fn_t, taus)
    # the vectorised path (used on CUDA) is the reference
    ref = T._sweep_kernel(*args, "cpu", vectorised=True)
    got = T._sweep_kernel(*args, "cpu", block_elements=block_elements, workers=workers)
    assert set(got) == set(T.STAT_NAMES)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-6)


def test_sweep_without_any_negative_reports_zero_pairs() -> None:
    table = T.sweep(np.array([0.5, 0.2]), np.full((2, 3), np.nan), [0.1])
    assert table["n_pairs"].iloc[0] == 0 and np.isnan(table["loss"].iloc[0])


def test_bad_taus_are_refused() -> None:
    pos, neg = _random_sims(0)
    with pytest.raises(NegScopeError):
        T.sweep(pos, neg, [0.1, -1.0])
    with pytest.raises(NegScopeError):
        T.sweep(pos, neg, [])
    with pytest.raises(NegScopeError):
        T.tau_grid(1.0, 0.1)


def test_extreme_temperatures_stay_finite() -> None:
    pos = np.array([-0.9, 0.9], dtype=np.float32)
    neg = np.array([[0.99, -1.0], [0.1, 0.2]], dtype=np.float32)
    table = T.sweep(pos, neg, [1e-4, 1e3])
    assert np.isfinite(table[["loss", "effective_negatives", "top1_weight"]].to_numpy()).all()
    # at tau -> 0 the loss is (hardest - pos) / tau for a pair whose positive loses
    stats = T.pair_stats(pos, neg, 1e-4)
    np.testing.assert_allclose(stats.loss[0], (0.99 - -0.9) / 1e-4, rtol=1e-5)
    assert stats.effective_negatives[0] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ autograd


@pytest.mark.parametrize("tau", [0.05, 0.2, 1.0])
def test_weights_are_the_autograd_gradient_shares(tau: float) -> None:
    rng = np.random.default_rng(7)
    p, k = 25, 10
    pos = rng.uniform(-0.5, 1, p)
    neg = rng.uniform(-1, 1, (p, k))
    stats = T.pair_stats(pos.astype(np.float32), neg.astype(np.float32), tau)
    sims = torch.tensor(np.concatenate([pos[:, None], neg], axis=1), dtype=torch.float64, requires_grad=True)
    logits = sims / tau
    loss = -torch.log_softmax(logits, dim=1)[:, 0]
    loss.sum().backward()
    grad_logit = sims.grad.numpy() * tau  # dL/dlogit = tau * dL/dsim
    # dL/dlogit_j = p_j (softmax over all candidates) for a negative; the repulsive share is p_j / sum_j p_j
    neg_grad = grad_logit[:, 1:]
    np.testing.assert_allclose(stats.weights, neg_grad / neg_grad.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-7)
    # dL/dlogit_+ = p_+ - 1: the positive's gradient magnitude is 1 - p_+ = sum_j p_j
    np.testing.assert_allclose(1 - stats.p_pos, -grad_logit[:, 0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(1 - stats.p_pos, neg_grad.sum(axis=1), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stats.loss, loss.detach().numpy(), rtol=1e-5)
    # negatives_of_pair's ``p`` is the raw gradient dL/dlogit_j
    inputs = T.LossInputs(
        direction="forward",
        pair_ids=np.arange(p),
        query_ids=np.arange(p),
        positive_ids=np.arange(p),
        pos_sim=pos.astype(np.float32),
        neg_ids=np.tile(np.arange(k), (p, 1)),
        neg_sim=neg.astype(np.float32),
        false_negative=np.zeros((p, k), dtype=bool),
    )
    table = T.negatives_of_pair(inputs, stats, 3).sort_values("item_id")
    np.testing.assert_allclose(table["p"], neg_grad[3], rtol=1e-4, atol=1e-7)
    assert T.negatives_of_pair(inputs, stats, 3)["weight"].is_monotonic_decreasing


# ------------------------------------------------------------------------------------------------ variants


def _ref_variant(pos: float, negs: np.ndarray, tau: float, variant: str, tau_plus: float, beta: float) -> float:
    """Chuang et al. / Robinson et al. reference code, transcribed in float64 numpy."""
    negs = np.asarray(negs, dtype=np.float64)
    pe = np.exp(float(pos) / tau)
    ne = np.exp(negs / tau)
    n = len(negs)
    if variant == "infonce":
        ng = ne.sum()
    elif variant == "debiased":
        ng = max((-tau_plus * n * pe + ne.sum()) / (1 - tau_plus), n * np.e ** (-1 / tau))
    else:
        tp = 0.0 if variant == "hard" else tau_plus
        imp = np.exp(beta * np.log(ne))
        reweight = (imp * ne).sum() / imp.mean()
        ng = max((-tp * n * pe + reweight) / (1 - tp), n * np.e ** (-1 / tau))
    return float(-np.log(pe / (pe + ng)))


@pytest.mark.parametrize("variant", ["infonce", "debiased", "hard", "hcl"])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_variants_match_the_papers_code(variant: str, tau: float) -> None:
    pos, neg = _random_sims(11, p=30, k=8)
    got = T.variant_loss(pos, neg, tau, variant=variant, tau_plus=0.2, beta=1.5)
    assert np.isnan(got[0])
    for i in range(1, len(pos)):
        negs = neg[i][~np.isnan(neg[i])]
        np.testing.assert_allclose(got[i], _ref_variant(pos[i], negs, tau, variant, 0.2, 1.5), rtol=1e-7, atol=1e-12)


def test_debiased_clamp_is_exercised_and_matches() -> None:
    # a strong positive and a big tau_plus: the estimate goes negative and the clamp N e^{-1/tau} wins
    pos = np.array([0.95], dtype=np.float32)
    neg = np.array([[0.0, -0.1, 0.05]], dtype=np.float32)
    got = T.variant_loss(pos, neg, 0.2, variant="debiased", tau_plus=0.5)
    np.testing.assert_allclose(
        got[0], _ref_variant(0.95, neg[0].astype(np.float64), 0.2, "debiased", 0.5, 0), rtol=1e-6
    )


def test_variant_limits_reduce_to_infonce_and_fn_removal() -> None:
    pos, neg = _random_sims(12, p=30, k=8)
    base = T.variant_loss(pos, neg, 0.07, variant="infonce")
    np.testing.assert_allclose(T.variant_loss(pos, neg, 0.07, variant="debiased", tau_plus=0.0), base, rtol=1e-10)
    np.testing.assert_allclose(T.variant_loss(pos, neg, 0.07, variant="hard", beta=0.0), base, rtol=1e-10)
    np.testing.assert_allclose(T.variant_loss(pos, neg, 0.07, variant="hcl", tau_plus=0.0, beta=0.0), base, rtol=1e-10)
    # infonce agrees with the sweep
    np.testing.assert_allclose(np.nanmean(base), T.sweep(pos, neg, [0.07])["loss"].iloc[0], rtol=1e-5)
    fn = np.random.default_rng(0).random(neg.shape) < 0.3
    removed = T.variant_loss(pos, neg, 0.07, variant="fn_removed", false_negative=fn)
    for i in range(1, len(pos)):
        keep = ~np.isnan(neg[i]) & ~fn[i]
        expected = _ref_pair(pos[i], neg[i][keep], 0.07)["loss"] if keep.any() else 0.0
        np.testing.assert_allclose(removed[i], expected, rtol=1e-6, atol=1e-12)
    with pytest.raises(NegScopeError):
        T.variant_loss(pos, neg, 0.07, variant="nope")
    with pytest.raises(NegScopeError):
        T.variant_loss(pos, neg, 0.07, variant="debiased", tau_plus=1.0)


def test_variant_sweep_is_long_and_complete() -> None:
    pos, neg = _random_sims(13)
    table = T.variant_sweep(pos, neg, [0.05, 0.1], tau_plus=0.1, beta=1.0)
    assert len(table) == 2 * len(T.VARIANTS)
    assert set(table["variant"]) == set(T.VARIANTS)
    assert table["loss"].notna().all()
    # hardness weighting puts more mass on hard negatives: its loss is at least InfoNCE's
    wide = table.pivot(index="tau", columns="variant", values="loss")
    assert (wide["hard"] >= wide["infonce"] - 1e-9).all()
    assert (wide["debiased"] <= wide["infonce"] + 1e-9).all()


# ------------------------------------------------------------------------------------------------ run inputs


def _tiny_run(path: Path, *, two_modalities: bool = True) -> object:
    """4 pairs, hand-made: positives 10..13, hand-written negative 14 that is no pair's positive."""
    rng = np.random.default_rng(0)
    n = 15
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    items = pd.DataFrame(
        {
            "item_id": np.arange(n),
            "modality": (["image"] if two_modalities else ["text"]) * 10 + ["text"] * 5,
            "content": [f"c{i}" for i in range(n)],
            "label": [None] * n,
            "key": [f"k{i}" for i in range(n)],
        }
    )
    pairs = pd.DataFrame({"pair_id": [100, 101, 102, 103], "anchor_id": [0, 1, 2, 3], "positive_id": [10, 11, 12, 13]})
    negs = pd.DataFrame(
        {
            "pair_id": [100, 100, 100, 101, 102, 102, 103],
            "negative_id": [11, 14, 12, 10, 13, 11, 14],
            "source": ["given", "given", "in_batch", "given", "mined", "given", "given"],
        }
    )
    write_run(
        path,
        manifest={"dataset_hash": "tiny", "logit_scale": 20.0},
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=negs,
    )
    return load_run(path)


def test_reverse_candidates_follow_the_documented_rule(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run")
    rev = T.reverse_inputs(run)
    # pair 100: negatives 11 -> anchor 1; 14 (no pair's positive) -> fallback pair (0 + 1 + 1) % 4 = 2 -> anchor 2;
    # 12 -> anchor 2
    assert rev.neg_ids[0].tolist() == [1, 2, 2]
    # pair 101: negative 10 -> anchor 0, then padding
    assert rev.neg_ids[1].tolist() == [0, -1, -1]
    # pair 103: negative 14 -> fallback pair (3 + 1 + 0) % 4 = 0 -> anchor 0
    assert rev.neg_ids[3].tolist() == [0, -1, -1]
    emb = run.embeddings.astype(np.float64)
    np.testing.assert_allclose(rev.pos_sim, np.sum(emb[[0, 1, 2, 3]] * emb[[10, 11, 12, 13]], axis=1), rtol=1e-5)
    np.testing.assert_allclose(rev.neg_sim[0], emb[10] @ emb[[1, 2, 2]].T, rtol=1e-5)
    assert np.isnan(rev.neg_sim[1, 1:]).all()
    assert rev.query_ids.tolist() == [10, 11, 12, 13] and rev.positive_ids.tolist() == [0, 1, 2, 3]


def test_reverse_skips_the_own_anchor(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run")
    # make pair 101 share pair 100's anchor: then 100's negative 11 maps to the second pair with positive 11? none
    pairs = run.pairs.copy()
    pairs.loc[1, "anchor_id"] = 0
    run2 = type(run)(
        path=run.path,
        manifest=run.manifest,
        items=run.items,
        embeddings=run.embeddings,
        pairs=pairs,
        negatives=run.negatives,
    )
    rev = T.reverse_inputs(run2)
    assert 0 not in rev.neg_ids[0].tolist()
    assert rev.neg_ids[0].tolist()[0] == -1


def test_direction_sweep_has_reverse_and_symmetric_for_two_modalities(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "two", n_pairs=80)
    table = T.direction_sweep(run, [0.05, 0.1])
    assert set(table["direction"]) == set(T.DIRECTIONS)
    fwd = table[table["direction"] == "forward"]["loss"].to_numpy()
    rev = table[table["direction"] == "reverse"]["loss"].to_numpy()
    sym = table[table["direction"] == "symmetric"]["loss"].to_numpy()
    np.testing.assert_allclose(sym, (fwd + rev) / 2, rtol=1e-12)
    one, _ = make_synthetic_run(tmp_path / "one", n_pairs=80, two_modalities=False)
    assert set(T.direction_sweep(one, [0.1])["direction"]) == {"forward"}


def test_direction_sweep_checks_taus_and_directions_itself(tmp_path: Path) -> None:
    """The checks the CLI relies on live in the library, so the app gets them too."""
    run, _ = make_synthetic_run(tmp_path / "two", n_pairs=40)
    for bad in ([0.0], [-0.1], [float("nan")], [float("inf")], []):
        with pytest.raises(NegScopeError, match="temperature"):
            T.direction_sweep(run, bad)
    with pytest.raises(NegScopeError, match="unknown directions"):
        T.direction_sweep(run, [0.1], directions=("sideways",))
    one, _ = make_synthetic_run(tmp_path / "one", n_pairs=40, two_modalities=False)
    for direction in ("reverse", "symmetric"):
        with pytest.raises(NegScopeError, match="two-modality"):
            T.direction_sweep(one, [0.1], directions=(direction,))
    only = T.direction_sweep(run, [0.05, 0.1], directions=("symmetric",))
    both = T.direction_sweep(run, [0.05, 0.1])
    assert list(only["direction"]) == ["symmetric", "symmetric"]
    np.testing.assert_allclose(
        only["loss"].to_numpy(), both[both["direction"] == "symmetric"]["loss"].to_numpy(), rtol=1e-12
    )


def test_direction_sweep_can_require_negatives(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "r", n_pairs=20)
    empty = dataclasses.replace(run, negatives=run.negatives.iloc[:0], _cache={})
    table = T.direction_sweep(empty, [0.1], directions="forward")
    assert int(table["n_pairs"].iloc[0]) == 0 and np.isnan(table["loss"].iloc[0])
    with pytest.raises(NegScopeError, match="no pair"):
        T.direction_sweep(empty, [0.1], directions="forward", require_negatives=True)


def test_map_row_blocks_covers_every_row_once_in_order() -> None:
    for n_rows, n_cols, block in [(1000, 7, 100), (5, 0, 10), (0, 3, 10), (10, 50, 1)]:
        for workers in (1, 3):
            got = T.map_row_blocks(lambda lo, hi: (lo, hi), n_rows, n_cols, block_elements=block, workers=workers)
            rows = max(1, block // max(n_cols, 1))
            expected = [(lo, min(lo + rows, n_rows)) for lo in range(0, n_rows, rows)] or [(0, 0)]
            assert got == expected
    total = T.map_row_blocks(lambda lo, hi: np.arange(lo, hi).sum(), 997, 4, block_elements=64)
    assert sum(total) == np.arange(997).sum()


def test_default_taus_hold_the_learned_one(synthetic_run) -> None:
    run, _ = synthetic_run
    taus = T.default_taus(run)
    assert taus == sorted(set(taus)) and round(T.learned_or_default_tau(run)[0], 6) in taus
    assert set(T.DEFAULT_TAUS) <= set(taus)


def test_forward_inputs_agree_with_candidates(synthetic_run) -> None:
    run, _ = synthetic_run
    cands = build_candidates(run)
    fwd = T.forward_inputs(run)
    np.testing.assert_array_equal(fwd.neg_ids, cands.neg_ids)
    np.testing.assert_array_equal(fwd.pos_sim, cands.pos_sim)
    assert not fwd.false_negative.any()


# ------------------------------------------------------------------------------------------------ false negatives


def test_false_negative_table_from_review_decisions(synthetic_run) -> None:
    run, truth = synthetic_run
    planted = truth.false_negative[truth.false_negative["is_false_negative"]].head(5)
    anchor_of = dict(zip(run.pairs["pair_id"], run.pairs["anchor_id"], strict=True))
    keys = run.items["key"].to_numpy()
    store = ReviewStore(review_db_path())
    decisions = [
        Decision(run.dataset_hash, "negative", keys[anchor_of[r.pair_id]], keys[r.negative_id], "false_negative", "ann")
        for r in planted.itertuples()
    ]
    store.record_many(decisions)
    # a later "negative" decision overrides the first one
    first = planted.iloc[0]
    store.record(
        Decision(
            run.dataset_hash, "negative", keys[anchor_of[first.pair_id]], keys[first.negative_id], "negative", "ann"
        )
    )
    table = T.false_negative_table(run, decisions=workspace_decisions(run))
    assert (table["source"] == "review").all()
    got = set(zip(table["anchor_id"], table["candidate_id"], strict=True))
    expected = {(anchor_of[r.pair_id], r.negative_id) for r in planted.iloc[1:].itertuples()}
    assert got == expected
    fwd = T.forward_inputs(run, fn_table=table)
    cands = build_candidates(run)
    ref = np.zeros_like(cands.mask)
    for i in range(len(cands.pair_ids)):
        for j in range(cands.neg_ids.shape[1]):
            ref[i, j] = (int(cands.anchor_ids[i]), int(cands.neg_ids[i, j])) in expected
    np.testing.assert_array_equal(fwd.false_negative, ref)
    assert fwd.false_negative.sum() == len(expected)


def test_false_negative_table_from_truth(synthetic_run, monkeypatch: pytest.MonkeyPatch) -> None:
    run, truth = synthetic_run
    table_in = truth.false_negative.assign(column="negative_1")
    fake = types.ModuleType("analysis.data.truth")
    fake.negative_truth = lambda r: table_in if r is run else None
    monkeypatch.setitem(sys.modules, "analysis.data.truth", fake)
    table = T.false_negative_table(run)
    fn = truth.false_negative[truth.false_negative["is_false_negative"]]
    assert len(table) == len(fn) and (table["source"] == "truth").all()
    fwd = T.forward_inputs(run, fn_table=table)
    assert fwd.false_negative.sum() == len(fn)
    sweep = T.sweep_inputs(fwd, [0.07])
    assert 0 < sweep["false_negative_weight"].iloc[0] < 1
    # reverse: a_m is flagged for query p_i when p_i is a false negative of a_m
    rev = T.reverse_inputs(run, fn_table=table)
    pairs_set = set(zip(table["anchor_id"], table["candidate_id"], strict=True))
    for i in range(len(rev.pair_ids)):
        for j in range(rev.neg_ids.shape[1]):
            expect = rev.neg_ids[i, j] >= 0 and (int(rev.neg_ids[i, j]), int(rev.query_ids[i])) in pairs_set
            assert rev.false_negative[i, j] == expect
    assert T.false_negative_table(run, use_truth=False).empty


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_json_keys_and_order(synthetic_run, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = synthetic_run
    assert main(["temperature", str(run.path), "--tau", "0.2", "0.02", "0.07", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tau"] for r in rows] == [0.2, 0.02, 0.07]
    assert all(list(r) == ["tau", "loss", "effective_negatives", "top1_weight"] for r in rows)
    fwd = T.forward_inputs(run)
    ref = T.sweep(fwd.pos_sim, fwd.neg_sim, [0.2, 0.02, 0.07])
    np.testing.assert_allclose([r["loss"] for r in rows], ref["loss"], rtol=1e-6)
    np.testing.assert_allclose([r["top1_weight"] for r in rows], ref["top1_weight"], rtol=1e-6)
    # a smaller tau concentrates the gradient: fewer effective negatives
    by_tau = {r["tau"]: r for r in rows}
    assert (
        by_tau[0.02]["effective_negatives"] < by_tau[0.07]["effective_negatives"] < by_tau[0.2]["effective_negatives"]
    )


def test_cli_table_and_errors(synthetic_run, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run, _ = synthetic_run
    assert main(["temperature", str(run.path), "--direction", "symmetric"]) == 0
    out = capsys.readouterr().out
    assert "learned tau 0.07" in out and "effective_negatives" in out
    assert main(["temperature", str(run.path), "--tau", "0", "--json"]) == 2
    assert "positive" in capsys.readouterr().err
    one, _ = make_synthetic_run(tmp_path / "one", n_pairs=30, two_modalities=False)
    assert main(["temperature", str(one.path), "--direction", "reverse"]) == 2
    assert "two-modality" in capsys.readouterr().err
    assert main(["temperature", str(tmp_path / "missing"), "--json"]) == 2


def test_weight_by_rank_matches_loop() -> None:
    pos, neg = _random_sims(21, p=30, k=7)
    stats = T.pair_stats(pos, neg, 0.1)
    table = T.weight_by_rank(stats)
    rows = [sorted(r[~np.isnan(r)], reverse=True) for r in stats.weights]
    for rank in range(1, 8):
        vals = [r[rank - 1] for r in rows if len(r) >= rank]
        got = table[table["rank"] == rank]
        if not vals:
            assert got.empty
            continue
        assert got["mean_weight"].iloc[0] == pytest.approx(np.mean(vals), rel=1e-6)
        assert got["n_pairs"].iloc[0] == len(vals)
        cum = [sum(r[:rank]) for r in rows if r]
        assert got["cumulative"].iloc[0] == pytest.approx(np.mean(cum), rel=1e-6)
    assert table["cumulative"].is_monotonic_increasing
    assert table["cumulative"].iloc[-1] == pytest.approx(1.0)


def test_variant_losses_share_work_but_agree_with_single_calls() -> None:
    pos, neg = _random_sims(14, p=25, k=6)
    fn = np.random.default_rng(1).random(neg.shape) < 0.3
    both = T.variant_losses(pos, neg, 0.2, false_negative=fn, tau_plus=0.15, beta=0.7)
    assert set(both) == set(T.VARIANTS)
    for v in T.VARIANTS:
        single = T.variant_loss(pos, neg, 0.2, variant=v, false_negative=fn, tau_plus=0.15, beta=0.7)
        np.testing.assert_array_equal(both[v], single)
    seen = []
    table = T.variant_sweep(pos, neg, [0.2, 0.5], false_negative=fn, tau_plus=0.15, beta=0.7, progress=seen.append)
    assert seen == [0.5, 1.0]
    row = table[(table["tau"] == 0.2) & (table["variant"] == "hcl")]["loss"].iloc[0]
    assert row == pytest.approx(np.nanmean(both["hcl"]))


# ------------------------------------------------------------------------------------------------ the digits sample


def test_sample_false_negatives_take_more_than_their_share(sample_run) -> None:
    run = sample_run
    tau = run.tau
    assert tau is not None and 0.005 < tau < 0.2
    fn_table = T.false_negative_table(run)
    assert len(fn_table) > 0 and set(fn_table["source"]) == {"truth"}
    fwd = T.forward_inputs(run, fn_table=fn_table)
    count_share = fwd.false_negative.sum() / fwd.mask.sum()
    table = T.sweep_inputs(fwd, [tau, 1.0])
    # planted false negatives are same-digit captions: hard, so at the learned tau they get far more of the
    # repulsive gradient than their number alone would give them, and less so at a warm tau
    at_learned, warm = table["false_negative_weight"].to_numpy()
    assert at_learned > 1.5 * count_share
    assert at_learned > warm
    removed = T.variant_loss(fwd.pos_sim, fwd.neg_sim, tau, variant="fn_removed", false_negative=fwd.false_negative)
    assert np.nanmean(removed) < table["loss"].iloc[0]
    both = T.direction_sweep(run, [tau], fn_table=fn_table)
    assert set(both["direction"]) == set(T.DIRECTIONS)


def test_pair_stats_and_variants_over_many_blocks_match_one_block() -> None:
    pos, neg = _random_sims(31, p=3000, k=40)  # 819 rows per block: four blocks
    fn = np.random.default_rng(2).random(neg.shape) < 0.1
    stats = T.pair_stats(pos, neg, 0.05, false_negative=fn)
    whole = T._pair_stats_block(pos, neg, fn, 0.05)
    for key, value in whole.items():
        np.testing.assert_allclose(getattr(stats, key), value, rtol=1e-6, atol=1e-12, equal_nan=True)
    many = T.variant_losses(pos, neg, 0.05, false_negative=fn)
    tensors = T._variant_tensors(pos, neg, fn)
    one = T._variant_kernel(*tensors, 0.05, tau_plus=0.1, beta=1.0, variants=T.VARIANTS)
    for v in T.VARIANTS:
        np.testing.assert_allclose(many[v], one[v], rtol=1e-12, equal_nan=True)
