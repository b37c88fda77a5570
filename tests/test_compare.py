"""Comparing runs (analysis.compare): alignment by content, every metric delta against float64 references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare.align import align_runs
from analysis.compare.deltas import DetectorFlags, compare_runs
from analysis.compare.pairs import false_negatives_across, negative_changes, pair_comparison, worse_pairs
from analysis.errors import NegScopeError
from analysis.runs.folder import Run, load_run, write_run
from tests.synthetic import make_synthetic_run

COMMON_TAU = 0.1


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rewrite(
    run: Run,
    path: Path,
    *,
    embeddings: np.ndarray | None = None,
    perm: np.ndarray | None = None,
    logit_scale: float | None = None,
) -> Run:
    """Write ``run``'s dataset again with other embeddings (reference item order) and item order ``perm``.

    ``perm[new_id] = old_id``: the new folder's item ``new_id`` is the old item ``perm[new_id]``.
    """
    n = len(run.items)
    perm = np.arange(n) if perm is None else np.asarray(perm)
    new_of_old = np.empty(n, dtype=np.int64)
    new_of_old[perm] = np.arange(n)
    emb = run.embeddings if embeddings is None else embeddings
    items = run.items.iloc[perm].reset_index(drop=True)
    items["item_id"] = np.arange(n)
    pairs = run.pairs.copy()
    pairs["anchor_id"] = new_of_old[pairs["anchor_id"].to_numpy(np.int64)]
    pairs["positive_id"] = new_of_old[pairs["positive_id"].to_numpy(np.int64)]
    negatives = run.negatives.copy()
    negatives["negative_id"] = new_of_old[negatives["negative_id"].to_numpy(np.int64)]
    manifest = {**run.manifest}
    if logit_scale is not None:
        manifest["logit_scale"] = logit_scale
    write_run(path, manifest=manifest, items=items, embeddings=emb[perm], pairs=pairs, negatives=negatives)
    return load_run(path)


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Run, Run]:
    """Run A (dim 16) and run B of the same dataset with other embeddings (dim 24) in shuffled item order."""
    a, _ = make_synthetic_run(tmp_path / "a", n_pairs=90, dim=16, k=4, seed=1)
    rng = np.random.default_rng(7)
    other = _unit(rng.normal(size=(len(a.items), 24)))
    b = _rewrite(a, tmp_path / "b", embeddings=other, perm=rng.permutation(len(a.items)), logit_scale=1 / 0.03)
    return a, b


# ------------------------------------------------------------------------------------------- float64 references


def _ranks(emb: np.ndarray, modality: np.ndarray, queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1 + #items of the target's modality scoring strictly above it; the query and its other targets excluded."""
    out = np.empty(len(queries), dtype=np.int64)
    for i, (q, t) in enumerate(zip(queries, targets, strict=True)):
        scores = emb @ emb[q]
        own = set(targets[queries == q].tolist()) | {int(q)}
        pool = [j for j in np.flatnonzero(modality == modality[t]) if j not in own]
        out[i] = 1 + int(np.sum(scores[pool] > scores[t]))
    return out


def _loss(pos: np.ndarray, neg: list[np.ndarray], tau: float) -> float:
    losses = []
    for p, n in zip(pos, neg, strict=True):
        if not len(n):
            continue
        logits = np.concatenate([[p], n]) / tau
        m = logits.max()
        losses.append(m + np.log(np.exp(logits - m).sum()) - p / tau)
    return float(np.mean(losses))


