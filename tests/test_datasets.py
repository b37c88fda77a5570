"""Tests of analysis.data.load: every format, items / pairs / negatives, modality, labels, ids and errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.data.load import Dataset, find_dataset_file, load_dataset
from analysis.data.tables import in_batch_negatives
from analysis.errors import DatasetError

# ------------------------------------------------------------------------------------------ helpers


def write_image(path: Path, color: tuple[int, int, int] = (10, 20, 30), *, size: int = 8) -> Path:
    """Write a small real PNG/JPEG/... (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}[path.suffix.lower()]
    Image.new("RGB", (size, size), color).save(path, format=fmt)
    return path


def text_key(text: str) -> str:
    return hashlib.sha256(("text\0" + text).encode("utf-8")).hexdigest()


def image_key(path: Path) -> str:
    inner = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(("image\0" + inner).encode("ascii")).hexdigest()


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` as CSV, JSONL or Parquet by the extension of ``path`` (nulls left out of JSONL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for record in df.to_dict(orient="records"):
                clean = {k: v for k, v in record.items() if not (v is None or (isinstance(v, float) and np.isnan(v)))}
                fh.write(json.dumps(clean) + "\n")
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        raise AssertionError(path)
    return path


def items_by_content(ds: Dataset) -> dict[str, int]:
    return dict(zip(ds.items["content"], ds.items["item_id"], strict=True))


def negatives_of(ds: Dataset, pair_id, source: str | None = None) -> list[str]:
    """Contents of a pair's negatives, in table order."""
    neg = ds.negatives[ds.negatives["pair_id"] == pair_id]
    if source is not None:
        neg = neg[neg["source"] == source]
    contents = ds.items.set_index("item_id")["content"]
    return [contents[i] for i in neg["negative_id"]]


def assert_error(exc: pytest.ExceptionInfo[DatasetError], *, file: Path | str, row=None, column=None, text=None):
    """The error names the file (by name), the row and the column, in its attributes and its message."""
    err = exc.value
    message = str(err)
    assert Path(err.file).name == Path(file).name, (err.file, file)
    assert Path(file).name in message
    if row is not None:
        assert err.row == row, message
        assert f"row {row}" in message
    if column is not None:
        assert err.column == column, message
        assert f"column '{column}'" in message
    if text is not None:
        assert text.lower() in message.lower(), message


@pytest.fixture
def image_pairs(tmp_path: Path) -> pd.DataFrame:
    """Five image->text pairs over four real images (image 0 used twice), captions with one repeat."""
    for i in range(4):
        write_image(tmp_path / "images" / f"{i}.png", (i * 50, 0, 0))
    return pd.DataFrame(
        {
            "id": [100, 101, 102, 103, 104],
            "anchor": ["images/0.png", "images/1.png", "images/2.png", "images/3.png", "images/0.png"],
            "positive": ["a zero", "a one", "a two", "a three", "a zero"],
            "label": [0, 1, 2, 3, 0],
        }
    )


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_table_formats_build_items_pairs_and_keys(tmp_path: Path, image_pairs: pd.DataFrame, ext: str) -> None:
    path = write_table(image_pairs, tmp_path / f"pairs{ext}")
    ds = load_dataset(path, batch_size=32)
    assert ds.format == ext[1:]
    assert ds.source == path.resolve()
    assert ds.root == tmp_path.resolve()
    assert ds.columns == {"anchor": "image", "positive": "text"}
    # items deduplicated by (modality, content): image 0 and caption "a zero" appear once
    assert len(ds.items) == 8
    assert ds.items["item_id"].tolist() == list(range(8))
    assert ds.items["content"].tolist() == [
        "images/0.png",
        "a zero",
        "images/1.png",
        "a one",
        "images/2.png",
        "a two",
        "images/3.png",
        "a three",
    ]
    assert ds.items["modality"].tolist() == ["image", "text"] * 4
    for content, modality, key in ds.items[["content", "modality", "key"]].itertuples(index=False):
        expected = image_key(tmp_path / content) if modality == "image" else text_key(content)
        assert key == expected
    assert ds.items["label"].dtype == pd.StringDtype()
    assert ds.items["label"].tolist() == ["0", "0", "1", "1", "2", "2", "3", "3"]
    assert ds.pairs["pair_id"].tolist() == [100, 101, 102, 103, 104]
    assert ds.pairs["pair_id"].dtype == np.int64
    lookup = items_by_content(ds)
    assert ds.pairs["anchor_id"].tolist() == [lookup[a] for a in image_pairs["anchor"]]
    assert ds.pairs["positive_id"].tolist() == [lookup[p] for p in image_pairs["positive"]]
    assert ds.anchor_modality == "image" and ds.positive_modality == "text"


def test_same_content_gives_same_hash_across_formats_and_names(tmp_path: Path, image_pairs: pd.DataFrame) -> None:
    hashes = set()
    for name in ("pairs.csv", "other_name.csv", "pairs.jsonl", "pairs.parquet"):
        hashes.add(load_dataset(write_table(image_pairs, tmp_path / name)).dataset_hash)
    assert len(hashes) == 1
    # a copy of the whole folder elsewhere: same hash
    copy = tmp_path.parent / (tmp_path.name + "_copy")
    shutil.copytree(tmp_path, copy)
    assert load_dataset(copy / "pairs.csv").dataset_hash in hashes
    # a changed label, a changed caption, a changed image, another batch size: another hash
    changed = image_pairs.copy()
    changed.loc[2, "label"] = 7
    assert load_dataset(write_table(changed, tmp_path / "changed.csv")).dataset_hash not in hashes
    changed = image_pairs.copy()
    changed.loc[2, "positive"] = "a deux"
    assert load_dataset(write_table(changed, tmp_path / "changed2.csv")).dataset_hash not in hashes
    assert load_dataset(tmp_path / "pairs.csv", batch_size=2).dataset_hash not in hashes
    write_image(copy / "images" / "3.png", (1, 2, 3))
    assert load_dataset(copy / "pairs.csv").dataset_hash not in hashes


def test_text_only_table_and_string_ids(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"id": ["q1", "q2", "007"], "anchor": ["what is a cat", "dog?", "x"], "positive": ["a", "b", "c"]}
    )
    ds = load_dataset(write_table(df, tmp_path / "t.csv"))
    assert ds.columns == {"anchor": "text", "positive": "text"}
    assert ds.pairs["pair_id"].tolist() == ["q1", "q2", "007"]
    assert not pd.api.types.is_integer_dtype(ds.pairs["pair_id"])
    assert ds.negatives["pair_id"].tolist().count("q1") == 2
    assert set(ds.items["modality"]) == {"text"}
    assert ds.items["label"].isna().all()


def test_pair_ids_default_to_row_numbers(tmp_path: Path) -> None:
    df = pd.DataFrame({"anchor": ["a", "b", "c"], "positive": ["x", "y", "z"]})
    for ext in (".csv", ".jsonl", ".parquet"):
        ds = load_dataset(write_table(df, tmp_path / f"t{ext}"))
        assert ds.pairs["pair_id"].tolist() == [0, 1, 2]
        assert ds.pairs["pair_id"].dtype == np.int64


def test_integer_ids_that_are_not_canonical_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,anchor,positive\n007,a,x\n8,b,y\n")
    assert load_dataset(path).pairs["pair_id"].tolist() == ["007", "8"]


# ---------------------------------------------------------------------------------------- negatives


def test_in_batch_negatives_are_the_other_positives_of_the_batch(tmp_path: Path) -> None:
    # 7 pairs, batch size 3 -> batches [0,1,2] [3,4,5] [6]; pairs 0 and 2 share positive "p0"
    df = pd.DataFrame(
        {
            "anchor": [f"a{i}" for i in range(7)],
            "positive": ["p0", "p1", "p0", "p3", "p4", "p5", "p6"],
        }
    )
    ds = load_dataset(write_table(df, tmp_path / "t.csv"), batch_size=3)
    assert set(ds.negatives["source"]) == {"in_batch"}
    assert set(ds.negatives["column"]) == {""}
    assert negatives_of(ds, 0) == ["p1"]  # p0 is its own positive: skipped
    assert negatives_of(ds, 1) == ["p0"]  # p0 listed once although two pairs have it
    assert negatives_of(ds, 2) == ["p1"]
    assert negatives_of(ds, 3) == ["p4", "p5"]
    assert negatives_of(ds, 4) == ["p3", "p5"]
    assert negatives_of(ds, 5) == ["p3", "p4"]
    assert negatives_of(ds, 6) == []  # alone in its batch
    # batch size 1: none at all; a batch as large as the data: all other distinct positives
    assert load_dataset(tmp_path / "t.csv", batch_size=1).negatives.empty
    big = load_dataset(tmp_path / "t.csv", batch_size=100)
    assert negatives_of(big, 6) == ["p0", "p1", "p3", "p4", "p5"]


def _reference_in_batch(positive_ids: list[int], batch_size: int, wanted: list[bool]) -> list[tuple[int, int]]:
    out = []
    for start in range(0, len(positive_ids), batch_size):
        batch = list(range(start, min(start + batch_size, len(positive_ids))))
        for i in batch:
            if not wanted[i]:
                continue
            seen = []
            for j in batch:
                neg = positive_ids[j]
                if j != i and neg != positive_ids[i] and neg not in seen:
                    seen.append(neg)
                    out.append((i, neg))
    return out


def test_in_batch_negatives_match_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        positives = rng.integers(0, max(1, n // 2 + 1), size=n)
        wanted = rng.random(n) < 0.7
        batch_size = int(rng.integers(1, 12))
        rows, items = in_batch_negatives(positives, batch_size=batch_size, wanted=wanted)
        got = list(zip(rows.tolist(), items.tolist(), strict=True))
        assert got == _reference_in_batch(positives.tolist(), batch_size, wanted.tolist())


def test_given_negatives_in_numeric_column_order(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "anchor": ["a0", "a1", "a2"],
            "positive": ["p0", "p1", "p2"],
            "negative_10": ["n10", "x", None],
            "negative_2": ["n2", None, None],
            "negative_1": ["n1", "p0", None],
        }
    )
    for ext in (".csv", ".jsonl", ".parquet"):
        ds = load_dataset(write_table(df, tmp_path / f"t{ext}"), batch_size=3)
        given = ds.negatives[ds.negatives["source"] == "given"]
        assert negatives_of(ds, 0, "given") == ["n1", "n2", "n10"]
        assert given[given["pair_id"] == 0]["column"].tolist() == ["negative_1", "negative_2", "negative_10"]
        # a given negative that is another pair's positive is the same item
        assert negatives_of(ds, 1, "given") == ["p0", "x"]
        assert given[given["pair_id"] == 1]["negative_id"].iloc[0] == ds.pairs["positive_id"].iloc[0]
        # pairs with given negatives get no in-batch ones; the pair without any gets them
        assert negatives_of(ds, 0, "in_batch") == [] and negatives_of(ds, 1, "in_batch") == []
        assert negatives_of(ds, 2, "in_batch") == ["p0", "p1"]
        assert ds.columns["negative_10"] == "text"
        # negatives of each pair are contiguous, pairs in order
        assert ds.negatives["pair_id"].is_monotonic_increasing


def test_in_batch_option(tmp_path: Path) -> None:
    df = pd.DataFrame({"anchor": ["a0", "a1"], "positive": ["p0", "p1"], "negative": ["n0", "n1"]})
    path = write_table(df, tmp_path / "t.csv")
    ds = load_dataset(path)
    assert ds.negatives["source"].tolist() == ["given", "given"]
    assert ds.negatives["column"].tolist() == ["negative", "negative"]
    both = load_dataset(path, in_batch=True)
    assert negatives_of(both, 0) == ["n0", "p1"]
    assert both.negatives["source"].tolist() == ["given", "in_batch", "given", "in_batch"]
    assert load_dataset(tmp_path / "t.csv", in_batch=False).negatives["source"].tolist() == ["given", "given"]
    plain = write_table(df[["anchor", "positive"]], tmp_path / "plain.csv")
    assert load_dataset(plain, in_batch=False).negatives.empty


def test_dedup_across_roles(tmp_path: Path) -> None:
    df = pd.DataFrame({"anchor": ["same", "b", "same"], "positive": ["x", "same", "x"], "negative_1": ["x", "b", "y"]})
    ds = load_dataset(write_table(df, tmp_path / "t.csv"))
    assert ds.items["content"].tolist() == ["same", "x", "b", "y"]
    assert not ds.items.duplicated(["modality", "content"]).any()
    assert ds.pairs[["anchor_id", "positive_id"]].values.tolist() == [[0, 1], [2, 0], [0, 1]]


# -------------------------------------------------------------------------------------------- labels


def test_role_labels_and_first_label_wins(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "anchor": ["a", "b", "a"],
            "positive": ["x", "y", "y"],
            "anchor_label": ["cat", None, "dog"],
            "positive_label": [None, "bird", "fish"],
            "label": ["L0", "L1", "L2"],
        }
    )
    ds = load_dataset(write_table(df, tmp_path / "t.jsonl"))
    labels = dict(zip(ds.items["content"], ds.items["label"], strict=True))
    # role-specific label first, else the pair label; conflicting labels: the first one stays
    assert labels == {"a": "cat", "x": "L0", "b": "L1", "y": "bird"}


def test_numeric_labels_become_strings_and_missing_are_null(tmp_path: Path) -> None:
    df = pd.DataFrame({"anchor": ["a", "b", "c"], "positive": ["x", "y", "z"], "label": [3.0, np.nan, 5.0]})
    for ext in (".csv", ".parquet", ".jsonl"):
        table = df.astype({"label": "Int64"}) if ext == ".csv" else df  # pandas would write 3.0 in a CSV
        ds = load_dataset(write_table(table, tmp_path / f"t{ext}"))
        assert ds.items["label"].dtype == pd.StringDtype()
        assert ds.items["label"].tolist()[:2] == ["3", "3"]
        assert ds.items["label"].isna().tolist() == [False, False, True, True, False, False]


def test_negatives_get_no_label(tmp_path: Path) -> None:
    df = pd.DataFrame({"anchor": ["a"], "positive": ["x"], "negative": ["n"], "label": ["L"]})
    ds = load_dataset(write_table(df, tmp_path / "t.csv"))
    assert dict(zip(ds.items["content"], ds.items["label"], strict=True))["n"] is pd.NA


# ------------------------------------------------------------------------------------------ modality


def test_image_extensions_any_case_and_image_negatives(tmp_path: Path) -> None:
    write_image(tmp_path / "a.JPG")
    write_image(tmp_path / "b.webp", (0, 90, 0))
    write_image(tmp_path / "c.bmp", (0, 0, 90))
    write_image(tmp_path / "d.jpeg", (90, 90, 0))
    df = pd.DataFrame({"anchor": ["t1", "t2"], "positive": ["a.JPG", "b.webp"], "negative_1": ["c.bmp", "d.jpeg"]})
    ds = load_dataset(write_table(df, tmp_path / "t.csv"))
    assert ds.columns == {"anchor": "text", "positive": "image", "negative_1": "image"}
    assert ds.items.set_index("content").loc["c.bmp", "key"] == image_key(tmp_path / "c.bmp")


def test_modality_override(tmp_path: Path) -> None:
    # the captions happen to end in ".png": overriding reads them as text, and no file is looked for
    df = pd.DataFrame(
        {"anchor": ["x1", "x2"], "positive": ["see figure.png", "logo.PNG"], "negative": ["n.png", "m.jpg"]}
    )
    path = write_table(df, tmp_path / "t.csv")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=1, column="positive", text="does not exist")
    ds = load_dataset(path, modality={"positive": "text", "negative": "text"})
    assert ds.columns == {"anchor": "text", "positive": "text", "negative": "text"}
    assert set(ds.items["modality"]) == {"text"}
    assert ds.items.set_index("content").loc["logo.PNG", "key"] == text_key("logo.PNG")


def test_modality_override_to_image_and_group_key(tmp_path: Path) -> None:
    # a PNG without extension: only read as an image through an override
    write_image(tmp_path / "img" / "photo.png", (5, 5, 5)).rename(tmp_path / "img" / "photo")
    df = pd.DataFrame({"anchor": ["img/photo"], "positive": ["text"], "negative_1": ["img/photo"]})
    path = write_table(df, tmp_path / "t.csv")
    ds = load_dataset(path, modality={"anchor": "image", "negative": "image"})
    assert ds.columns == {"anchor": "image", "positive": "text", "negative_1": "image"}
    assert len(ds.items) == 2  # the negative is the anchor image
    assert ds.items["key"].iloc[0] == image_key(tmp_path / "img" / "photo")


def test_modality_override_errors(tmp_path: Path) -> None:
    path = write_table(pd.DataFrame({"anchor": ["a"], "positive": ["b"]}), tmp_path / "t.csv")
    with pytest.raises(DatasetError, match="'label'"):
        load_dataset(path, modality={"label": "text"})
    with pytest.raises(DatasetError, match="'text' or 'image'"):
        load_dataset(path, modality={"anchor": "audio"})


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_mixed_modalities_in_one_column(tmp_path: Path, ext: str) -> None:
    for i in range(3):
        write_image(tmp_path / f"{i}.png")
    df = pd.DataFrame({"anchor": ["0.png", "1.png", "a caption", "2.png"], "positive": ["a", "b", "c", "d"]})
    path = write_table(df, tmp_path / f"t{ext}")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=3, column="anchor", text="mixes image paths and text")
    assert "'a caption'" in str(exc.value)


# ------------------------------------------------------------------------------------- image errors


@pytest.mark.parametrize(
    "bad",
    ["../outside.png", "/etc/outside.png", "sub/../../outside.png", "link/outside.png"],
)
def test_paths_leaving_the_folder_are_refused(tmp_path: Path, bad: str) -> None:
    data = tmp_path / "data"
    outside = write_image(tmp_path / "outside.png")
    write_image(data / "ok.png")
    (data / "sub").mkdir()
    os.symlink(outside.parent, data / "link")
    if bad.startswith("/"):
        bad = str(outside)
    df = pd.DataFrame({"anchor": ["ok.png", bad], "positive": ["x", "y"]})
    path = write_table(df, data / "t.csv")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path, check_images=False)
    assert_error(exc, file=path, row=2, column="anchor")
    assert "absolute" in str(exc.value) or "leaves the dataset folder" in str(exc.value)


def test_dotdot_inside_the_folder_is_allowed(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    path = write_table(pd.DataFrame({"anchor": ["sub/../a.png"], "positive": ["x"]}), tmp_path / "t.csv")
    ds = load_dataset(path)
    assert ds.items["content"].iloc[0] == "sub/../a.png"  # exactly as written
    assert ds.items["key"].iloc[0] == image_key(tmp_path / "a.png")


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    write_image(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    df = pd.DataFrame({"anchor": ["a", "b", "c"], "positive": ["ok.png", "gone.png", "broken.png"]})
    path = write_table(df, tmp_path / "t.csv")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="positive", text="does not exist")
    assert "2 images in all" in str(exc.value)
    (tmp_path / "gone.png").mkdir()
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="positive", text="is a folder")
    (tmp_path / "gone.png").rmdir()
    write_image(tmp_path / "gone.png")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=3, column="positive", text="not a readable image")


def test_without_image_checks_keys_still_hash_the_bytes(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image")
    df = pd.DataFrame({"anchor": ["a", "b"], "positive": ["broken.png", "missing.png"]})
    ds = load_dataset(write_table(df, tmp_path / "t.csv"), check_images=False)
    keys = ds.items.set_index("content")["key"]
    assert keys["broken.png"] == image_key(tmp_path / "broken.png")
    assert keys["missing.png"] == hashlib.sha256(b"image-path\0missing.png").hexdigest()


def test_many_images_on_threads(tmp_path: Path) -> None:
    n = 300  # over one chunk: exercises the thread pool
    for i in range(n):
        write_image(tmp_path / "im" / f"{i}.png", (i % 256, i // 256, 7), size=4)
    df = pd.DataFrame({"anchor": [f"im/{i}.png" for i in range(n)], "positive": [f"t{i}" for i in range(n)]})
    seen: list[float] = []
    ds = load_dataset(write_table(df, tmp_path / "t.csv"), progress=seen.append)
    assert len(ds.items) == 2 * n
    images = ds.items[ds.items["modality"] == "image"]
    assert images["key"].tolist() == [image_key(tmp_path / c) for c in images["content"]]
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert all(a <= b for a, b in zip(seen, seen[1:], strict=False))


# ------------------------------------------------------------------------------------- input errors


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "nope.csv")
    assert_error(exc, file=tmp_path / "nope.csv", text="does not exist")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "data.xlsx")
    assert_error(exc, file=tmp_path / "data.xlsx", text="unknown file type")
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(DatasetError, match="jsonl"):
        load_dataset(tmp_path / "data.json")


@pytest.mark.parametrize(
    ("name", "content", "text"),
    [
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n  \n", "empty"),
        ("header.csv", b"anchor,positive\n", "no data rows"),
        ("empty.jsonl", b"", "no records"),
        ("blank.jsonl", b"\n \n", "no records"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, content: bytes, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, text=text)


def test_parquet_with_zero_rows_and_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"anchor": pd.Series([], dtype=str), "positive": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, text="no rows")
    write_table(pd.DataFrame({"anchor": ["a"] * 50, "positive": ["b"] * 50}), path)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, text="not a readable parquet file")


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_missing_required_columns(tmp_path: Path, ext: str) -> None:
    path = write_table(pd.DataFrame({"anchor": ["a"], "text": ["b"]}), tmp_path / f"t{ext}")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, text="missing required column 'positive'")
    assert "'text'" in str(exc.value)  # lists what was found


def test_missing_column_hints(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("anchor, positive\na, b\n")
    with pytest.raises(DatasetError, match="spaces and upper case"):
        load_dataset(path)
    path.write_text("anchor;positive\na;b\n")
    with pytest.raises(DatasetError, match="separated by ';'"):
        load_dataset(path)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("column", ["anchor", "positive"])
def test_empty_anchor_or_positive_cell(tmp_path: Path, ext: str, column: str) -> None:
    df = pd.DataFrame({"anchor": ["a", "b", "c"], "positive": ["x", "y", "z"]})
    df[column] = df[column].astype(object)
    df.loc[1, column] = None
    path = write_table(df, tmp_path / f"t{ext}")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column=column, text="empty")


def test_whitespace_only_cell_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('anchor,positive\na,x\n"   ",y\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="anchor", text="empty")


def test_non_utf8_csv_names_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("anchor,positive\nok,fine\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="anchor", text="not valid UTF-8")
    assert "0xE9" in str(exc.value)
    # a multi-line quoted cell before it does not throw the row number off
    path.write_bytes(b'anchor,positive\n"two\nlines",x\nb,y\nc,"bad \xff"\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=3, column="positive", text="not valid UTF-8")


def test_non_utf8_header_and_utf16_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"anchor,positive,caf\xe9\na,b,c\n")
    with pytest.raises(DatasetError, match="header"):
        load_dataset(path)
    path.write_bytes("anchor,positive\na,b\n".encode("utf-16"))
    with pytest.raises(DatasetError, match="UTF-16"):
        load_dataset(path)
    path.write_bytes(b"\xef\xbb\xbfanchor,positive\na,b\n")  # a UTF-8 BOM is fine
    assert load_dataset(path).pairs.shape[0] == 1


def test_non_utf8_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"anchor": "a", "positive": "b"}\n{"anchor": "caf\xe9", "positive": "b"}\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, text="line 2 is not valid UTF-8")


def test_lone_surrogate_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "x\\ud800", "positive": "b"}\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="anchor", text="surrogate")


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ('{"anchor": "a", "positive": ', "line 3 is not valid JSON"),
        ("[1, 2]", "line 3 is a JSON list"),
        ("not json at all", "line 3 is not valid JSON"),
        ("[" * 100000, "line 3 is not valid JSON"),
    ],
)
def test_malformed_json_lines(tmp_path: Path, line: str, text: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n\n' + line + "\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=3, text=text)


def test_jsonl_cells_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": ["x"], "positive": "b"}\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="anchor", text="a list")
    path.write_text('{"anchor": "a", "positive": true}\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=1, column="positive", text="true/false")
    path.write_text('{"anchor": "a", "positive": "b", "label": {"x": 1}}\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=1, column="label")
    # numbers are text
    path.write_text('{"anchor": 12, "positive": 1.5, "id": 4.0}\n')
    ds = load_dataset(path)
    assert ds.items["content"].tolist() == ["12", "1.5"] and ds.pairs["pair_id"].tolist() == [4]


def test_csv_structure_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("anchor,positive\na,b\nc,d,e\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, text="3 values but the header names 2")
    path.write_text('anchor,positive\na,b\nc,"never closed\n')
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, text="never closed")
    path.write_text("anchor,positive,anchor\na,b,c\n")
    with pytest.raises(DatasetError, match="more than once"):
        load_dataset(path)
    # trailing empty values and short rows are fine
    path.write_text("anchor,positive,negative\na,b,,\nc,d\n")
    ds = load_dataset(path)
    assert ds.pairs.shape[0] == 2 and set(ds.negatives["source"]) == {"in_batch"}


def test_duplicate_and_empty_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,anchor,positive\n1,a,b\n2,c,d\n1,e,f\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=3, column="id", text="also used on row 1")
    path.write_text("id,anchor,positive\n1,a,b\n,c,d\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert_error(exc, file=path, row=2, column="id", text="empty")


def test_invalid_options(tmp_path: Path) -> None:
    path = write_table(pd.DataFrame({"anchor": ["a"], "positive": ["b"]}), tmp_path / "t.csv")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DatasetError, match="batch_size"):
            load_dataset(path, batch_size=bad)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- folders


def test_folder_with_one_table(tmp_path: Path, image_pairs: pd.DataFrame) -> None:
    write_table(image_pairs, tmp_path / "pairs.parquet")
    ds = load_dataset(tmp_path)
    assert ds.format == "parquet" and ds.source == (tmp_path / "pairs.parquet").resolve()


def test_folder_with_several_tables(tmp_path: Path, image_pairs: pd.DataFrame) -> None:
    write_table(image_pairs, tmp_path / "pairs.csv")
    pd.DataFrame({"id": [1], "truth": [0]}).to_csv(tmp_path / "truth.csv", index=False)
    assert find_dataset_file(tmp_path) == ("csv", tmp_path / "pairs.csv")
    assert load_dataset(tmp_path).pairs.shape[0] == 5
    write_table(image_pairs, tmp_path / "more.jsonl")
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path)
    assert_error(exc, file=tmp_path, text="several tables")
    assert "more.jsonl" in str(exc.value) and "pairs.csv" in str(exc.value)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="holds no dataset"):
        load_dataset(tmp_path)


# ----------------------------------------------------------------------------------------------- BEIR


def make_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "Cats purr."},
        {"_id": "d2", "title": "", "text": "Dogs bark."},
        {"_id": "d3", "title": "Birds", "text": "Birds sing."},
        {"_id": "d4", "title": "Unused", "text": "Never relevant."},
    ]
    queries = [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "what barks"}, {"_id": "q3", "text": "x"}]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq1\td3\t0\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\nq1\td1\t1\n")
    return folder


def test_beir_folder(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "beir")
    ds = load_dataset(folder, batch_size=2)
    assert ds.format == "beir" and ds.root == folder.resolve() and ds.source == folder.resolve()
    assert ds.pairs["pair_id"].tolist() == ["q1:d1", "q2:d2", "q3:d3"]  # score > 0, each pair once
    contents = ds.items.set_index("item_id")["content"]
    assert [contents[i] for i in ds.pairs["anchor_id"]] == ["what purrs", "what barks", "x"]
    assert [contents[i] for i in ds.pairs["positive_id"]] == ["Cats Cats purr.", "Dogs bark.", "Birds Birds sing."]
    assert "Never relevant." not in set(ds.items["content"])
    assert ds.columns == {"anchor": "text", "positive": "text"}
    assert negatives_of(ds, "q1:d1") == ["Dogs bark."] and negatives_of(ds, "q3:d3") == []
    assert set(ds.items["modality"]) == {"text"}


def test_beir_errors(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "beir")
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td2\t1\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(folder)
    assert_error(exc, file=qrels, row=2, column="query-id", text="'q9'")
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\tmany\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(folder)
    assert_error(exc, file=qrels, row=1, column="score", text="not a number")
    qrels.write_text("q1\td1\t1\n")
    with pytest.raises(DatasetError, match="header"):
        load_dataset(folder)
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td404\t1\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(folder)
    assert_error(exc, file=qrels, row=1, column="corpus-id", text="not in corpus.jsonl")
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": ""}\n')
    (folder / "qrels" / "train.tsv").unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset(folder)
    assert_error(exc, file=folder / "queries.jsonl", row=1, column="text", text="empty")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match="queries.jsonl"):
        load_dataset(folder)


# ---------------------------------------------------------------------------------------- HF datasets


def test_hf_dataset_folder(tmp_path: Path, image_pairs: pd.DataFrame) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "hf"
    folder.mkdir()
    for i in range(4):
        write_image(folder / "images" / f"{i}.png", (i * 50, 0, 0))
    datasets.Dataset.from_dict({k: list(v) for k, v in image_pairs.items()}).save_to_disk(str(folder / "ds"))
    shutil.copytree(folder / "images", folder / "ds" / "images")
    ds = load_dataset(folder / "ds")
    assert ds.format == "hf" and ds.root == (folder / "ds").resolve()
    csv_ds = load_dataset(write_table(image_pairs, tmp_path / "pairs.csv"))
    pd.testing.assert_frame_equal(ds.items, csv_ds.items)
    pd.testing.assert_frame_equal(ds.pairs, csv_ds.pairs)
    assert ds.dataset_hash == csv_ds.dataset_hash


def test_hf_dataset_dict_split_and_class_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "anchor": datasets.Value("string"),
            "positive": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
        }
    )
    train = datasets.Dataset.from_dict(
        {"anchor": ["a", "b"], "positive": ["x", "y"], "label": [1, 0]}, features=features
    )
    test = datasets.Dataset.from_dict({"anchor": ["t"], "positive": ["u"], "label": [0]}, features=features)
    datasets.DatasetDict({"test": test, "train": train}).save_to_disk(str(tmp_path / "dd"))
    ds = load_dataset(tmp_path / "dd")
    assert ds.items["content"].tolist() == ["a", "x", "b", "y"]
    assert ds.items["label"].tolist() == ["dog", "dog", "cat", "cat"]
    datasets.DatasetDict({"validation": test}).save_to_disk(str(tmp_path / "dd2"))
    assert load_dataset(tmp_path / "dd2").items["content"].tolist() == ["t", "u"]


def test_hf_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"anchor": ["a", None], "positive": ["x", "y"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "ds")
    assert_error(exc, file=tmp_path / "ds", row=2, column="anchor", text="empty")
    datasets.Dataset.from_dict({"anchor": ["a"], "other": ["x"]}).save_to_disk(str(tmp_path / "ds2"))
    with pytest.raises(DatasetError, match="missing required column 'positive'"):
        load_dataset(tmp_path / "ds2")
    (tmp_path / "ds2" / "state.json").write_text("{broken")
    with pytest.raises(DatasetError, match="cannot read the saved Hugging Face dataset"):
        load_dataset(tmp_path / "ds2")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "ds")
    assert_error(exc, file=tmp_path / "ds", text="pip install datasets")


def test_hf_embedded_images_are_refused_with_advice(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    image = Image.new("RGB", (4, 4))
    features = datasets.Features({"anchor": datasets.Image(), "positive": datasets.Value("string")})
    datasets.Dataset.from_dict({"anchor": [image], "positive": ["x"]}, features=features).save_to_disk(
        str(tmp_path / "ds")
    )
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "ds")
    assert_error(exc, file=tmp_path / "ds", column="anchor", text="embedded images")


# ------------------------------------------------------------------------------------ building blocks


def test_image_path_mask_matches_the_scalar_rule() -> None:
    from analysis.data.images import image_path_mask, looks_like_image_path

    rng = np.random.default_rng(1)
    pieces = ["a", "B", ".", "png", "PNG", "jpg", "JpEg", "webp", "bmp", "gif", "\n", " ", "/", "..", "é", "猫"]
    values: list[str | None] = [None, "", "x" * 5000 + ".png", "x" * 4000 + ".png"]
    for _ in range(3000):
        values.append("".join(rng.choice(pieces, size=int(rng.integers(1, 6)))))
    expected = [v is not None and looks_like_image_path(v) for v in values]
    assert image_path_mask(values).tolist() == expected
    assert any(expected) and not all(expected)


def test_dataset_hash_from_tables_matches(tmp_path: Path, image_pairs: pd.DataFrame) -> None:
    from analysis.data.tables import dataset_hash

    image_pairs["negative_1"] = ["a one", None, "a zero", "x", "y"]
    for in_batch in (None, True, False):
        ds = load_dataset(write_table(image_pairs, tmp_path / "t.csv"), in_batch=in_batch)
        assert dataset_hash(ds.items, ds.pairs, ds.negatives) == ds.dataset_hash
    # the hash reads the tables: any change to them changes it
    changed = ds.negatives.copy()
    changed.loc[0, "column"] = "negative_2"
    assert dataset_hash(ds.items, ds.pairs, changed) != ds.dataset_hash
    changed = ds.items.copy()
    changed.loc[1, "label"] = pd.NA
    assert dataset_hash(changed, ds.pairs, ds.negatives) != ds.dataset_hash


def test_bundled_digits_sample_loads() -> None:
    from analysis.runs.workspace import SAMPLE_DATA

    if not Path(SAMPLE_DATA).is_file():
        pytest.skip("the digits sample is not built")
    ds = load_dataset(str(SAMPLE_DATA))
    truth = pd.read_csv(Path(SAMPLE_DATA).parent / "truth.csv")
    assert ds.anchor_modality == "image" and ds.positive_modality == "text"
    assert sorted(ds.pairs["pair_id"].tolist()) == sorted(truth["id"].tolist())
    assert (ds.negatives["source"] == "given").all()
    assert ds.negatives.groupby("pair_id").size().max() == 8
    # the folder holds pairs.csv, truth.csv and negatives_truth.csv: the folder resolves to pairs.csv
    assert load_dataset(Path(SAMPLE_DATA).parent).dataset_hash == ds.dataset_hash
