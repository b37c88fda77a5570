"""The one decision reader (adjudication rules, per-annotator state, undo), content-only keys, and labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.data.tables import MISSING_LABEL_TEXTS, content_hash, normalise_label
from analysis.errors import NegScopeError
from analysis.review.corrected import build_corrected
from analysis.review.decisions import (
    DECISION_COLUMNS,
    RULES,
    annotator_decisions,
    current_decisions,
    dataset_keys,
    negative_decisions,
    run_decisions,
)
from analysis.review.rows import negative_row
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import load_run, write_run
from tests.synthetic import make_synthetic_run

H = "content-hash"


def _d(anchor: str, decision: str, who: str, *, kind: str = "negative", cand: str = "c", label: str | None = None):
    return Decision(H, kind, anchor, cand if kind != "label" else "", decision, who, label=label)


def _table(frame: pd.DataFrame) -> dict[str, tuple]:
    return {a: (d, lbl, who, votes, n) for a, d, lbl, who, votes, n in frame[
        ["anchor_key", "decision", "label", "annotator", "votes", "n_annotators"]].itertuples(index=False)}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    """Three annotators on four keys: a 2-1 majority, a unanimous key, a tie, and disagreeing relabels."""
    s = ReviewStore(tmp_path / "r.sqlite", synchronous="NORMAL")
    s.record_many(
        [
            _d("k1", "false_negative", "ann"),
            _d("k1", "negative", "bob"),
            _d("k1", "false_negative", "cat"),
            _d("k2", "negative", "ann"),
            _d("k2", "negative", "bob"),
            _d("k3", "false_negative", "ann"),
            _d("k3", "unsure", "bob"),
            _d("k4", "relabel", "ann", kind="label", label="3"),
            _d("k4", "relabel", "bob", kind="label", label="4"),
        ]
    )
    s.record(_d("k1", "negative", "bob", cand="other"))  # another key: never mixed with k1
    return s


def test_the_rules_on_a_hand_made_log(store: ReviewStore) -> None:
    assert RULES == ("latest", "majority", "adjudicator", "unanimous")
    latest = current_decisions(store, H, kind="negative")
    assert list(latest.columns) == list(DECISION_COLUMNS)
    assert len(latest) == 4  # k1, k2, k3 and (k1, other)
    latest = latest[latest["candidate_key"] == "c"]
    assert _table(latest) == {
        "k1": ("false_negative", "", "cat", 2, 3),
        "k2": ("negative", "", "bob", 2, 2),
        "k3": ("unsure", "", "bob", 1, 2),
    }
    majority = current_decisions(store, H, rule="majority")
    got = _table(majority[majority["candidate_key"].isin(["c", ""])])
    assert got["k1"] == ("false_negative", "", "cat", 2, 3)
    assert got["k3"] == ("unsure", "", "bob", 1, 2)  # a tie goes to the later decision
    assert got["k4"] == ("relabel", "4", "bob", 1, 2)  # two relabels to different classes disagree
    unanimous = current_decisions(store, H, rule="unanimous")
    assert set(unanimous["anchor_key"]) == {"k2", "k1"}  # k1 only through its other candidate
    assert _table(unanimous[unanimous["candidate_key"] == "c"]) == {"k2": ("negative", "", "bob", 2, 2)}
    judged = current_decisions(store, H, rule="adjudicator", adjudicator="bob")
    got = _table(judged[judged["candidate_key"].isin(["c", ""])])
    assert got["k1"][0] == "negative" and got["k1"][2] == "bob"
    assert got["k4"] == ("relabel", "4", "bob", 1, 2)
    only_ann = current_decisions(store, H, rule="adjudicator", adjudicator="dan")  # no decisions: latest
    pd.testing.assert_frame_equal(only_ann, current_decisions(store, H))


def test_bad_rule_kind_or_missing_adjudicator_are_refused(store: ReviewStore) -> None:
    with pytest.raises(NegScopeError, match="rule"):
        current_decisions(store, H, rule="loudest")
    with pytest.raises(NegScopeError, match="adjudicator"):
        current_decisions(store, H, rule="adjudicator")
    with pytest.raises(NegScopeError, match="kind"):
        current_decisions(store, H, kind="nonsense")
    assert current_decisions(store, "other-dataset").empty


def test_per_annotator_state_replays_undo(tmp_path: Path) -> None:
    s = ReviewStore(tmp_path / "r.sqlite", synchronous="NORMAL")
    s.record(_d("k1", "negative", "ann"))
    s.record(_d("k1", "false_negative", "ann"))
    s.record(_d("k2", "false_negative", "ann"))
    s.record(_d("k2", "negative", "bob"))
    # ann's latest decision is k2 (bob decided k2 since): the undo keeps bob's, ann has no decision on k2
    assert s.undo(H, annotator="ann").decision == "negative"
    per = annotator_decisions(s, H)
    assert set(zip(per["anchor_key"], per["annotator"], per["decision"], strict=True)) == {
        ("k1", "ann", "false_negative"),
        ("k2", "bob", "negative"),
    }
    # the next undo walks back to ann's own earlier decision on k1
    assert s.undo(H, annotator="ann").decision == "negative"
    per = annotator_decisions(s, H)
    assert set(zip(per["anchor_key"], per["annotator"], per["decision"], strict=True)) == {
        ("k1", "ann", "negative"),
        ("k2", "bob", "negative"),
    }
    assert _table(current_decisions(s, H, rule="unanimous")) == {
        "k1": ("negative", "", "ann", 1, 1),
        "k2": ("negative", "", "bob", 1, 1),
    }
    s.record(_d("k1", "cleared", "ann"))
    assert set(current_decisions(s, H)["anchor_key"]) == {"k2"}


def test_rows_under_the_legacy_hash_are_read(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=30, k=3)
    assert dataset_keys(run) == (run.content_hash, run.dataset_hash)
    store = ReviewStore(tmp_path / "r.sqlite")
    neg = run.negatives.merge(run.pairs, on="pair_id").iloc[:2]
    keys = run.item_keys
    old = Decision(run.dataset_hash, "negative", keys[neg.anchor_id.iloc[0]], keys[neg.negative_id.iloc[0]],
                   "false_negative", "ann")  # fmt: skip
    store.record(old)  # a database written before the content hash
    store.record(negative_row(run, int(neg.anchor_id.iloc[1]), int(neg.negative_id.iloc[1]), "negative", "bob"))
    got = negative_decisions(run, run_decisions(run, store))
    assert got[["anchor_id", "candidate_id", "decision"]].values.tolist() == [
        [int(neg.anchor_id.iloc[0]), int(neg.negative_id.iloc[0]), "false_negative"],
        [int(neg.anchor_id.iloc[1]), int(neg.negative_id.iloc[1]), "negative"],
    ]
    # undo through both hashes writes under the content hash
    assert store.undo(dataset_keys(run), annotator="ann").decision == "cleared"
    assert store.history(run.content_hash)["note"].str.startswith("undo of #").sum() == 1
    assert negative_decisions(run, run_decisions(run, store))["decision"].tolist() == ["negative"]


def test_content_hash_ignores_in_batch_negatives_and_checkpoint(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=30, k=3)
    base = content_hash(run.items, run.pairs, run.negatives)
    assert run.content_hash == base  # a run without the manifest key computes the same value
    in_batch = pd.DataFrame({"pair_id": [0, 1], "negative_id": [40, 41], "source": "in_batch"})
    more = pd.concat([run.negatives, in_batch], ignore_index=True)
    assert content_hash(run.items, run.pairs, more) == base
    relabelled = run.items.assign(label="x")
    assert content_hash(relabelled, run.pairs, run.negatives) == base
    changed = run.negatives.copy()
    changed.loc[0, "negative_id"] = int(changed.loc[1, "negative_id"]) + 1
    assert content_hash(run.items, run.pairs, changed) != base
    swapped = run.pairs.assign(positive_id=np.roll(run.pairs["positive_id"].to_numpy(), 1))
    assert content_hash(run.items, swapped, run.negatives) != base


@pytest.mark.slow
def test_decisions_survive_re_embedding_with_another_batch_size(tmp_path: Path) -> None:
    from analysis.embedding.engine import embed_to_run
    from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA

    data = tmp_path / "data"
    data.mkdir()
    table = pd.read_csv(SAMPLE_DATA, dtype=str, keep_default_na=False).head(24)
    negatives = [c for c in table.columns if c.startswith("negative_")]
    table.loc[12:, negatives] = ""  # half the pairs get in-batch negatives, which depend on the batch size
    table.to_csv(data / "pairs.csv", index=False)
    for image in table["anchor"]:
        (data / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_DATA.parent / image, data / image)
    run_a = load_run(embed_to_run(data / "pairs.csv", SAMPLE_CHECKPOINT, out=tmp_path / "a", dataset_batch_size=4,
                                  device="cpu"))  # fmt: skip
    run_b = load_run(embed_to_run(data / "pairs.csv", SAMPLE_CHECKPOINT, out=tmp_path / "b", dataset_batch_size=8,
                                  device="cpu"))  # fmt: skip
    assert run_a.dataset_hash != run_b.dataset_hash  # the in-batch negatives differ
    assert run_a.content_hash == run_b.content_hash == run_a.manifest["dataset_content_hash"]
    store = ReviewStore(tmp_path / "r.sqlite")
    fn = run_a.negatives[run_a.negatives["source"] == "in_batch"].merge(run_a.pairs, on="pair_id").iloc[0]
    store.record(negative_row(run_a, int(fn.anchor_id), int(fn.negative_id), "false_negative", "ann"))
    got = negative_decisions(run_b, run_decisions(run_b, store))
    assert len(got) == 1
    assert run_b.item_keys[int(got.iloc[0]["anchor_id"])] == run_a.item_keys[int(fn.anchor_id)]
    assert run_b.item_keys[int(got.iloc[0]["candidate_id"])] == run_a.item_keys[int(fn.negative_id)]
    fixed = build_corrected(run_b, run_decisions(run_b, store))
    assert fixed.counts["positive_pairs_added"] == 1 and fixed.counts["exclusions"] == 1


def test_one_meaning_of_a_missing_label(tmp_path: Path) -> None:
    for missing in [None, float("nan"), pd.NA, "", "  ", "null", "NULL", "None", "nan", "NaN", "<NA>"]:
        assert normalise_label(missing) is None, missing
    assert {"", "nan", "none", "null", "<na>"} == MISSING_LABEL_TEXTS
    assert [normalise_label(v) for v in (" 3 ", 3, 3.0, 2.5, True, "cat", "nullable")] == [
        "3", "3", "3", "2.5", "true", "cat", "nullable"
    ]
    with pytest.raises(TypeError):
        normalise_label([1])
    # where the dataset is read
    from analysis.data.load import load_dataset

    csv = tmp_path / "d.csv"
    csv.write_text("anchor,positive,label\na,b,null\nc,d, 7 \ne,f,\ng,h,None\n")
    items = load_dataset(csv).items
    assert items.set_index("content")["label"].astype(object).where(lambda s: s.notna(), None).to_dict() == {
        "a": None, "b": None, "c": "7", "d": "7", "e": None, "f": None, "g": None, "h": None
    }  # fmt: skip
    # and for runs written before: Run.labels applies the same function
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=10, k=2)
    items = run.items.assign(label=["nan", "null", " 4", "<NA>", None] * 4)
    write_run(tmp_path / "old", manifest=run.manifest, items=items, embeddings=run.embeddings, pairs=run.pairs,
              negatives=run.negatives)  # fmt: skip
    assert load_run(tmp_path / "old").labels.tolist() == [None, None, "4", None, None] * 4


def test_key_and_id_lookups_on_the_run(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=10, k=2)
    items = run.items.copy()
    items.loc[5, "key"] = items.loc[2, "key"]  # the same image bytes at two paths share a key
    write_run(tmp_path / "dup", manifest=run.manifest, items=items, embeddings=run.embeddings, pairs=run.pairs,
              negatives=run.negatives)  # fmt: skip
    dup = load_run(tmp_path / "dup")
    assert dup.item_keys.tolist() == items["key"].tolist()
    assert dup.item_ids_for_keys(["k3", "k2", "nope", ""]).tolist() == [3, 2, -1, -1]
    both = dup.items_for_keys(["k2", "nope", "k7"])
    assert both.values.tolist() == [[0, 2], [0, 5], [2, 7]]
