"""The neighbourhood-modes evidence (``other_mode``): planted two-group neighbourhoods and a slow float64
reference of the two-mode split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.detectors.false_negatives import (
    REASON_TEXT,
    Settings,
    Weights,
    find_false_negatives,
    neighbourhood_modes,
)
from analysis.runs.folder import load_run, write_run
from tests.synthetic import make_synthetic_run


def _ref_modes(e: np.ndarray, members: list[int], iterations: int = 10, min_members: int = 2):
    """Plain-Python spherical 2-means of ``members`` (the positive first): (centre P, centre O, separation)
    or None without two modes."""
    x = [np.asarray(e[i], dtype=np.float64) for i in members]

    def unit(v: np.ndarray) -> np.ndarray:
        n = float(np.sqrt(sum(float(t) * float(t) for t in v)))
        return v / n if n > 1e-12 else v * 0.0

    far = min(range(1, len(x)), key=lambda j: (float(x[j] @ x[0]), j))
    c_p, c_o = x[0], x[far]
    other = [False] * len(x)
    for _ in range(iterations):
        other = [j > 0 and float(x[j] @ c_o) > float(x[j] @ c_p) for j in range(len(x))]
        c_p = unit(sum((x[j] for j in range(len(x)) if not other[j]), np.zeros_like(x[0])))
        c_o = unit(sum((x[j] for j in range(len(x)) if other[j]), np.zeros_like(x[0])))
    if sum(other) < min_members or len(x) - sum(other) < min_members:
        return None
    within, between = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i != j:
                (within if other[i] == other[j] else between).append(float(x[i] @ x[j]))
    return c_p, c_o, sum(within) / len(within) - sum(between) / len(between)


def _planted_run(folder: Path):
    """One anchor ``a`` between two separated groups of texts (around e0 with its positive, and around e1),
    plus background anchors and texts elsewhere; ``a``'s given negatives are one text of each group and
    background texts."""
    rng = np.random.default_rng(0)
    dim = 16

    def near(axis: int, n: int, noise: float = 0.08) -> np.ndarray:
        v = np.zeros((n, dim))
        v[:, axis] = 1.0
        return v + noise * rng.standard_normal((n, dim))

    anchor = np.zeros((1, dim))
    anchor[0, :2] = 1.0
    group_p = near(0, 5)  # row 0 is the positive
    group_o = near(1, 5)
    bg_anchors = np.eye(dim)[2:14] + 0.3 * rng.standard_normal((12, dim))
    bg_texts = np.concatenate([near(2 + i % 12, 1, 0.15) for i in range(36)])
    emb = np.concatenate([anchor, bg_anchors, group_p, group_o, bg_texts])
    n_anchor = 1 + len(bg_anchors)
    p0 = n_anchor
    o0 = p0 + len(group_p)
    t0 = o0 + len(group_o)
    modality = ["image"] * n_anchor + ["text"] * (len(emb) - n_anchor)
    items = pd.DataFrame(
        {
            "item_id": np.arange(len(emb)),
            "modality": modality,
            "content": [f"item {i}" for i in range(len(emb))],
            "key": [f"k{i}" for i in range(len(emb))],
            "label": None,
        }
    )
    pairs = [(0, 0, p0)] + [(i, i, t0 + 3 * (i - 1)) for i in range(1, n_anchor)]
    pairs = pd.DataFrame(pairs, columns=["pair_id", "anchor_id", "positive_id"])
    negs = [(0, o0 + 1, "given"), (0, p0 + 1, "given")] + [(0, t0 + 3 * i + 1, "given") for i in range(6)]
    negs += [(i, t0 + 3 * ((i + 2) % 12) + 2, "given") for i in range(1, n_anchor)]
    negatives = pd.DataFrame(negs, columns=["pair_id", "negative_id", "source"])
    write_run(
        folder,
        manifest={"dataset_hash": "planted-modes", "model_kind": "precomputed", "logit_scale": 20.0},
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=negatives,
    )
    return load_run(folder), o0 + 1, p0 + 1


def test_a_candidate_in_the_other_mode_gets_the_score(tmp_path: Path) -> None:
    run, in_other, in_positives = _planted_run(tmp_path / "run")
    settings = Settings(mine_k=0, rank_depth=20, mutual_k=8, n_clusters=2)
    plain = find_false_negatives(run, settings=settings).set_index(["pair_id", "candidate_id"])
    other, same = plain.loc[(0, in_other)], plain.loc[(0, in_positives)]
    # the anchor's 8 nearest texts are the two groups (less the positive): two well separated modes
    assert other["other_mode"] > 0.5 and same["other_mode"] < 0
    background = plain.loc[0].drop([in_other, in_positives])
    assert background["other_mode"].abs().max() < other["other_mode"]
    weighted = find_false_negatives(run, settings=Settings(**{**settings.__dict__, "weights": Weights(other_mode=2.0)}))
    weighted = weighted.set_index(["pair_id", "candidate_id"])
    rise = weighted["logit"] - plain["logit"]
    assert rise.loc[(0, in_other)] >= 1.0 and rise.loc[(0, in_positives)] <= 0.0
    assert REASON_TEXT["other_mode"] in weighted.loc[(0, in_other), "reason"]
    assert REASON_TEXT["other_mode"] not in weighted.loc[(0, in_positives), "reason"]
    # the default weights leave the score unchanged (weight 0 in both presets)
    assert Weights().other_mode == 0.0


def test_two_modes_match_a_slow_reference() -> None:
    rng = np.random.default_rng(3)
    e = rng.standard_normal((60, 6))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    positives = rng.integers(0, 60, 25)
    neighbours = np.array([rng.choice(np.setdiff1d(np.arange(60), [p]), 7, replace=False) for p in positives])
    neighbours[3, 5:] = -1  # fewer neighbours
    neighbours[4, 1:] = -1  # one neighbour: no two modes
    c_p, c_o, sep = neighbourhood_modes(e.astype(np.float32), positives, neighbours, block=7)
    for b in range(len(positives)):
        members = [int(positives[b]), *[int(i) for i in neighbours[b] if i >= 0]]
        ref = _ref_modes(e.astype(np.float32).astype(np.float64), members)
        if ref is None:
            assert np.isnan(sep[b]) and np.isnan(c_p[b]).all()
            continue
        np.testing.assert_allclose(c_p[b], ref[0], atol=1e-9)
        np.testing.assert_allclose(c_o[b], ref[1], atol=1e-9)
        assert sep[b] == pytest.approx(ref[2], abs=1e-9)
    assert np.isnan(sep[4])


def test_other_mode_matches_a_slow_reference(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, k=4, noise=0.5, seed=7)
    settings = Settings(mine_k=3, rank_depth=30, mutual_k=6, n_clusters=6)
    df = find_false_negatives(run, settings=settings)
    e = run.embeddings.astype(np.float64)
    modality = run.items["modality"].to_numpy()
    positives = run.pairs.groupby("anchor_id")["positive_id"].agg(set).to_dict()
    checked = 0
    for r in df.sample(80, random_state=1).itertuples(index=False):
        a, p, c = int(r.anchor_id), int(r.positive_id), int(r.candidate_id)
        if modality[c] != modality[p]:
            assert np.isnan(r.other_mode)
            continue
        corpus = [i for i in np.flatnonzero(modality == modality[p]) if i != a and i not in positives[a]]
        near = sorted(corpus, key=lambda i: (-(e[a] @ e[i]), i))[: settings.mutual_k]
        ref = _ref_modes(run.embeddings.astype(np.float64), [p, *near])
        if ref is None:
            assert np.isnan(r.other_mode)
            continue
        expected = max(ref[2], 0.0) * (float(e[c] @ ref[1]) - float(e[c] @ ref[0]))
        assert r.other_mode == pytest.approx(expected, abs=1e-6)
        checked += 1
    assert checked > 40