def reference_metrics(run: Run, *, common_tau: float) -> dict[str, float]:
    """Every compared metric of ``run``, in float64 numpy straight from the run folder's tables."""
    emb = run.embeddings.astype(np.float64)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    modality = run.items["modality"].to_numpy()
    anchors = run.pairs["anchor_id"].to_numpy(np.int64)
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    pos = np.sum(emb[anchors] * emb[positives], axis=1)
    negs = [[] for _ in range(len(anchors))]
    row_of = {pid: i for i, pid in enumerate(run.pairs["pair_id"])}
    for pid, nid in zip(run.negatives["pair_id"], run.negatives["negative_id"], strict=True):
        negs[row_of[pid]].append(int(nid))
    neg_sims = [emb[ids] @ emb[a] for ids, a in zip(negs, anchors, strict=True)]
    all_neg = np.concatenate(neg_sims)
    wins = (pos[:, None] > all_neg[None, :]).sum() + 0.5 * (pos[:, None] == all_neg[None, :]).sum()
    out = {
        "auroc": wins / (len(pos) * len(all_neg)),
        "pos_sim_mean": pos.mean(),
        "neg_sim_mean": all_neg.mean(),
        "frac_hardest_neg_above_pos": np.mean([n.max() > p for p, n in zip(pos, neg_sims, strict=True) if len(n)]),
    }
    for prefix, q, t in (("", anchors, positives), ("reverse_", positives, anchors)):
        ranks = _ranks(emb, modality, q, t)
        for k in (1, 5, 10):
            out[f"{prefix}recall_at_{k}"] = np.mean(ranks <= k)
        out[f"{prefix}mrr_at_10"] = np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0))
    # reverse InfoNCE: the positive queries the anchors of the pairs whose positive is each listed negative
    anchor_of_positive = {int(p): int(a) for a, p in zip(anchors, positives, strict=True)}
    rev = [
        emb[[anchor_of_positive[int(n)] for n in ids if anchor_of_positive[int(n)] != a]] @ emb[p]
        for ids, a, p in zip(negs, anchors, positives, strict=True)
    ]
    tau = 1.0 / float(run.manifest["logit_scale"])
    out["tau"] = tau
    for key, t in (("loss_own_tau", tau), ("loss_common_tau", common_tau)):
        out[key] = 0.5 * (_loss(pos, neg_sims, t) + _loss(pos, rev, t))
    img, txt = emb[modality == "image"], emb[modality == "text"]
    ca, cb = img.mean(axis=0), txt.mean(axis=0)
    gap = ca - cb
    pooled = np.vstack([img, txt])
    centred = pooled - pooled.mean(axis=0)
    u = gap / np.linalg.norm(gap)
    out["gap"] = np.linalg.norm(gap)
    out["gap_centroid_cosine"] = ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb))
    out["gap_variance_share"] = np.mean((centred @ u) ** 2) / np.mean(np.sum(centred**2, axis=1))
    out["alignment"] = np.mean(np.sum((emb[anchors] - emb[positives]) ** 2, axis=1))
    iu = np.triu_indices(len(emb), k=1)
    sq = np.sum((emb[:, None, :] - emb[None, :, :]) ** 2, axis=2)[iu]
    out["uniformity"] = np.log(np.mean(np.exp(-2.0 * sq)))
    return {k: float(v) for k, v in out.items()}


def _assert_synthetic_structure(run: Run) -> None:
    """The reverse-loss reference above assumes every listed negative is exactly one pair's positive."""
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    assert len(set(positives.tolist())) == len(positives)
    assert set(run.negatives["negative_id"].tolist()) <= set(positives.tolist())


def test_every_metric_and_delta_matches_float64_reference(two_runs: tuple[Run, Run]) -> None:
    a, b = two_runs
    _assert_synthetic_structure(a)
    assert a.dim != b.dim
    comp = compare_runs(align_runs([a, b]), common_tau=COMMON_TAU)
    ref_a = reference_metrics(a, common_tau=COMMON_TAU)
    ref_b = reference_metrics(b, common_tau=COMMON_TAU)
    deltas = comp.deltas()
    for key, expected in ref_a.items():
        assert comp.metrics.at["A", key] == pytest.approx(expected, rel=1e-5, abs=1e-6), key
        assert comp.metrics.at["B", key] == pytest.approx(ref_b[key], rel=1e-5, abs=1e-6), key
        assert deltas.at["B", key] == pytest.approx(ref_b[key] - expected, rel=1e-4, abs=1e-5), key
    assert bool(comp.metrics.at["B", "tau_is_learned"])
    assert comp.metrics["fn_flagged"].isna().all()  # detectors were not asked for
    # the JSON carries one object per run and the deltas
    data = comp.to_json()
    assert [r["label"] for r in data["runs"]] == ["A", "B"]
    assert data["runs"][1]["dim"] == 24
    assert data["deltas"][0]["auroc"] == pytest.approx(ref_b["auroc"] - ref_a["auroc"], abs=1e-6)


