"""Issue #11's acceptance test: one decision log, three exports (False Negatives page, Label Noise page, CLI),
byte-identical files that hold exactly the effects of docs/review.md."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.cli import main
from analysis.review.corrected import corrected_from_store
from analysis.review.rows import duplicate_row, label_row, negative_row, pair_row
from analysis.review.store import ReviewStore
from analysis.runs.folder import Run, load_run, write_run
from analysis.runs.workspace import review_db_path, workspace_dir
from tests.synthetic import make_synthetic_run, write_image_files
from ui.review import zip_bytes
from ui.state import ANNOTATOR_KEY, RUN_KEY

PAGES = Path(__file__).resolve().parent.parent / "pages"
N = 60


def _run_with_in_batch(tmp_path: Path) -> Run:
    """A synthetic image/text run (images on disk) with given and in-batch negatives and one repeated pair."""
    base, _ = make_synthetic_run(tmp_path / "base", n_pairs=N, k=3, seed=5)
    write_image_files(base)
    given = base.negatives
    listed = set(zip(given["pair_id"], given["negative_id"], strict=True))
    in_batch = [
        (i, N + (i + 1) % N, "in_batch") for i in range(N) if (i, N + (i + 1) % N) not in listed
    ]  # the next pair's positive, as a batch of consecutive pairs would give
    negatives = pd.concat(
        [given, pd.DataFrame(in_batch, columns=["pair_id", "negative_id", "source"])], ignore_index=True
    ).sort_values(["pair_id", "source"], kind="stable")
    pairs = pd.concat(
        [base.pairs, pd.DataFrame({"pair_id": [N], "anchor_id": [0], "positive_id": [N]})], ignore_index=True
    )  # pair N repeats pair 0
    write_run(
        tmp_path / "run",
        manifest={**base.manifest, "dataset_hash": "legacy-hash"},
        items=base.items,
        embeddings=base.embeddings,
        pairs=pairs,
        negatives=negatives.reset_index(drop=True),
    )
    return load_run(tmp_path / "run")


def _negatives_of(run: Run, pair: int, source: str) -> list[int]:
    n = run.negatives
    return n.loc[(n["pair_id"] == pair) & (n["source"] == source), "negative_id"].astype(int).tolist()


def _record_every_kind(run: Run) -> dict:
    """A mix of decisions of every kind, by two annotators, with an undo; returns what to expect."""
    store = ReviewStore(review_db_path())
    anchor = dict(zip(run.pairs["pair_id"], run.pairs["anchor_id"], strict=True))
    positive = dict(zip(run.pairs["pair_id"], run.pairs["positive_id"], strict=True))
    given_fn = _negatives_of(run, 1, "given")[0]
    in_batch_fn = _negatives_of(run, 2, "in_batch")[0]
    listed_4 = set(_negatives_of(run, 4, "given") + _negatives_of(run, 4, "in_batch"))
    mined_fn = next(positive[p] for p in range(10, N) if positive[p] not in listed_4)
    kept_negative = _negatives_of(run, 5, "given")[0]
    undone_fn = _negatives_of(run, 6, "given")[0]
    unsure_negative = _negatives_of(run, 7, "given")[0]
    old_label = run.labels[anchor[11]]
    new_label = str((int(old_label) + 3) % 10)
    store.record_many(
        [
            negative_row(run, anchor[1], given_fn, "false_negative", "ann"),
            negative_row(run, anchor[2], in_batch_fn, "false_negative", "ann"),
            negative_row(run, anchor[4], mined_fn, "false_negative", "ann"),
            negative_row(run, anchor[5], kept_negative, "negative", "ann"),
            negative_row(run, anchor[7], unsure_negative, "unsure", "ann"),
            pair_row(run, 8, "mismatched", "ann"),
            pair_row(run, 9, "ok", "ann"),
            pair_row(run, 14, "mismatched", "ann"),
            label_row(run, anchor[11], "relabel", "ann", label=new_label),
            duplicate_row(run, anchor[12], anchor[13], "duplicate", "ann"),
            duplicate_row(run, anchor[0], None, "duplicate", "ann"),
            duplicate_row(run, anchor[15], anchor[16], "not_duplicate", "ann"),
        ]
    )
    store.record(pair_row(run, 14, "ok", "bob"))  # a later decision by another annotator wins (rule: latest)
    store.record(negative_row(run, anchor[6], undone_fn, "false_negative", "bob"))
    assert store.undo(run.content_hash, annotator="bob", kind="negative").decision == "cleared"
    return {
        "given_fn": given_fn,
        "in_batch_fn": in_batch_fn,
        "mined_fn": mined_fn,
        "kept_negative": kept_negative,
        "undone_fn": undone_fn,
        "unsure_negative": unsure_negative,
        "new_label": new_label,
        "anchor": anchor,
    }


def _page_export(run: Run, page: str, prefix: str, name: str) -> Path:
    at = AppTest.from_file(str(PAGES / page), default_timeout=180)
    at.session_state[RUN_KEY] = str(run.path)
    at.session_state[ANNOTATOR_KEY] = "ann"
    at.run()
    assert not at.exception, at.exception
    effects = [t.value for t in at.text]
    assert "1 pairs decided mismatched are dropped." in effects
    assert "3 false negatives are written as extra positive pairs." in effects
    at.text_input(key=f"{prefix}_export_name").set_value(name).run()
    at.button(key=f"{prefix}_export_write").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    out = workspace_dir() / "exports" / name
    assert any(str(out) in c.value for c in at.code)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_page_and_cli_exports_are_identical_and_hold_every_effect(tmp_path: Path) -> None:
    run = _run_with_in_batch(tmp_path)
    source_pairs = (run.path / "pairs.parquet").read_bytes()
    expect = _record_every_kind(run)

    assert main(["export", str(run.path), "--out", str(tmp_path / "cli")]) == 0
    from_fn = _page_export(run, "4_False_Negatives.py", "fn", "from-fn-page")
    from_ln = _page_export(run, "5_Label_Noise.py", "ln", "from-ln-page")

    cli = _files(tmp_path / "cli")
    assert set(cli) >= {"pairs.csv", "exclusions.jsonl", "decisions.jsonl", "export.json", "beir/qrels/test.tsv",
                        "beir/corpus.jsonl", "beir/queries.jsonl"}  # fmt: skip
    assert _files(from_fn) == cli
    assert _files(from_ln) == cli
    assert (run.path / "pairs.parquet").read_bytes() == source_pairs

    content = run.items["content"].astype(str).to_numpy()
    anchor = expect["anchor"]
    table = pd.read_csv(tmp_path / "cli" / "pairs.csv", dtype=str, keep_default_na=False)
    ids = table["id"].tolist()
    # mismatched pair 8 dropped; 14 kept (bob's later "ok"); duplicates: pair 13 (the later anchor) and the
    # repeat N of pair 0 dropped; three extra positive pairs (given, in-batch and mined false negatives)
    assert "8" not in ids and "13" not in ids and str(N) not in ids
    assert {"9", "12", "14", "0", "1", "6", "15", "16"} <= set(ids)
    assert ids[-3:] == ["1+fn1", "2+fn1", "4+fn1"]
    assert len(table) == (N + 1) - 3 + 3
    by_id = table.set_index("id")
    for pair, cand in ((1, "given_fn"), (2, "in_batch_fn"), (4, "mined_fn")):
        row = by_id.loc[f"{pair}+fn1"]
        assert row["anchor"] == content[anchor[pair]] and row["positive"] == content[expect[cand]]
    negative_cells = [c for c in table.columns if c.startswith("negative_")]

    def negs(pair: str) -> set[str]:
        return {v for v in by_id.loc[pair, negative_cells] if v}

    assert content[expect["given_fn"]] not in negs("1") and len(negs("1")) == 2
    assert content[expect["kept_negative"]] in negs("5")
    assert content[expect["undone_fn"]] in negs("6")
    assert content[expect["unsure_negative"]] in negs("7")
    assert by_id.loc["11", "label"] == expect["new_label"]
    assert (by_id.drop(index="11")["label"] != "").all()

    exclusions = [json.loads(line) for line in (tmp_path / "cli" / "exclusions.jsonl").read_text().splitlines()]
    got = {(r["anchor"], tuple(r["excluded"])) for r in exclusions}
    assert got == {
        (content[anchor[1]], (content[expect["given_fn"]],)),
        (content[anchor[2]], (content[expect["in_batch_fn"]],)),
        (content[anchor[4]], (content[expect["mined_fn"]],)),
    }
    qrels = pd.read_csv(tmp_path / "cli" / "beir" / "qrels" / "test.tsv", sep="\t")
    assert len(qrels) == len(table)  # every output pair; the exclusions are the extra pairs' (anchor, positive)

    summary = json.loads((tmp_path / "cli" / "export.json").read_text())
    counts = summary["counts"]
    assert {k: counts[k] for k in (
        "pairs_in", "pairs_out", "pairs_dropped_mismatched", "pairs_dropped_duplicate", "false_negatives_given",
        "false_negatives_in_batch", "false_negatives_mined", "given_negatives_removed", "positive_pairs_added",
        "exclusion_anchors", "exclusions", "labels_corrected", "label_rows_changed", "st_rows", "qrels_rows",
    )} == {
        "pairs_in": N + 1, "pairs_out": N + 1, "pairs_dropped_mismatched": 1, "pairs_dropped_duplicate": 2,
        "false_negatives_given": 1, "false_negatives_in_batch": 1, "false_negatives_mined": 1,
        "given_negatives_removed": 1, "positive_pairs_added": 3, "exclusion_anchors": 3, "exclusions": 3,
        "labels_corrected": 1, "label_rows_changed": 1, "st_rows": len(table), "qrels_rows": len(qrels),
    }  # fmt: skip
    log = [json.loads(line) for line in (tmp_path / "cli" / "decisions.jsonl").read_text().splitlines()]
    assert len(log) == 15 and [r["id"] for r in log] == sorted(r["id"] for r in log)
    assert np.all(np.diff([r["time_unix"] for r in log]) >= 0)

    # the pages' download holds the same files (without the images)
    with zipfile.ZipFile(io.BytesIO(zip_bytes(corrected_from_store(run, ReviewStore(review_db_path())), style="ntuple"))) as zf:
        zipped = {name: zf.read(name) for name in zf.namelist()}
    assert set(zipped) == {name for name in cli if not name.startswith("img/")}
    assert all(zipped[name] == cli[name] for name in zipped if name != "export.json")
