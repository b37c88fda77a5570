"""Exports of corrected training data: the builder's options, the writers (load back as datasets), and the
export folder's safety (issue #12.3: never inside the dataset's folder, never over existing files)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.data.load import load_dataset
from analysis.errors import NegScopeError
from analysis.review.corrected import build_corrected, corrected_from_store
from analysis.review.decisions import run_decisions
from analysis.review.export import AUDIT_FIELDS, ExportError, read_audit_log, st_table, write_export
from analysis.review.rows import label_row, negative_row, pair_row
from analysis.review.store import ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run, write_image_files


def _given(run: Run) -> pd.DataFrame:
    return run.negatives[run.negatives["source"] == "given"].merge(run.pairs, on="pair_id")


@pytest.fixture
def text_run(tmp_path: Path):
    """A one-modality run with decided given false negatives (3), an unsure and a confirmed negative, and a
    mined false negative."""
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=80, k=4, two_modalities=False, seed=9)
    store = ReviewStore(tmp_path / "reviews.sqlite")
    g = _given(run)
    rows = [negative_row(run, int(r.anchor_id), int(r.negative_id), "false_negative", "ann")
            for r in g.iloc[[0, 5, 9]].itertuples()]  # fmt: skip
    rows.append(negative_row(run, int(g.iloc[13].anchor_id), int(g.iloc[13].negative_id), "unsure", "ann"))
    rows.append(negative_row(run, int(g.iloc[17].anchor_id), int(g.iloc[17].negative_id), "negative", "bob"))
    listed = set(zip(g["anchor_id"], g["negative_id"], strict=True))
    a = int(run.pairs["anchor_id"].iloc[40])
    mined = next(int(p) for p in run.pairs["positive_id"] if (a, int(p)) not in listed and p != run.pairs.iloc[40, 2])
    rows.append(negative_row(run, a, mined, "false_negative", "ann"))
    store.record_many(rows)
    return run, store, g, (a, mined)


def test_options_change_only_their_effect(text_run) -> None:
    run, store, g, (a, mined) = text_run
    decisions = run_decisions(run, store)
    full = build_corrected(run, decisions)
    assert full.counts["false_negatives_given"] == 3 and full.counts["false_negatives_mined"] == 1
    assert full.counts["given_negatives_removed"] == 3 and full.counts["positive_pairs_added"] == 4
    assert full.counts["exclusions"] == 4 and full.counts["pairs_out"] == len(run.pairs) + 4
    listed_only = build_corrected(run, decisions, extra_positive_pairs=False)
    extra = listed_only.pairs[listed_only.pairs["origin"] == "false_negative"]
    assert extra[["anchor_id", "positive_id"]].values.tolist() == [[a, mined]]  # mined ones always are added
    assert listed_only.counts["exclusions"] == 4
    unsure = build_corrected(run, decisions, drop_unsure=True)
    assert unsure.counts["given_negatives_removed"] == 4
    removed = {(int(r.anchor_id), int(r.negative_id)) for r in g.iloc[[0, 5, 9, 13]].itertuples()}
    for row in unsure.pairs[unsure.pairs["origin"] == "dataset"].itertuples():
        kept = set(_given(run).loc[_given(run)["pair_id"] == row.id, "negative_id"].astype(int))
        assert set(row.negative_ids) == {n for n in kept if (row.anchor_id, n) not in removed}


def test_mismatched_and_relabel_options(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=30, k=2, seed=2)
    store = ReviewStore(tmp_path / "r.sqlite")
    item = int(run.pairs["positive_id"].iloc[4])
    store.record_many([pair_row(run, 3, "mismatched", "ann"), label_row(run, item, "relabel", "ann", label="zz")])
    decisions = run_decisions(run, store)
    fixed = build_corrected(run, decisions)
    table = st_table(fixed).set_index("id")
    assert "3" not in table.index and len(table) == 29
    assert table.loc["4", "label"] == "zz"  # only the positive was relabelled: it sets the pair's label
    kept = st_table(build_corrected(run, decisions, drop_mismatched=False, apply_relabels=False)).set_index("id")
    assert "3" in kept.index and kept.loc["4", "label"] == run.labels[int(run.pairs["anchor_id"].iloc[4])]


def test_writers_load_back_and_audit_log_round_trips(text_run, tmp_path: Path) -> None:
    run, store, _, _ = text_run
    fixed = corrected_from_store(run, store)
    res = write_export(fixed, tmp_path / "out", style="triplet")
    assert [p.as_posix() for p in res.files] == [
        "beir/corpus.jsonl", "beir/qrels/test.tsv", "beir/queries.jsonl", "decisions.jsonl", "exclusions.jsonl",
        "export.json", "pairs.csv",
    ]  # fmt: skip
    ds = load_dataset(res.path / "pairs.csv")
    n_negatives = sum(max(len(n), 1) for n in fixed.pairs["negative_ids"])
    assert len(ds.pairs) == res.counts["st_rows"] == n_negatives
    beir = load_dataset(res.path / "beir")
    assert len(beir.pairs) == res.counts["qrels_rows"]
    log = read_audit_log(res.path / "decisions.jsonl")
    assert list(log.columns) == list(AUDIT_FIELDS) and len(log) == store.count()
    assert log["anchor"].notna().all() and log["id"].tolist() == sorted(log["id"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(NegScopeError, match="missing fields"):
        read_audit_log(bad)


def test_images_are_copied_beside_the_table(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=30, k=3, seed=3)
    write_image_files(run)
    store = ReviewStore(tmp_path / "db.sqlite")
    g = _given(run).iloc[2]
    store.record(negative_row(run, int(g.anchor_id), int(g.negative_id), "false_negative", "ann"))
    res = write_export(corrected_from_store(run, store), tmp_path / "elsewhere", formats=["st"])
    assert res.counts["images_copied"] == 30
    ds = load_dataset(res.path / "pairs.csv")
    assert ds.anchor_modality == "image" and len(ds.pairs) == 31
    images = set(run.items.loc[run.items["modality"] == "image", "content"])
    assert set(ds.items.loc[ds.items["modality"] == "image", "content"]) == images


def test_export_refuses_a_non_empty_folder_and_keeps_it(text_run, tmp_path: Path) -> None:
    run, store, _, _ = text_run
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "0000.png").write_bytes(b"stale")
    with pytest.raises(ExportError, match="not empty"):
        write_export(corrected_from_store(run, store), out)
    assert [p.name for p in out.rglob("*")] == ["images", "0000.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left
    file = tmp_path / "a.csv"
    file.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        write_export(corrected_from_store(run, store), file)
    assert file.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_export(corrected_from_store(run, store), empty, formats=["st"]).files


def test_export_never_writes_inside_or_over_the_dataset_folder(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "data" / "run", n_pairs=20, k=2, seed=4)
    write_image_files(run)
    fixed = build_corrected(run, run_decisions(run, ReviewStore(tmp_path / "r.sqlite")))
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    for out in (run.dataset_root, run.dataset_root / "corrected", run.dataset_root / "img", tmp_path / "data"):
        for overwrite in (False, True):
            with pytest.raises(ExportError, match="dataset or run folder"):
                write_export(fixed, out, overwrite=overwrite)
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before


def test_overwrite_swaps_a_new_folder_in(text_run, tmp_path: Path) -> None:
    run, store, _, _ = text_run
    out = tmp_path / "out"
    (out / "beir" / "qrels").mkdir(parents=True)
    (out / "beir" / "qrels" / "dev.tsv").write_text("stale qrels")
    (out / "images").mkdir()
    (out / "images" / "0000.png").write_bytes(b"stale")
    res = write_export(corrected_from_store(run, store), out, overwrite=True)
    assert not (out / "images").exists() and not (out / "beir" / "qrels" / "dev.tsv").exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == res.files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "reviews.sqlite", "run"]  # nothing left beside


def test_cli_export_formats_and_refusals(text_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, store, _, _ = text_run
    db = str(store.path)
    assert cli_main(["export", str(run.path), "--out", str(tmp_path / "a"), "--db", db, "--format", "st"]) == 0
    out = capsys.readouterr().out
    assert "given_negatives_removed 3" in out and "positive_pairs_added 4" in out
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["export.json", "pairs.csv"]
    summary = json.loads((tmp_path / "a" / "export.json").read_text())
    assert summary["counts"]["st_rows"] == len(run.pairs) + 4
    # a non-empty folder and the dataset's own folder: exit 2, one line, nothing written
    assert cli_main(["export", str(run.path), "--out", str(tmp_path / "a"), "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "\n" not in err
    assert cli_main(["export", str(run.path), "--out", str(run.path / "x"), "--db", db]) == 2
    assert "dataset or run folder" in capsys.readouterr().err
    assert not (run.path / "x").exists()
    assert cli_main(["export", str(run.path), "--out", str(tmp_path / "a"), "--db", db, "--overwrite",
                     "--no-extra-positive-pairs", "--rule", "unanimous"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "a" / "export.json").read_text())
    assert summary["counts"]["positive_pairs_added"] == 1 and summary["options"]["extra_positive_pairs"] is False
    # the default database is the workspace's (none yet: nothing decided)
    assert cli_main(["export", str(run.path), "--out", str(tmp_path / "b")]) == 0
    assert "positive_pairs_added 0" in capsys.readouterr().out
    assert not review_db_path().exists() or ReviewStore(review_db_path()).count() == 0


@pytest.mark.slow
def test_sample_export_never_touches_its_source(sample_run: Run, tmp_path: Path) -> None:
    """The digits sample: exporting into its folder is refused; elsewhere the export loads back."""
    source = Path(sample_run.manifest["dataset_path"])
    before = source.read_bytes()
    store = ReviewStore(tmp_path / "db.sqlite")
    g = _given(sample_run)
    store.record_many(
        negative_row(sample_run, int(r.anchor_id), int(r.negative_id), "false_negative", "ann")
        for r in g.iloc[[0, 100, 200]].itertuples()
    )
    fixed = corrected_from_store(sample_run, store)
    with pytest.raises(ExportError):
        write_export(fixed, source.parent, overwrite=True)
    with pytest.raises(ExportError):
        write_export(fixed, source.parent / "corrected")
    assert source.read_bytes() == before
    res = write_export(fixed, tmp_path / "digits", formats=["st"])
    ds = load_dataset(res.path / "pairs.csv")
    assert ds.anchor_modality == "image" and len(ds.pairs) == len(sample_run.pairs) + 3
    assert res.counts["given_negatives_removed"] == 3
    assert int((ds.negatives["source"] == "given").sum()) == len(g) - 3 + sum(
        len(n) for n in fixed.pairs.loc[fixed.pairs["origin"] == "false_negative", "negative_ids"]
    )
