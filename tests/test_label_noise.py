"""Label noise: mismatched pairs and near duplicates against slow references and planted truth; the flag table,
the quality figures and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.detectors.duplicates import near_duplicate_anchors
from analysis.detectors.label_noise import FLAG_COLUMNS, KINDS, detect_label_noise, evaluate_on_truth
from analysis.detectors.mismatch import _best_other, _prototypes, default_flag_rank, mismatched_pairs
from analysis.runs.candidates import row_dots
from analysis.runs.folder import Run, load_run, write_run
from analysis.search.exact import count_above
from tests.synthetic import make_synthetic_run

# ---------------------------------------------------------------- slow float64 references


def slow_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    pos, neg = s[y].astype(np.float64), s[~y].astype(np.float64)
    total = 0.0
    for p in pos:
        total += np.sum(p > neg) + 0.5 * np.sum(p == neg)
    return total / (len(pos) * len(neg))


def slow_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over the true items of the precision among items scoring at least as high (ties together)."""
    precisions = []
    for i in np.flatnonzero(y):
        at_least = s >= s[i]
        precisions.append(y[at_least].sum() / at_least.sum())
    return float(np.mean(precisions))


def _slow_rank(query: np.ndarray, target: int, gallery: list[int], skip: set[int], emb: np.ndarray) -> int:
    """1 + how many gallery items (not skipped, not the target) score above the target for ``query``."""
    pos = float(query @ emb[target])
    return 1 + sum(float(query @ emb[g]) > pos + 1e-6 for g in gallery if g != target and g not in skip)


def slow_ranks(run: Run, *, k: int = 10) -> dict[str, np.ndarray]:
    """Direct and neighbour ranks of every pair by brute force in float64, with the detector's leave-outs."""
    emb = run.embeddings.astype(np.float64)
    pairs = run.pairs
    anchors, positives = pairs["anchor_id"].to_numpy(), pairs["positive_id"].to_numpy()
    gal_p = sorted(set(positives) | set(run.negatives["negative_id"]))
    gal_a = sorted(set(anchors))
    links = list(zip(anchors, positives, strict=True))
    out: dict[str, list[int]] = {"rank_a2p": [], "rank_p2a": [], "nbr_rank_a": [], "nbr_rank_p": []}
    for i, (a, p) in enumerate(links):
        skip_a = {a} | {q for (x, q) in links if x == a}  # the anchor itself and its other positives
        skip_p = {p} | {x for (x, q) in links if q == p}  # the positive itself and its other anchors
        out["rank_a2p"].append(_slow_rank(emb[a], p, gal_p, skip_a, emb))
        out["rank_p2a"].append(_slow_rank(emb[p], a, gal_a, skip_p, emb))
        # neighbour prototypes: the other sides of the k pairs nearest on this side (the pair itself left out)
        near_a = [j for j in np.argsort(-(emb[anchors] @ emb[a]), kind="stable") if j != i][:k]
        proto = emb[positives[near_a]].mean(axis=0)
        out["nbr_rank_a"].append(_slow_rank(proto / np.linalg.norm(proto), p, gal_p, skip_a, emb))
        near_p = [j for j in np.argsort(-(emb[positives] @ emb[p]), kind="stable") if j != i][:k]
        proto = emb[anchors[near_p]].mean(axis=0)
        out["nbr_rank_p"].append(_slow_rank(proto / np.linalg.norm(proto), a, gal_a, skip_p, emb))
    return {key: np.array(value) for key, value in out.items()}


