"""Mining-filter preview: rule masks against a per-negative loop, and the sentence-transformers export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import NegScopeError
from analysis.metrics.mining_filter import RULES, FilterSettings, apply_filter, to_sentence_transformers
from analysis.runs.candidates import Candidates, build_candidates
from tests.synthetic import make_random_run


def reference_rules(pos: float, sims: list[float], s: FilterSettings) -> list[dict[str, bool]]:
    """Per listed negative (in listed order): which rules drop it, by the documented definitions (float64)."""
    order = sorted(range(len(sims)), key=lambda j: (-sims[j], j))
    rank = {j: r for r, j in enumerate(order)}
    out = []
    for j, x in enumerate(sims):
        out.append(
            {
                "rank_window": rank[j] < s.range_min or (s.range_max is not None and rank[j] >= s.range_max),
                "max_score": s.max_score is not None and x > s.max_score,
                "absolute_margin": s.absolute_margin is not None and x > pos - s.absolute_margin,
                "relative_margin": s.relative_margin is not None and x > pos - abs(pos) * s.relative_margin,
            }
        )
    return out


def random_candidates(seed: int, p: int = 40, k: int = 6) -> Candidates:
    """Candidates with negative pos_sim on many pairs and a ragged number of negatives."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.6, 0.9, size=p).astype(np.float32)
    sim = rng.uniform(-0.8, 0.95, size=(p, k)).astype(np.float32)
    n = rng.integers(0, k + 1, size=p)
    mask = np.arange(k)[None, :] < n[:, None]
    ids = np.where(mask, rng.integers(100, 200, size=(p, k)), -1)
    return Candidates(
        pair_ids=np.arange(p),
        anchor_ids=np.arange(p),
        positive_ids=np.arange(p) + 50,
        pos_sim=pos,
        neg_ids=ids,
        neg_sim=np.where(mask, sim, np.nan).astype(np.float32),
        neg_source=np.where(mask, rng.integers(0, 3, size=(p, k)), -1).astype(np.int8),
    )


SETTINGS = [
    FilterSettings(),
    FilterSettings(range_min=1, range_max=4),
    FilterSettings(max_score=0.5),
    FilterSettings(absolute_margin=0.1),
    FilterSettings(relative_margin=0.2),
    FilterSettings(range_min=0, range_max=3, max_score=0.7, absolute_margin=0.05, relative_margin=0.1),
    FilterSettings(absolute_margin=-0.2, relative_margin=0.0),
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_apply_filter_matches_reference(settings: FilterSettings, seed: int):
    cands = random_candidates(seed)
    result = apply_filter(cands, settings)
    counts = dict.fromkeys(RULES, 0)
    sole = dict.fromkeys(RULES, 0)
    n_kept = 0
    kept_per_pair = []
    for i in range(len(cands.pos_sim)):
        cols = np.flatnonzero(cands.mask[i])
        sims = [float(cands.neg_sim[i, j]) for j in cols]
        ref = reference_rules(float(cands.pos_sim[i]), sims, settings)
        kept_here = 0
        for j, rules in zip(cols, ref, strict=True):
            for rule in RULES:
                assert result.dropped_by[rule][i, j] == rules[rule], (i, j, rule)
                counts[rule] += rules[rule]
                sole[rule] += rules[rule] and sum(rules.values()) == 1
            keep = not any(rules.values())
            assert result.kept[i, j] == keep
            kept_here += keep
        n_kept += kept_here
        kept_per_pair.append(kept_here)
        assert not result.kept[i, ~cands.mask[i]].any()
    assert result.drop_counts() == counts
    assert result.sole_drop_counts() == sole
    assert result.n_kept == n_kept and result.n_candidates == int(cands.mask.sum())
    for k in (1, 3, 6):
        assert result.pairs_below(k) == sum(n < k for n in kept_per_pair)


def test_relative_margin_is_sign_safe():
    # pos_sim = -0.4, m = 0.5: threshold pos - |pos| m = -0.6 (below the positive); the naive pos (1 - m) = -0.2
    # would keep negatives scoring above the positive
    cands = random_candidates(0, p=1, k=3)
    cands = Candidates(
        pair_ids=cands.pair_ids,
        anchor_ids=cands.anchor_ids,
        positive_ids=cands.positive_ids,
        pos_sim=np.array([-0.4], dtype=np.float32),
        neg_ids=np.array([[1, 2, 3]]),
        neg_sim=np.array([[-0.3, -0.5, -0.7]], dtype=np.float32),
        neg_source=np.zeros((1, 3), dtype=np.int8),
    )
    result = apply_filter(cands, FilterSettings(relative_margin=0.5))
    np.testing.assert_array_equal(result.kept, [[False, False, True]])


def test_settings_validation():
    with pytest.raises(NegScopeError):
        FilterSettings(range_min=-1)
    with pytest.raises(NegScopeError):
        FilterSettings(range_min=3, range_max=2)


@pytest.mark.parametrize("fmt", ["n-tuple", "triplet"])
def test_sentence_transformers_export(tmp_path: Path, fmt: str):
    run = make_random_run(tmp_path / "run", n_pairs=50, k_max=6, seed=8)
    cands = build_candidates(run)
    result = apply_filter(cands, FilterSettings(range_min=1, absolute_margin=0.0))
    content = run.items["content"].astype(str).to_numpy()
    emb = run.embeddings.astype(np.float64)
    k = 2
    table = to_sentence_transformers(run, cands, result.kept, num_negatives=k, output_format=fmt)
    expected_rows = []
    for i in range(len(cands.pair_ids)):
        a, p = int(cands.anchor_ids[i]), int(cands.positive_ids[i])
        kept_ids = [int(cands.neg_ids[i, j]) for j in np.flatnonzero(result.kept[i])]
        kept_ids.sort(key=lambda n: -(emb[a] @ emb[n]))
        if fmt == "n-tuple":
            if len(kept_ids) >= k:
                expected_rows.append([content[a], content[p], *[content[n] for n in kept_ids[:k]]])
        else:
            expected_rows.extend([content[a], content[p], content[n]] for n in kept_ids[:k])
    columns = (
        ["anchor", "positive", "negative_1", "negative_2"] if fmt == "n-tuple" else ["anchor", "positive", "negative"]
    )
    expected = pd.DataFrame(expected_rows, columns=columns)
    assert list(table.columns) == columns
    assert len(expected) > 5
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_dtype=False)
    if fmt == "n-tuple":
        assert len(table) == len(cands.pair_ids) - result.pairs_below(k)


def test_export_with_nothing_kept_and_bad_options(tmp_path: Path):
    run = make_random_run(tmp_path / "run", seed=8)
    cands = build_candidates(run)
    kept = np.zeros_like(cands.mask)
    table = to_sentence_transformers(run, cands, kept, num_negatives=3)
    assert list(table.columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"] and table.empty
    assert to_sentence_transformers(run, cands, kept, num_negatives=3, output_format="triplet").empty
    with pytest.raises(NegScopeError):
        to_sentence_transformers(run, cands, kept, num_negatives=0)
    with pytest.raises(NegScopeError):
        to_sentence_transformers(run, cands, kept, num_negatives=1, output_format="labeled-pair")
