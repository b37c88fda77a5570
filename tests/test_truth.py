"""analysis.data.truth: planted truth files beside a dataset, joined to a run's pair and negative ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.data.truth import (
    item_digits,
    negative_truth,
    negative_truth_from_files,
    pair_truth,
    pair_truth_from_files,
)
from analysis.errors import DatasetError
from analysis.runs.folder import Run, load_run, write_run

# Four pairs: image digit, caption digit (pair 12 is mismatched: a 3 captioned as a 5), label flipped on 13.
PAIRS = [
    # id, image digit, caption digit, label_flipped, mismatched
    (10, 1, 1, False, False),
    (11, 1, 1, False, False),
    (12, 3, 5, False, True),
    (13, 5, 5, True, False),
]
# Given negatives: (pair id, column, caption of pair ...) -> the negative is the positive caption of that pair.
GIVEN = [
    (10, "negative_1", 11),  # a caption of a 1 for an image of a 1: false negative
    (10, "negative_2", 12),  # names 5 -> true negative
    (11, "negative_1", 10),  # false negative
    (11, "negative_2", 13),
    (12, "negative_1", 13),  # names 5, image is a 3 -> true negative (the pair's own caption is wrong too)
    (12, "negative_2", 10),
    (13, "negative_1", 12),  # the mismatched caption names 5, image is a 5 -> false negative
    (13, "negative_2", 11),
]


def _write_truth(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(PAIRS, columns=["id", "image_digit", "caption_digit", "label_flipped", "mismatched"]).to_csv(
        folder / "truth.csv", index=False
    )
    caption_digit = {p[0]: p[2] for p in PAIRS}
    image_digit = {p[0]: p[1] for p in PAIRS}
    rows = [(pid, col, caption_digit[src], caption_digit[src] == image_digit[pid]) for pid, col, src in GIVEN]
    pd.DataFrame(rows, columns=["id", "column", "negative_digit", "is_false_negative"]).to_csv(
        folder / "negatives_truth.csv", index=False
    )


def _make_run(
    path: Path,
    dataset_root: Path | None,
    *,
    string_ids: bool = False,
    with_column: bool = True,
    in_batch: bool = True,
) -> Run:
    """A run whose items are 4 anchor images then 4 positive captions; negatives are other pairs' captions."""
    ids = [p[0] for p in PAIRS]
    items = pd.DataFrame(
        {
            "item_id": np.arange(8),
            "modality": ["image"] * 4 + ["text"] * 4,
            "content": [f"images/{i}.png" for i in ids] + [f"caption of pair {i}" for i in ids],
            "label": [str(p[1]) for p in PAIRS] + [None] * 4,
        }
    )
    pair_ids: list = [str(i) for i in ids] if string_ids else ids
    pairs = pd.DataFrame({"pair_id": pair_ids, "anchor_id": [0, 1, 2, 3], "positive_id": [4, 5, 6, 7]})
    caption_item = {pid: 4 + k for k, pid in enumerate(ids)}
    rows = [
        {"pair_id": str(pid) if string_ids else pid, "negative_id": caption_item[src], "source": "given", "column": col}
        for pid, col, src in GIVEN
    ]
    if in_batch:
        # pair 10's in-batch negative is pair 11's caption (a 1: false negative); pair 12's is pair 10's.
        rows.append({"pair_id": pair_ids[0], "negative_id": 5, "source": "in_batch", "column": ""})
        rows.append({"pair_id": pair_ids[2], "negative_id": 4, "source": "in_batch", "column": ""})
    negatives = pd.DataFrame(rows)
    if not with_column:
        negatives = negatives.drop(columns="column")
    rng = np.random.default_rng(0)
    manifest = {"dataset_root": str(dataset_root) if dataset_root is not None else None, "dataset_hash": "h"}
    write_run(
        path, manifest=manifest, items=items, embeddings=rng.normal(size=(8, 4)), pairs=pairs, negatives=negatives
    )
    return load_run(path)