def _random_run(path: Path, *, seed: int, one_modality: bool, shared: bool) -> Run:
    """Random embeddings; ``shared``: anchors and positives used by several pairs (multi-positive anchors);
    ``one_modality``: every item is text, so anchors are also candidates and positives also anchors."""
    rng = np.random.default_rng(seed)
    n_items, dim, n_pairs = 100, 8, 40
    emb = rng.normal(size=(n_items, dim)).astype(np.float32)
    if shared:
        anchors = rng.integers(0, 20, size=n_pairs)
        positives = rng.integers(0 if one_modality else 40, 60, size=n_pairs)
    else:
        anchors = np.arange(n_pairs)
        positives = rng.permutation(80)[:n_pairs] if one_modality else 40 + rng.permutation(n_pairs)
    positives = np.where(positives == anchors, positives + 1, positives)
    pairs = pd.DataFrame({"pair_id": np.arange(n_pairs), "anchor_id": anchors, "positive_id": positives})
    neg = pd.DataFrame(
        {
            "pair_id": np.repeat(np.arange(n_pairs), 2),
            "negative_id": rng.integers(40, n_items, size=2 * n_pairs),
            "source": "given",
        }
    )
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "modality": ["text" if one_modality else "image"] * 40 + ["text"] * (n_items - 40),
            "content": [f"item {i}" for i in range(n_items)],
            "label": [None] * n_items,
        }
    )
    write_run(
        path, manifest={"dataset_hash": f"random-{seed}"}, items=items, embeddings=emb, pairs=pairs, negatives=neg
    )
    return load_run(path)


# ---------------------------------------------------------------- count_above and ranks


def test_count_above_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(37, 5)).astype(np.float32)
    c = rng.normal(size=(53, 5)).astype(np.float32)
    t = rng.normal(size=37).astype(np.float32)
    ref = [(c.astype(np.float64) @ q[i].astype(np.float64) > t[i]).sum() for i in range(37)]
    got = count_above(q, c, t, block_size=8)
    # float32 against float64 products may differ for a product within 1e-5 of its threshold; none are here
    assert np.abs((c.astype(np.float64) @ q.T.astype(np.float64)).T - t[:, None]).min() > 1e-5
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("one_modality", [False, True])
def test_mismatch_ranks_match_brute_force(tmp_path: Path, one_modality: bool, shared: bool) -> None:
    run = _random_run(tmp_path / "run", seed=3, one_modality=one_modality, shared=shared)
    got = mismatched_pairs(run, block_size=7, k_neighbors=4)
    ref = slow_ranks(run, k=4)
    # With shared anchors, pairs tie exactly in the neighbour search and which of the tied pairs vote is
    # arbitrary: the neighbour ranks are compared on the run without shared items only.
    columns = ["rank_a2p", "rank_p2a"] if shared else list(ref)
    for column in columns:
        np.testing.assert_array_equal(got[column].to_numpy(), ref[column], err_msg=column)
    direct = np.sqrt(ref["rank_a2p"] * ref["rank_p2a"])
    np.testing.assert_allclose(got["mutual_rank"], direct)
    nbr = got["nbr_mutual_rank"].to_numpy()
    if not shared:
        np.testing.assert_allclose(nbr, np.sqrt(ref["nbr_rank_a"] * ref["nbr_rank_p"]))
    n_p = len(set(run.pairs["positive_id"]) | set(run.negatives["negative_id"]))
    n_a = run.pairs["anchor_id"].nunique()
    worst = np.maximum(direct, nbr)
    np.testing.assert_allclose(got["score"], np.log(worst) / np.log(np.sqrt(n_p * n_a)), rtol=1e-9)
    np.testing.assert_array_equal(got["flagged"], worst > default_flag_rank(round(np.sqrt(n_p * n_a))))
    # best other candidate: the most similar gallery item that is neither the anchor nor one of its positives
    emb = run.embeddings.astype(np.float64)
    gal_p = sorted(set(run.pairs["positive_id"]) | set(run.negatives["negative_id"]))
    for row in got.itertuples():
        own = set(run.pairs.loc[run.pairs["anchor_id"] == row.anchor_id, "positive_id"]) | {row.anchor_id}
        options = [g for g in gal_p if g not in own]
        best = max(options, key=lambda g: emb[row.anchor_id] @ emb[g])
        assert row.best_id == best
        assert row.gap == pytest.approx(emb[row.anchor_id] @ emb[best] - row.pos_sim, abs=1e-5)