def test_shuffled_item_order_aligns_to_identical_numbers(tmp_path: Path) -> None:
    a, _ = make_synthetic_run(tmp_path / "a", n_pairs=80, seed=3)
    perm = np.random.default_rng(0).permutation(len(a.items))
    b = _rewrite(a, tmp_path / "b", perm=perm)
    al = align_runs([a, b], labels=["before", "after"])
    # item i of the reference is item new_of_old[i] of b, by content key
    np.testing.assert_array_equal(b.items["key"].to_numpy()[al.item_index[1]], a.items["key"].to_numpy())
    np.testing.assert_array_equal(al.to_reference_items(1, al.item_index[1]), np.arange(len(a.items)))
    comp = compare_runs(al)
    numeric = comp.deltas().drop(columns=[c for c in comp.deltas().columns if c.endswith("_flagged")])
    np.testing.assert_allclose(numeric.to_numpy(dtype=float), 0.0, atol=1e-6)
    table = pair_comparison(comp)
    np.testing.assert_allclose(table["pos_sim_after"], table["pos_sim_before"], atol=1e-6)
    assert (table["hardest_neg_id_after"] == table["hardest_neg_id_before"]).all()
    assert (table["rank_delta_after"] == 0).all()
    changes = negative_changes(comp, "before", "after")
    assert len(changes) == len(a.negatives)
    np.testing.assert_allclose(changes["rise"], 0.0, atol=1e-6)
    assert not changes["became_hardest"].any()


def test_pair_tables_match_reference(two_runs: tuple[Run, Run]) -> None:
    a, b = two_runs
    al = align_runs([a, b])
    comp = compare_runs(al)
    table = pair_comparison(comp)
    emb_b = b.embeddings.astype(np.float64)[al.item_index[1]]  # b's vectors in a's item order
    emb_a = a.embeddings.astype(np.float64)
    anchors, positives = a.pairs["anchor_id"].to_numpy(), a.pairs["positive_id"].to_numpy()
    for label, emb in (("A", emb_a), ("B", emb_b)):
        pos = np.sum(emb[anchors] * emb[positives], axis=1)
        np.testing.assert_allclose(table[f"pos_sim_{label}"], pos, atol=1e-6)
        hardest = np.array(
            [
                max(emb[n] @ emb[anc] for n in a.negatives.loc[a.negatives["pair_id"] == pid, "negative_id"])
                for pid, anc in zip(a.pairs["pair_id"], anchors, strict=True)
            ]
        )
        np.testing.assert_allclose(table[f"margin_{label}"], pos - hardest, atol=1e-6)
        ids = table[f"hardest_neg_id_{label}"].to_numpy(np.int64)
        np.testing.assert_allclose(np.sum(emb[ids] * emb[anchors], axis=1), hardest, atol=1e-6)
    np.testing.assert_allclose(table["margin_delta_B"], table["margin_B"] - table["margin_A"], atol=1e-12)
    worst = worse_pairs(table, "A", "B", n=5)
    expected = np.sort(table["margin_B"] - table["margin_A"])[:5]
    np.testing.assert_allclose(worst["change"], expected)
    changes = negative_changes(comp, "A", "B")
    pair_row = {pid: i for i, pid in enumerate(a.pairs["pair_id"])}
    rows = np.array([pair_row[p] for p in changes["pair_id"]])
    negs = changes["negative_id"].to_numpy(np.int64)
    rise = (np.sum(emb_b[negs] * emb_b[anchors[rows]], axis=1) - np.sum(emb_b[anchors[rows]] * emb_b[positives[rows]], axis=1)) - (
        np.sum(emb_a[negs] * emb_a[anchors[rows]], axis=1) - np.sum(emb_a[anchors[rows]] * emb_a[positives[rows]], axis=1)
    )
    np.testing.assert_allclose(changes["rise"], rise, atol=1e-6)
    assert np.all(np.diff(changes["rise"].to_numpy()) <= 1e-12)  # most risen first
    became = changes["became_hardest"].to_numpy()
    assert np.array_equal(became, (changes["neg_rank_B"] == 0).to_numpy() & (changes["neg_rank_A"] != 0).to_numpy())


