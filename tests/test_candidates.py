"""build_candidates against a slow loop over the negatives table, in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs.candidates import build_candidates
from analysis.runs.folder import NEGATIVE_SOURCES, load_run, write_run


def _random_run(path: Path, seed: int):
    rng = np.random.default_rng(seed)
    n, p = 40, 15
    items = pd.DataFrame(
        {
            "item_id": np.arange(n),
            "modality": "text",
            "content": [f"t{i}" for i in range(n)],
            "label": pd.array([None] * n, dtype="string"),
        }
    )
    pairs = pd.DataFrame(
        {
            "pair_id": rng.permutation(100)[:p] + 1000,
            "anchor_id": rng.integers(0, n, p),
            "positive_id": rng.integers(0, n, p),
        }
    )
    rows = []
    for pid in pairs["pair_id"]:
        for _ in range(rng.integers(0, 6)):  # ragged: some pairs have no negatives
            rows.append((pid, int(rng.integers(0, n)), NEGATIVE_SOURCES[rng.integers(0, 3)]))
    negs = pd.DataFrame(rows, columns=["pair_id", "negative_id", "source"]).sample(frac=1, random_state=seed)
    write_run(path, manifest={}, items=items, embeddings=rng.normal(size=(n, 6)), pairs=pairs, negatives=negs)
    return load_run(path)


def test_matches_slow_reference(tmp_path: Path) -> None:
    for seed in range(3):
        run = _random_run(tmp_path / str(seed), seed)
        cand = build_candidates(run)
        emb = run.embeddings.astype(np.float64)
        for row, pair in enumerate(run.pairs.itertuples()):
            assert np.isclose(cand.pos_sim[row], emb[pair.anchor_id] @ emb[pair.positive_id], atol=1e-6)
            mine = run.negatives[run.negatives["pair_id"] == pair.pair_id]
            got = cand.neg_ids[row][cand.mask[row]]
            assert list(got) == list(mine["negative_id"])  # file order kept within a pair
            ref = np.array([emb[pair.anchor_id] @ emb[j] for j in mine["negative_id"]])
            np.testing.assert_allclose(cand.neg_sim[row][cand.mask[row]], ref, atol=1e-6)
            assert list(cand.source_names()[row][cand.mask[row]]) == list(mine["source"])
            assert np.isnan(cand.neg_sim[row][~cand.mask[row]]).all()


def test_source_filter_and_replacement_embeddings(tmp_path: Path) -> None:
    run = _random_run(tmp_path / "r", 7)
    given = build_candidates(run, sources=("given",))
    assert set(given.source_names()[given.mask]) <= {"given"}
    assert given.mask.sum() == (run.negatives["source"] == "given").sum()
    flipped = build_candidates(run, embeddings=-run.embeddings)
    np.testing.assert_allclose(flipped.pos_sim, build_candidates(run).pos_sim, atol=1e-6)