def test_prototypes_in_blocks_equal_one_pass_and_a_float64_reference() -> None:
    rng = np.random.default_rng(4)
    n, dim, k = 50, 6, 4
    side = rng.normal(size=(n, dim)).astype(np.float32)
    other = rng.normal(size=(n, dim)).astype(np.float32)
    rows = np.stack([rng.choice(np.delete(np.arange(n), i), size=k, replace=False) for i in range(n)])
    rows[rng.random((n, k)) < 0.2] = -1
    rows[5] = -1  # no neighbour found: a zero prototype
    one_pass = _prototypes(side, other, k, graph_rows=rows, block_size=n)
    blocked = _prototypes(side, other, k, graph_rows=rows, block_size=7)
    np.testing.assert_array_equal(blocked, one_pass)
    assert blocked.dtype == np.float32 and blocked.shape == (n, dim)
    for i in range(n):
        found = rows[i][rows[i] >= 0]
        mean = other[found].astype(np.float64).sum(axis=0)
        want = mean / np.linalg.norm(mean) if len(found) else np.zeros(dim)
        np.testing.assert_allclose(blocked[i], want, atol=1e-6)


def test_row_dots_in_blocks_match_whole_arrays_and_a_float64_reference() -> None:
    """The mismatch thresholds' dots: blocked, yet cast to float32 they equal one einsum over whole arrays."""
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    ids = rng.integers(0, 30, size=20)
    got = row_dots(queries, np.arange(20), emb, ids, block=6).astype(np.float32)
    np.testing.assert_array_equal(got, np.einsum("ij,ij->i", queries, emb[ids]))
    np.testing.assert_allclose(got, (queries.astype(np.float64) * emb[ids].astype(np.float64)).sum(axis=1), atol=1e-5)
    query_rows = rng.integers(0, 20, size=45)
    items = rng.integers(0, 30, size=45)
    picked = row_dots(queries, query_rows, emb, items, block=4)
    np.testing.assert_allclose(
        picked, (queries[query_rows].astype(np.float64) * emb[items].astype(np.float64)).sum(axis=1), atol=1e-5
    )


def test_best_other_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(6)
    gallery = np.array([2, 5, 7, 11, 13, 17, 19, 23, 29, 31])
    queries = np.array([5, 40, 41, 42, 43, 44])  # 5 is also a gallery item: never its own best
    k = 5
    rows = np.stack([rng.permutation(len(gallery))[:k] for _ in queries])
    rows[2, 1:] = -1
    rows[4] = -1  # nothing searched: no best
    sims = np.sort(rng.random((len(queries), k)).astype(np.float32), axis=1)[:, ::-1]
    excluded = {40: {int(gallery[rows[1, 0]]), int(gallery[rows[1, 1]])}, 41: {int(gallery[rows[2, 0]])}, 44: {99}}
    ex_q = np.array([q for q, items in excluded.items() for _ in items])
    ex_t = np.array([t for items in excluded.values() for t in items])
    got_id, got_sim = _best_other(
        np.zeros((100, 2), np.float32), queries, gallery, (ex_q, ex_t), k=k, searched=(sims, rows)
    )
    for i, q in enumerate(queries):  # the first searched item that is neither the query nor excluded for it
        options = [
            (int(gallery[r]), s)
            for r, s in zip(rows[i], sims[i], strict=True)
            if r >= 0 and int(gallery[r]) != q and int(gallery[r]) not in excluded.get(int(q), set())
        ]
        if options:
            assert (got_id[i], got_sim[i]) == options[0]
        else:
            assert got_id[i] == -1 and np.isnan(got_sim[i])
    assert got_id[2] == -1 and got_id[4] == -1 and got_id[1] == gallery[rows[1, 2]]


def test_mismatch_flags_planted_pairs_and_explains(tmp_path: Path) -> None:
    # 30 classes: each smaller than the default cut (5% of the candidates), as the docstring advises
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=400, n_classes=30, noise=0.15, mismatch_rate=0.06, seed=5)
    got = mismatched_pairs(run)
    y = truth.mismatched
    assert slow_auroc(y, got["score"].to_numpy()) > 0.97
    assert got.loc[y, "flagged"].mean() > 0.9
    assert got.loc[~y, "flagged"].mean() < 0.1
    assert got.attrs["flag_rank"] == default_flag_rank(400)
    flagged = got[got["flagged"]]
    assert flagged["reason"].str.contains(r"(?:direct|neighbours): .* \(mutual \d+ > \d+\)").all()
    assert (got["score"].between(0, 1)).all()
    # a stricter cut flags a subset
    strict = mismatched_pairs(run, flag_rank=150)
    assert (strict["flagged"] <= got["flagged"]).all()
    assert strict["flagged"].sum() < got["flagged"].sum()


