"""The sample's checkpoints along training: small, loadable, ordered, and compared on the recorded truth."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.compare.align import align_runs
from analysis.compare.deltas import compare_runs
from analysis.compare.pairs import false_negatives_across
from analysis.compare.sample import SAMPLE_CHECKPOINTS, embed_sample_checkpoints
from analysis.data.truth import negative_truth
from analysis.embedding.dual_encoder import DualEncoder
from analysis.runs.folder import load_run


@pytest.mark.slow
def test_checkpoints_are_small_and_share_the_final_models_architecture() -> None:
    final = DualEncoder.from_folder(SAMPLE_CHECKPOINTS[-1][1])
    for _, folder in SAMPLE_CHECKPOINTS[:-1]:
        size = sum(p.stat().st_size for p in folder.iterdir())
        assert size < 600 * 1024
        model = DualEncoder.from_folder(folder)
        assert model.config.to_dict() == final.config.to_dict()
        assert 0.005 < model.tau < 0.1


@pytest.mark.slow
def test_sample_comparison_follows_training_and_the_recorded_false_negatives() -> None:
    runs = [load_run(path) for _, path in embed_sample_checkpoints()]
    al = align_runs(runs, labels=[label for label, _ in SAMPLE_CHECKPOINTS])
    comp = compare_runs(al)
    m = comp.metrics
    # training improves retrieval and AUROC and learns a lower temperature, epoch after epoch
    for key in ("auroc", "recall_at_1", "reverse_recall_at_1", "mrr_at_10"):
        assert m[key].is_monotonic_increasing, key
    assert m["tau"].is_monotonic_decreasing
    table = false_negatives_across(comp, use_review=False)
    truth = negative_truth(runs[0])
    fn = truth[truth["is_false_negative"].astype(bool)]
    anchor_of = dict(zip(runs[0].pairs["pair_id"], runs[0].pairs["anchor_id"], strict=True))
    expected = {(int(anchor_of[p]), int(n)) for p, n in zip(fn["pair_id"], fn["negative_id"], strict=True)}
    assert set(zip(table["anchor_id"], table["candidate_id"], strict=True)) == expected
    assert (table["known"] == "truth").all()
    for r, (label, _) in enumerate(SAMPLE_CHECKPOINTS):
        emb = al.runs[r].embeddings.astype(np.float64)[al.item_index[r]]
        dots = np.sum(emb[table["anchor_id"]] * emb[table["candidate_id"]], axis=1)
        np.testing.assert_allclose(table[f"sim_{label}"], dots, atol=1e-6)