def _reference_is_fn(run: Run) -> list[bool]:
    """Slow reference: the digit the negative caption names equals the anchor image's digit."""
    image_digit = {str(p[0]): p[1] for p in PAIRS}
    caption_digit_by_item = {4 + k: p[2] for k, p in enumerate(PAIRS)}
    return [
        caption_digit_by_item[int(row.negative_id)] == image_digit[str(row.pair_id)]
        for row in run.negatives.itertuples()
    ]


def test_no_truth_files_gives_none(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    run = _make_run(tmp_path / "run", data)
    assert pair_truth(run) is None
    assert negative_truth(run) is None
    assert item_digits(run) is None
    assert pair_truth_from_files(data) is None
    assert negative_truth_from_files(data) is None
    no_root = _make_run(tmp_path / "run2", None)
    assert pair_truth(no_root) is None
    assert negative_truth(no_root) is None


@pytest.mark.parametrize("string_ids", [False, True])
def test_pair_truth_aligns_with_run_pairs(tmp_path: Path, string_ids: bool) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    run = _make_run(tmp_path / "run", data, string_ids=string_ids)
    truth = pair_truth(run)
    assert truth is not None
    assert list(truth.columns) == [
        "pair_id",
        "anchor_id",
        "positive_id",
        "image_digit",
        "caption_digit",
        "label_flipped",
        "mismatched",
    ]
    assert truth["pair_id"].tolist() == run.pairs["pair_id"].tolist()
    assert truth["anchor_id"].tolist() == [0, 1, 2, 3]
    assert truth["image_digit"].tolist() == [p[1] for p in PAIRS]
    assert truth["caption_digit"].tolist() == [p[2] for p in PAIRS]
    assert truth["mismatched"].tolist() == [p[4] for p in PAIRS]
    assert truth["label_flipped"].tolist() == [p[3] for p in PAIRS]
    assert str(truth["mismatched"].dtype) == "boolean"
    assert str(truth["image_digit"].dtype) == "Int64"


def test_pair_truth_marks_pairs_missing_from_the_file_as_na(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    table = pd.read_csv(data / "truth.csv")
    table[table["id"] != 12].to_csv(data / "truth.csv", index=False)
    truth = pair_truth(_make_run(tmp_path / "run", data))
    assert truth["mismatched"].isna().tolist() == [False, False, True, False]
    assert truth["image_digit"].isna().sum() == 1


@pytest.mark.parametrize("string_ids", [False, True])
def test_negative_truth_joins_given_negatives_on_pair_and_column(tmp_path: Path, string_ids: bool) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    run = _make_run(tmp_path / "run", data, string_ids=string_ids)
    truth = negative_truth(run)
    assert truth is not None
    assert list(truth.columns) == ["pair_id", "negative_id", "source", "column", "negative_digit", "is_false_negative"]
    assert len(truth) == len(run.negatives)
    assert truth["pair_id"].tolist() == run.negatives["pair_id"].tolist()
    assert truth["negative_id"].tolist() == run.negatives["negative_id"].tolist()
    assert truth["is_false_negative"].tolist() == _reference_is_fn(run)
    given = truth[truth["source"] == "given"]
    assert given["is_false_negative"].sum() == 3
    # the in-batch ones come from truth.csv: 10 <- caption of 11 (a 1: false), 12 <- caption of 10 (a 1)
    in_batch = truth[truth["source"] == "in_batch"]
    assert in_batch["column"].tolist() == ["", ""]
    assert in_batch["is_false_negative"].tolist() == [True, False]
    assert in_batch["negative_digit"].tolist() == [1, 1]


def test_negative_truth_file_wins_over_derived_truth(tmp_path: Path) -> None:
    """The recorded file is the truth for given negatives, even where it disagrees with the digits."""
    data = tmp_path / "data"
    _write_truth(data)
    table = pd.read_csv(data / "negatives_truth.csv")
    flip = (table["id"] == 10) & (table["column"] == "negative_2")
    table.loc[flip, "is_false_negative"] = True
    table.loc[flip, "negative_digit"] = 1
    table.to_csv(data / "negatives_truth.csv", index=False)
    truth = negative_truth(_make_run(tmp_path / "run", data))
    row = truth[(truth["pair_id"] == 10) & (truth["column"] == "negative_2")].iloc[0]
    assert bool(row["is_false_negative"]) is True
    assert int(row["negative_digit"]) == 1


def test_negative_truth_without_column_or_file_derives_from_pair_truth(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    (data / "negatives_truth.csv").unlink()
    run = _make_run(tmp_path / "run", data, with_column=False)
    truth = negative_truth(run)
    assert truth["column"].tolist() == [""] * len(run.negatives)
    assert truth["is_false_negative"].tolist() == _reference_is_fn(run)


def test_negative_truth_from_the_negatives_file_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    (data / "truth.csv").unlink()
    run = _make_run(tmp_path / "run", data)
    truth = negative_truth(run)
    given = truth["source"] == "given"
    assert truth.loc[given, "is_false_negative"].tolist() == list(np.array(_reference_is_fn(run))[given.to_numpy()])
    assert truth.loc[~given, "is_false_negative"].isna().all()


def test_item_digits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    digits = item_digits(_make_run(tmp_path / "run", data))
    assert digits.tolist() == [1, 1, 3, 5, 1, 1, 5, 5]


@pytest.mark.parametrize(
    "file, column, value, message",
    [
        ("truth.csv", "mismatched", "maybe", "expected True or False"),
        ("truth.csv", "image_digit", "seven", "expected an integer"),
        ("negatives_truth.csv", "is_false_negative", "yes!", "expected True or False"),
        ("negatives_truth.csv", "negative_digit", "1.5", "expected an integer"),
    ],
)
def test_malformed_truth_files_raise_dataset_error(
    tmp_path: Path, file: str, column: str, value: str, message: str
) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    table = pd.read_csv(data / file, dtype=str)
    table.loc[2, column] = value
    table.to_csv(data / file, index=False)
    reader = pair_truth_from_files if file == "truth.csv" else negative_truth_from_files
    with pytest.raises(DatasetError, match=message) as info:
        reader(data)
    assert info.value.row == 3
    assert info.value.column == column
    assert info.value.file.endswith(file)


def test_truth_file_missing_a_column(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_truth(data)
    pd.read_csv(data / "truth.csv").drop(columns="mismatched").to_csv(data / "truth.csv", index=False)
    with pytest.raises(DatasetError, match="lacks columns"):
        pair_truth_from_files(data)


def test_truth_of_the_bundled_sample_through_the_dataset_reader(tmp_path: Path) -> None:
    """The sample's truth files join to the tables the real dataset reader builds, and both paths agree."""
    from analysis.data.load import load_dataset
    from analysis.runs.workspace import SAMPLE_DATA, SAMPLE_DIR

    data = load_dataset(SAMPLE_DATA)
    rng = np.random.default_rng(0)
    manifest = {"dataset_root": str(data.root), "dataset_hash": data.dataset_hash}
    run = load_run(
        write_run(
            tmp_path / "run",
            manifest=manifest,
            items=data.items,
            embeddings=rng.normal(size=(len(data.items), 4)),
            pairs=data.pairs,
            negatives=data.negatives,
        )
    )
    pairs = pair_truth(run)
    recorded = pd.read_csv(SAMPLE_DIR / "truth.csv")
    assert pairs["mismatched"].sum() == recorded["mismatched"].sum()
    assert pairs["image_digit"].tolist() == recorded["image_digit"].tolist()
    joined = negative_truth(run)
    assert len(joined) == len(run.negatives) == 8 * len(run.pairs)
    assert joined["is_false_negative"].notna().all()
    assert (
        joined["is_false_negative"].sum() == pd.read_csv(SAMPLE_DIR / "negatives_truth.csv")["is_false_negative"].sum()
    )
    # the same truth derived from truth.csv alone (digits of the items), without the negatives file
    digits = item_digits(run)
    anchor_digit = dict(zip(pairs["pair_id"], pairs["image_digit"], strict=True))
    derived = [digits[n] == anchor_digit[p] for p, n in zip(joined["pair_id"], joined["negative_id"], strict=True)]
    assert joined["is_false_negative"].tolist() == derived