# ---------------------------------------------------------------- duplicates


def test_near_duplicates_repeats_and_cross_split_leaks(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, noise=0.3, seed=2)
    clean = near_duplicate_anchors(run)
    assert len(clean) == 120 and not clean["flagged"].any()
    emb = run.embeddings.copy()
    rng = np.random.default_rng(0)
    emb[5] = emb[17] + 0.005 * rng.normal(size=emb.shape[1])  # near duplicate, same split
    emb[80] = emb[30] + 0.005 * rng.normal(size=emb.shape[1])  # near duplicate across splits
    pairs = run.pairs.copy()
    pairs["split"] = np.where(pairs["pair_id"] < 60, "train", "test")
    repeat = pairs.iloc[[3]].assign(pair_id=1000)  # same anchor and positive again
    shared = pairs.iloc[[100]].assign(pair_id=1001, split="train", positive_id=121)  # anchor 100 in both splits
    pairs = pd.concat([pairs, repeat, shared], ignore_index=True)
    write_run(
        tmp_path / "dup", manifest=run.manifest, items=run.items, embeddings=emb, pairs=pairs, negatives=run.negatives
    )
    dup = near_duplicate_anchors(load_run(tmp_path / "dup")).set_index("item_id")
    assert set(dup.index[dup["flagged"]]) == {3, 5, 17, 30, 80, 100}
    assert dup.loc[5, "other_item_id"] == 17 and dup.loc[17, "other_item_id"] == 5
    assert "near duplicate" in dup.loc[5, "reason"] and not dup.loc[5, "cross_split"]
    assert dup.loc[80, "other_item_id"] == 30 and dup.loc[80, "cross_split"]
    assert "cross-split" in dup.loc[80, "reason"] and dup.loc[80, "other_split"] == "train"
    assert dup.loc[3, "repeated_pairs"] == 1 and dup.loc[3, "score"] == 1.0
    assert dup.loc[100, "split"] == "test+train" and "several splits" in dup.loc[100, "reason"]
    ref = max(
        (float(emb[5].astype(np.float64) @ emb[j].astype(np.float64)) / np.linalg.norm(emb[5]) / np.linalg.norm(emb[j]))
        for j in range(120)
        if j != 5
    )
    assert dup.loc[5, "sim"] == pytest.approx(ref, abs=1e-5)


def test_split_column_on_items(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=60, seed=4)
    emb = run.embeddings.copy()
    emb[40] = emb[2]
    items = run.items.assign(split=np.where(np.arange(len(run.items)) < 30, "train", "valid"))
    write_run(
        tmp_path / "s", manifest=run.manifest, items=items, embeddings=emb, pairs=run.pairs, negatives=run.negatives
    )
    dup = near_duplicate_anchors(load_run(tmp_path / "s")).set_index("item_id")
    assert dup.loc[40, "cross_split"] and dup.loc[40, "other_item_id"] == 2
    assert dup.loc[40, "split"] == "valid" and dup.loc[40, "other_split"] == "train"


# ---------------------------------------------------------------- the flag table, quality, CLI


def _flip_labels(run: Run, path: Path, *, rate: float, seed: int) -> tuple[Run, np.ndarray]:
    """Rewrite the run with ``rate`` of the pair labels flipped (on the anchor and the positive item)."""
    rng = np.random.default_rng(seed)
    n_pairs = len(run.pairs)
    labels = run.items["label"].astype(int).to_numpy()[:n_pairs].copy()
    flip = rng.random(n_pairs) < rate
    labels[flip] = (labels[flip] + rng.integers(1, 10, size=flip.sum())) % 10
    items = run.items.copy()
    items["label"] = np.concatenate([labels, labels]).astype(str)
    write_run(
        path, manifest=run.manifest, items=items, embeddings=run.embeddings, pairs=run.pairs, negatives=run.negatives
    )
    return load_run(path), flip