def test_flags_that_appear_and_disappear(two_runs: tuple[Run, Run]) -> None:
    a, b = two_runs
    al = align_runs([a, b])
    # (anchor 0, item 100) flagged in A only; (anchor 1, item 101) in B only; (anchor 2, item 102) in both
    fn_a = pd.DataFrame(
        {"anchor_id": [0, 2, 3], "candidate_id": [100, 102, 103], "score": [0.9, 0.8, 0.1], "flagged": [True, True, False]}
    )
    b_ids = al.item_index[1]
    fn_b = pd.DataFrame(
        {
            "anchor_id": b_ids[[1, 2, 3]],
            "candidate_id": b_ids[[101, 102, 103]],
            "score": [0.7, 0.95, 0.2],
            "flagged": [True, True, False],
        }
    )
    summary = pd.DataFrame({"kind": ["mismatched_pair", "label", "duplicate"], "examined": [5, 5, 5], "flagged": [1, 2, 0]})
    flags = [DetectorFlags(fn_a, summary), DetectorFlags(fn_b, summary.assign(flagged=[0, 0, 4]))]
    comp = compare_runs(al, flags=flags)
    assert comp.metrics.at["A", "fn_flagged"] == 2 and comp.metrics.at["B", "label_noise_flagged"] == 4
    assert comp.deltas().at["B", "label_flagged"] == -2
    table = false_negatives_across(comp, use_review=False).set_index(["anchor_id", "candidate_id"])
    assert table.loc[(0, 100), "status"] == "disappeared"
    assert table.loc[(1, 101), "status"] == "appeared"
    assert table.loc[(2, 102), "status"] == "kept"
    assert (3, 103) not in table.index  # never flagged and not known
    emb_a, emb_b = a.embeddings.astype(np.float64), b.embeddings.astype(np.float64)
    for (anc, cand), row in table.iterrows():
        assert row["sim_A"] == pytest.approx(emb_a[anc] @ emb_a[cand], abs=1e-6)
        assert row["sim_B"] == pytest.approx(emb_b[b_ids[anc]] @ emb_b[b_ids[cand]], abs=1e-6)
        own = a.pairs["anchor_id"].to_numpy() == anc
        pos_a = np.sum(emb_a[anc] * emb_a[a.pairs["positive_id"].to_numpy()[own]], axis=1).mean()
        assert row["below_positive_A"] == pytest.approx(pos_a - row["sim_A"], abs=1e-6)
    assert np.all(np.diff(table["sim_delta"].to_numpy()) >= 0)  # pushed away most first


def test_differing_datasets_are_refused(tmp_path: Path) -> None:
    a, _ = make_synthetic_run(tmp_path / "a", n_pairs=40, seed=2)
    with pytest.raises(NegScopeError, match="at least two runs"):
        align_runs([a])
    other, _ = make_synthetic_run(tmp_path / "other", n_pairs=40, seed=5)
    other_items = other.items.assign(key=[f"x{i}" for i in range(len(other.items))])
    write_run(
        tmp_path / "other2",
        manifest=other.manifest,
        items=other_items,
        embeddings=other.embeddings,
        pairs=other.pairs,
        negatives=other.negatives,
    )
    with pytest.raises(NegScopeError, match="items differ.*not in"):
        align_runs([a, load_run(tmp_path / "other2")])

    # the same items, one pair's positive swapped for another caption
    pairs = a.pairs.copy()
    pairs.loc[0, "positive_id"] = pairs.loc[1, "positive_id"]
    write_run(tmp_path / "p", manifest=a.manifest, items=a.items, embeddings=a.embeddings, pairs=pairs, negatives=a.negatives)
    with pytest.raises(NegScopeError, match="pairs differ.*pair '0'"):
        align_runs([a, load_run(tmp_path / "p")])

    # the same items and pairs, one listed negative dropped
    negatives = a.negatives.iloc[1:]
    write_run(tmp_path / "n", manifest=a.manifest, items=a.items, embeddings=a.embeddings, pairs=a.pairs, negatives=negatives)
    with pytest.raises(NegScopeError, match="listed negatives differ"):
        align_runs([a, load_run(tmp_path / "n")])
    with pytest.raises(NegScopeError, match="distinct"):
        align_runs([a, a], labels=["x", "x"])
