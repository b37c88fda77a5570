"""Label-noise decisions in the review store, and their exports (corrected labels, pairs minus mismatched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.data.load import load_dataset
from analysis.detectors.duplicates import near_duplicate_anchors
from analysis.errors import NegScopeError
from analysis.review.label_export import (
    clean_pairs,
    corrected_labels,
    duplicate_pairs_to_drop,
    label_decision,
    label_decisions,
    pair_decision,
    pair_decisions,
)
from analysis.review.store import ReviewStore
from analysis.runs.folder import Run, load_run, write_run

TABLE = pd.DataFrame(
    {
        "id": [10, 11, 12, 13, 14],
        "anchor": ["a cat", "a dog", "a bird", "a fish", "a cow"],
        "positive": ["cat photo", "dog photo", "bird photo", "car photo", "cow photo"],
        "negative_1": ["dog photo", "cat photo", "fish photo", "cat photo", "bird photo"],
        "negative_2": ["bird photo", "fish photo", "cat photo", "dog photo", "cat photo"],
        "label": ["cat", "dog", "bird", "fish", "dog"],
    }
)


@pytest.fixture
def dataset_run(tmp_path: Path) -> Run:
    """A run folder built from a real dataset file (random embeddings: only the tables matter here)."""
    folder = tmp_path / "data"
    folder.mkdir()
    TABLE.to_csv(folder / "pairs.csv", index=False)
    ds = load_dataset(folder / "pairs.csv")
    emb = np.random.default_rng(0).normal(size=(len(ds.items), 8)).astype(np.float32)
    manifest = {"dataset_hash": ds.dataset_hash, "dataset_root": str(ds.root)}
    write_run(
        tmp_path / "run", manifest=manifest, items=ds.items, embeddings=emb, pairs=ds.pairs, negatives=ds.negatives
    )
    return load_run(tmp_path / "run")


def _item(run: Run, content: str) -> int:
    return int(run.items.index[run.items["content"] == content][0])


def test_decisions_are_keyed_by_content_and_latest_wins(dataset_run: Run, tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "reviews.sqlite")
    store.record(pair_decision(dataset_run, 13, "ok", "ann"))
    store.record(pair_decision(dataset_run, 13, "mismatched", "bea"))
    store.record(pair_decision(dataset_run, 11, "unsure", "ann"))
    got = pair_decisions(dataset_run, store).sort_values("pair_id")
    assert got[["pair_id", "decision", "annotator"]].values.tolist() == [
        [11, "unsure", "ann"],
        [13, "mismatched", "bea"],
    ]
    row = store.latest(dataset_run.dataset_hash, kind="pair").set_index("decision").loc["mismatched"]
    assert row["anchor_key"] == dataset_run.items["key"].iloc[_item(dataset_run, "a fish")]
    assert row["candidate_key"] == dataset_run.items["key"].iloc[_item(dataset_run, "car photo")]
    with pytest.raises(NegScopeError):
        pair_decision(dataset_run, 99, "ok", "ann")
    with pytest.raises(NegScopeError):
        label_decision(dataset_run, 10_000, "ok", "ann")
    with pytest.raises(NegScopeError):
        store.record(pair_decision(dataset_run, 11, "mismatched", "   "))  # no annotator, refused


def test_corrected_labels_export(dataset_run: Run, tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "reviews.sqlite")
    cow = _item(dataset_run, "a cow")
    fish = _item(dataset_run, "a fish")
    store.record(label_decision(dataset_run, cow, "relabel", "ann", label="cow"))
    store.record(label_decision(dataset_run, fish, "relabel", "ann", label="shark"))
    store.record(label_decision(dataset_run, fish, "ok", "bea"))  # later: the fish label is fine after all
    decided = label_decisions(dataset_run, store)
    assert sorted(decided["item_id"]) == sorted([cow, fish])
    fixed = corrected_labels(dataset_run, decided)
    assert fixed[["item_id", "content", "given_label", "corrected_label", "annotator"]].values.tolist() == [
        [cow, "a cow", "dog", "cow", "ann"]
    ]
    assert fixed["time"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()


def test_pairs_minus_mismatched_load_back_as_a_dataset(dataset_run: Run, tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "reviews.sqlite")
    store.record(pair_decision(dataset_run, 13, "mismatched", "ann"))
    store.record(pair_decision(dataset_run, 10, "ok", "ann"))
    store.record(label_decision(dataset_run, _item(dataset_run, "a cow"), "relabel", "ann", label="cow"))
    cleaned = clean_pairs(
        dataset_run,
        pair_decisions=pair_decisions(dataset_run, store),
        label_decisions=label_decisions(dataset_run, store),
    )
    expected = TABLE[TABLE["id"] != 13].reset_index(drop=True).copy()
    expected.loc[expected["id"] == 14, "label"] = "cow"
    pd.testing.assert_frame_equal(cleaned.astype(str), expected.astype(str))
    # round trip: saved beside the dataset, it reads back with the same pairs and labels
    out = dataset_run.dataset_root / "pairs-clean.csv"
    cleaned.to_csv(out, index=False)
    back = load_dataset(out)
    assert back.pairs["pair_id"].tolist() == [10, 11, 12, 14]
    anchors = back.items["content"].to_numpy()[back.pairs["anchor_id"].to_numpy()]
    assert anchors.tolist() == ["a cat", "a dog", "a bird", "a cow"]
    labels = back.items["label"].to_numpy()[back.pairs["anchor_id"].to_numpy()]
    assert labels.tolist() == ["cat", "dog", "bird", "cow"]
    assert (back.negatives["source"] == "given").sum() == 8


def test_duplicates_to_drop_keep_one_copy(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(8, 6)).astype(np.float32)
    emb[3] = emb[1] + 1e-4  # anchors 1 and 3 are near duplicates
    items = pd.DataFrame(
        {"item_id": range(8), "modality": "text", "content": [f"t{i}" for i in range(8)], "label": [None] * 8}
    )
    pairs = pd.DataFrame({"pair_id": [0, 1, 2, 3, 4], "anchor_id": [0, 1, 2, 3, 0], "positive_id": [4, 5, 6, 7, 4]})
    negatives = pd.DataFrame(columns=["pair_id", "negative_id", "source"])
    write_run(tmp_path / "r", manifest={}, items=items, embeddings=emb, pairs=pairs, negatives=negatives)
    run = load_run(tmp_path / "r")
    dups = near_duplicate_anchors(run)
    drop = duplicate_pairs_to_drop(dups, run.pairs)
    assert sorted(drop) == [3, 4]  # pair 4 repeats pair 0; anchor 3 is the later copy of anchor 1
    store = ReviewStore(tmp_path / "empty.sqlite")
    cleaned = clean_pairs(
        run, pair_decisions=pair_decisions(run, store), label_decisions=label_decisions(run, store), drop_pair_ids=drop
    )
    assert cleaned["id"].tolist() == [0, 1, 2] and "label" not in cleaned.columns