def test_table_has_every_examined_row_sorted_within_kind(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=150, seed=6)
    result = detect_label_noise(run)
    table = result.table()
    assert list(table.columns) == list(FLAG_COLUMNS)
    counts = table["kind"].value_counts()
    assert counts["mismatched_pair"] == 150 and counts["label"] == 150 and counts["duplicate"] == 150
    assert list(dict.fromkeys(table["kind"])) == list(KINDS)
    for _kind, part in table.groupby("kind"):
        assert part["score"].is_monotonic_decreasing
    labels = table[table["kind"] == "label"]
    assert labels["given_label"].notna().all() and labels["suggested_label"].notna().all()
    assert table.loc[table["kind"] != "label", "given_label"].isna().all()
    summary = result.summary().set_index("kind")
    assert summary.loc["label", "flagged"] == int(labels["flagged"].sum())
    only = detect_label_noise(run, kinds=["duplicate"]).table()
    assert set(only["kind"]) == {"duplicate"}


def test_released_indexes_change_nothing_but_the_memo(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, seed=9)
    kept = detect_label_noise(run, search="ivf")
    assert run._cache.get("search_indexes")  # the mismatched-pair step's gallery indexes, memoised
    fresh = load_run(run.path)
    released = detect_label_noise(fresh, search="ivf", keep_indexes=False)
    assert not fresh._cache.get("search_indexes")
    pd.testing.assert_frame_equal(released.table(), kept.table())


def test_evaluate_on_truth_matches_slow_metrics(tmp_path: Path) -> None:
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=300, noise=0.4, mismatch_rate=0.08, seed=7)
    run, flip = _flip_labels(run, tmp_path / "flipped", rate=0.08, seed=1)
    result = detect_label_noise(run, kinds=["mismatched_pair", "label"])
    truth_df = pd.DataFrame({"pair_id": run.pairs["pair_id"], "mismatched": truth.mismatched, "label_flipped": flip})
    quality = evaluate_on_truth(result, truth_df).set_index(["task", "method"])
    y = truth.mismatched
    m = result.mismatch
    assert quality.loc[("mismatched_pair", "ours"), "auroc"] == pytest.approx(slow_auroc(y, m["score"].to_numpy()))
    assert quality.loc[("mismatched_pair", "ours"), "auprc"] == pytest.approx(
        slow_average_precision(y, m["score"].to_numpy())
    )
    assert quality.loc[("mismatched_pair", "pos_sim"), "auroc"] == pytest.approx(
        slow_auroc(y, -m["pos_sim"].to_numpy())
    )
    lab = result.labels
    yl = flip[lab["pair_id"].to_numpy(int)]
    base = lab["knn_disagreement"].to_numpy()
    assert quality.loc[("label", "knn_disagreement"), "auprc"] == pytest.approx(slow_average_precision(yl, base))
    assert quality.loc[("label", "ours"), "auroc"] == pytest.approx(slow_auroc(yl, lab["score"].to_numpy()))
    flagged = lab["flagged"].to_numpy()
    assert quality.loc[("label", "ours"), "recall"] == pytest.approx((flagged & yl).sum() / yl.sum())


