"""Exports of corrected training data load back as datasets, with exactly the decided changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.data.load import load_dataset
from analysis.errors import NegScopeError
from analysis.review.export import (
    AUDIT_FIELDS,
    audit_log,
    export_beir,
    export_decisions,
    export_st,
    read_audit_log,
)
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run, write_image_files


def _given(run: Run) -> pd.DataFrame:
    g = run.negatives[run.negatives["source"] == "given"].merge(run.pairs, on="pair_id")
    return g


def _decide(run: Run, store: ReviewStore, rows: pd.DataFrame, decision: str, who: str = "ann") -> None:
    keys = run.items["key"].astype(str).to_numpy()
    store.record_many(
        Decision(run.dataset_hash, "negative", keys[a], keys[c], decision, who)
        for a, c in zip(rows["anchor_id"], rows["negative_id"], strict=True)
    )


@pytest.fixture
def text_run(tmp_path: Path):
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=80, k=4, two_modalities=False, seed=9)
    store = ReviewStore(tmp_path / "reviews.sqlite")
    g = _given(run)
    fn, unsure, neg = g.iloc[[0, 5, 9]], g.iloc[[13]], g.iloc[[17]]
    _decide(run, store, fn, "false_negative")
    _decide(run, store, unsure, "unsure")
    _decide(run, store, neg, "negative", "bob")
    return run, store, fn, unsure


def _loaded_negatives(ds) -> dict:
    content = ds.items["content"].to_numpy()
    given = ds.negatives[ds.negatives["source"] == "given"]
    return {str(pid): [content[i] for i in grp["negative_id"]] for pid, grp in given.groupby("pair_id", sort=False)}


def _expected_negatives(run: Run, removed: set[tuple[int, int]]) -> dict:
    content = run.items["content"].to_numpy()
    out = {}
    for pid, grp in _given(run).groupby("pair_id", sort=False):
        kept = [content[n] for a, n in zip(grp["anchor_id"], grp["negative_id"], strict=True) if (a, n) not in removed]
        if kept:
            out[str(pid)] = kept
    return out


def test_st_ntuple_round_trip_removes_exactly_the_false_negatives(text_run, tmp_path: Path) -> None:
    run, store, fn, _ = text_run
    res = export_st(run, store, tmp_path / "out" / "train.csv")
    assert res.counts["negatives_removed"] == 3 and res.counts["positive_pairs_added"] == 0
    ds = load_dataset(res.path)
    assert len(ds.pairs) == len(run.pairs)
    assert list(ds.pairs["pair_id"].astype(str)) == list(run.pairs["pair_id"].astype(str))
    removed = set(zip(fn["anchor_id"], fn["negative_id"], strict=True))
    assert _loaded_negatives(ds) == _expected_negatives(run, removed)
    # labels survive
    lab = ds.items.set_index("content")["label"]
    src = run.items.set_index("content")["label"]
    anchors = run.items.loc[run.pairs["anchor_id"], "content"]
    assert (lab.loc[anchors].astype(str).to_numpy() == src.loc[anchors].astype(str).to_numpy()).all()


def test_st_extra_positive_pairs_and_unsure(text_run, tmp_path: Path) -> None:
    run, store, fn, unsure = text_run
    res = export_st(run, store, tmp_path / "o.jsonl", add_positive_pairs=True, drop_unsure=True)
    assert res.counts["positive_pairs_added"] == 3
    assert res.counts["negatives_removed"] == 4
    ds = load_dataset(res.path)
    assert len(ds.pairs) == len(run.pairs) + 3
    content = ds.items["content"].to_numpy()
    loaded_pairs = {
        (content[a], content[p]) for a, p in zip(ds.pairs["anchor_id"], ds.pairs["positive_id"], strict=True)
    }
    src = run.items["content"].to_numpy()
    for a, c in zip(fn["anchor_id"], fn["negative_id"], strict=True):
        assert (src[a], src[c]) in loaded_pairs
    removed = set(zip(fn["anchor_id"], fn["negative_id"], strict=True)) | set(
        zip(unsure["anchor_id"], unsure["negative_id"], strict=True)
    )
    loaded = _loaded_negatives(ds)
    expected = _expected_negatives(run, removed)
    assert {k: v for k, v in loaded.items() if "+fn" not in k} == expected
    # the extra pairs carry their anchor's remaining negatives, never one of its false negatives
    anchor_of = dict(zip(ds.pairs["pair_id"].astype(str), content[ds.pairs["anchor_id"].to_numpy()], strict=True))
    fn_of_anchor: dict[str, set] = {}
    for a, c in zip(fn["anchor_id"], fn["negative_id"], strict=True):
        fn_of_anchor.setdefault(src[a], set()).add(src[c])
    extra = [pid for pid in anchor_of if "+fn" in pid]
    assert len(extra) == 3
    for pid in extra:
        assert not set(loaded.get(pid, [])) & fn_of_anchor[anchor_of[pid]]


def test_st_triplets_round_trip(text_run, tmp_path: Path) -> None:
    run, store, fn, _ = text_run
    res = export_st(run, store, tmp_path / "t.parquet", style="triplet")
    ds = load_dataset(res.path)
    table = pd.read_parquet(res.path)
    assert list(table.columns[:4]) == ["id", "anchor", "positive", "negative"]
    assert len(table) == len(_given(run)) - 3
    src = run.items["content"].to_numpy()
    triples = set(zip(table["anchor"], table["negative"], strict=True))
    for a, c in zip(fn["anchor_id"], fn["negative_id"], strict=True):
        assert (src[a], src[c]) not in triples
    assert len(ds.pairs) == len(table)


def test_label_page_decisions_apply(text_run, tmp_path: Path) -> None:
    run, store, _, _ = text_run
    keys = run.items["key"].astype(str).to_numpy()
    pair = run.pairs.iloc[3]
    store.record(
        Decision(run.dataset_hash, "pair", keys[pair["anchor_id"]], keys[pair["positive_id"]], "mismatched", "x")
    )
    item = int(run.pairs.iloc[4]["anchor_id"])
    store.record(Decision(run.dataset_hash, "label", keys[item], "", "relabel", "x", label="new-class"))
    res = export_st(run, store, tmp_path / "c.csv")
    table = pd.read_csv(res.path)
    assert str(pair["pair_id"]) not in set(table["id"].astype(str))
    row = table[table["id"].astype(str) == str(run.pairs.iloc[4]["pair_id"])].iloc[0]
    assert row["label"] == "new-class"
    kept = export_st(run, store, tmp_path / "k.csv", drop_mismatched=False, apply_relabels=False)
    assert kept.rows == len(run.pairs)


def test_beir_round_trip_counts_false_negatives_as_relevant(text_run, tmp_path: Path) -> None:
    run, store, fn, _ = text_run
    res = export_beir(run, store, tmp_path / "beir")
    assert res.counts["qrels_added"] == 3
    ds = load_dataset(res.path)
    content = ds.items["content"].to_numpy()
    loaded = {(content[a], content[p]) for a, p in zip(ds.pairs["anchor_id"], ds.pairs["positive_id"], strict=True)}
    src = run.items["content"].to_numpy()
    expected = {(src[a], src[p]) for a, p in zip(run.pairs["anchor_id"], run.pairs["positive_id"], strict=True)}
    expected |= {(src[a], src[c]) for a, c in zip(fn["anchor_id"], fn["negative_id"], strict=True)}
    assert loaded == expected
    with pytest.raises(NegScopeError):
        export_beir(run, store, tmp_path / "beir.csv")


def test_audit_log_round_trip(text_run, tmp_path: Path) -> None:
    run, store, _, _ = text_run
    store.undo(run.dataset_hash, annotator="bob")
    res = export_decisions(run, store, tmp_path / "log.jsonl")
    log = read_audit_log(res.path)
    hist = store.history(run.dataset_hash)
    assert list(log.columns) == list(AUDIT_FIELDS)
    assert len(log) == len(hist) == res.rows
    for col in ("id", "kind", "anchor_key", "candidate_key", "decision", "annotator", "note"):
        assert log[col].tolist() == hist[col].tolist()
    np.testing.assert_allclose(log["time_unix"], hist["time"])
    assert log["time"].str.endswith("+00:00").all()
    # the latest decision per key, replayed from the log, is the store's
    replay = log.groupby(["kind", "anchor_key", "candidate_key"]).tail(1)
    replay = replay[replay["decision"] != "cleared"].set_index(["anchor_key", "candidate_key"])["decision"]
    latest = store.latest(run.dataset_hash).set_index(["anchor_key", "candidate_key"])["decision"]
    pd.testing.assert_series_equal(replay.sort_index(), latest.sort_index(), check_names=False)
    assert (audit_log(run, store)["anchor"].notna()).all()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(NegScopeError, match="missing fields"):
        read_audit_log(bad)


def test_image_dataset_round_trip_copies_images(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=30, k=3, seed=3)
    write_image_files(run)
    store = ReviewStore(tmp_path / "db.sqlite")
    g = _given(run)
    _decide(run, store, g.iloc[[2]], "false_negative")
    res = export_st(run, store, tmp_path / "elsewhere", add_positive_pairs=True)
    assert res.path.name == "pairs.csv"
    assert res.counts["images_copied"] == 30
    ds = load_dataset(res.path)
    assert ds.anchor_modality == "image"
    assert len(ds.pairs) == 31
    keys_src = set(run.items.loc[run.items["modality"] == "image", "content"])
    assert set(ds.items.loc[ds.items["modality"] == "image", "content"]) == keys_src


def test_cli_export_three_formats(text_run, tmp_path: Path, monkeypatch, capsys) -> None:
    run, store, _, _ = text_run
    db = str(store.path)
    assert cli_main(["export", str(run.path), "--format", "st", "--out", str(tmp_path / "a.csv"), "--db", db]) == 0
    assert "negatives_removed 3" in capsys.readouterr().out
    assert cli_main(["export", str(run.path), "--format", "beir", "--out", str(tmp_path / "b"), "--db", db]) == 0
    assert (
        cli_main(["export", str(run.path), "--format", "decisions", "--out", str(tmp_path / "d.jsonl"), "--db", db])
        == 0
    )
    assert len(load_dataset(tmp_path / "a.csv").pairs) == len(run.pairs)
    assert len(load_dataset(tmp_path / "b").pairs) == len(run.pairs) + 3
    assert len(read_audit_log(tmp_path / "d.jsonl")) == 5
    # the default database is the workspace's
    assert not review_db_path().exists() or ReviewStore(review_db_path()).count() == 0
    assert cli_main(["export", str(run.path), "--format", "st", "--out", str(tmp_path / "bad.txt")]) == 2


def test_sample_round_trip(sample_run: Run, tmp_path: Path) -> None:
    """The digits sample: image anchors, given negatives; a few decisions; the export loads back."""
    store = ReviewStore(tmp_path / "db.sqlite")
    g = _given(sample_run)
    _decide(sample_run, store, g.iloc[[0, 100, 200]], "false_negative")
    res = export_st(sample_run, store, tmp_path / "digits" / "train.csv", add_positive_pairs=True)
    ds = load_dataset(res.path)
    assert ds.anchor_modality == "image"
    assert len(ds.pairs) == len(sample_run.pairs) + 3
    n_given = int((ds.negatives["source"] == "given").sum())
    assert res.counts["negatives_removed"] == 3
    assert n_given >= len(g) - 3