def test_cli_writes_one_row_per_examined_pair_or_item(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=100, seed=8)
    out = tmp_path / "flags.csv"
    assert main(["label-noise", str(run.path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mismatched_pair" in printed and f"wrote 300 rows to {out}" in printed
    flags = pd.read_csv(out)
    assert list(flags.columns) == list(FLAG_COLUMNS)
    assert (flags["kind"].value_counts() == 100).all()
    assert flags["flagged"].dtype == bool
    assert main(["label-noise", str(run.path), "--kinds", "label", "--flagged-only", "--out", str(out)]) == 0
    flagged = pd.read_csv(out)
    assert set(flagged["kind"]) <= {"label"} and flagged["flagged"].all()
    assert main(["label-noise", str(run.path), "--kinds", "labels"]) == 2
    assert main(["label-noise", str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_cli_json_names_each_search_and_its_recall(tmp_path: Path, capsys: pytest.CaptureFixture, index: str) -> None:
    import json

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=100, seed=8)
    out = tmp_path / "flags.csv"
    assert main(["label-noise", str(run.path), "--index", index, "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    flags = pd.read_csv(out)
    assert report["out"] == str(out) and report["rows_written"] == len(flags) == 300
    for kind, counts in report["kinds"].items():
        assert counts == {"examined": 100, "flagged": int(flags.loc[flags["kind"] == kind, "flagged"].sum())}
    galleries = report["mismatch"]["searches"]
    assert {g["gallery"] for g in galleries} == {"positive gallery", "anchor gallery"}
    for g in galleries:
        assert g["kind"] == index and 0.0 <= g["recall"] <= 1.0
        assert g["recall"] == 1.0 if index == "exact" else f"recall@10 = {g['recall']:.3f}" in g["description"]
    assert report["shared_graphs"] and all(gr["kind"] == index for gr in report["shared_graphs"])
    assert all(0.0 <= gr["recall"] <= 1.0 for gr in report["shared_graphs"])
    assert main(["label-noise", str(run.path), "--json"]) == 2
    assert "--json needs --out" in capsys.readouterr().err


# ---------------------------------------------------------------- the digits sample's planted truth


@pytest.mark.slow
def test_quality_on_the_sample_beats_the_baselines(
    sample_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from analysis.data.truth import pair_truth

    truth = pair_truth(sample_run)
    assert truth is not None
    result = detect_label_noise(sample_run, kinds=["mismatched_pair", "label"])
    q = evaluate_on_truth(result, truth).set_index(["task", "method"])
    print("\n" + q.to_string(float_format="%.3f"))
    for task, base in (("mismatched_pair", "pos_sim"), ("label", "knn_disagreement")):
        for metric in ("auroc", "auprc"):
            assert q.loc[(task, "ours"), metric] > q.loc[(task, base), metric], (task, metric)
    assert q.loc[("mismatched_pair", "ours"), "auroc"] > 0.9
    assert q.loc[("label", "ours"), "auroc"] > 0.9
    assert q.loc[("mismatched_pair", "ours"), "recall"] > 0.8
    assert q.loc[("label", "ours"), "recall"] > 0.5
    # the CLI prints the same figures with --evaluate
    out = tmp_path / "flags.csv"
    args = ["label-noise", str(sample_run.path), "--kinds", "mismatched_pair,label", "--evaluate", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "auroc" in printed and "knn_disagreement" in printed
    assert f"{q.loc[('mismatched_pair', 'ours'), 'auroc']:.3f}" in printed


@pytest.mark.parametrize("n_pairs", [1, 2, 3])
def test_tiny_runs_get_one_row_per_pair_and_anchor(tmp_path: Path, n_pairs: int) -> None:
    rng = np.random.default_rng(n_pairs)
    items = pd.DataFrame(
        {
            "item_id": range(2 * n_pairs),
            "modality": ["image"] * n_pairs + ["text"] * n_pairs,
            "content": [f"c{i}" for i in range(2 * n_pairs)],
            "label": ["a", "b", "a"][:n_pairs] * 2,
        }
    )
    pairs = pd.DataFrame(
        {"pair_id": range(n_pairs), "anchor_id": range(n_pairs), "positive_id": range(n_pairs, 2 * n_pairs)}
    )
    negatives = pd.DataFrame(columns=["pair_id", "negative_id", "source"])
    emb = rng.normal(size=(2 * n_pairs, 4))
    write_run(tmp_path / "r", manifest={}, items=items, embeddings=emb, pairs=pairs, negatives=negatives)
    result = detect_label_noise(load_run(tmp_path / "r"))
    counts = result.table()["kind"].value_counts()
    assert counts["mismatched_pair"] == n_pairs and counts["duplicate"] == n_pairs
    assert "label" not in counts  # no class has two labelled anchors and another class to tell it from
    assert result.labels.attrs["skipped"] == n_pairs
    assert result.mismatch["score"].between(0, 1).all()
