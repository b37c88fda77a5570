"""Property-based tests: malformed tables in every format give a valid Dataset or a DatasetError, nothing else."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from analysis.data.load import Dataset, load_dataset
from analysis.errors import DatasetError

#: NEGSCOPE_FUZZ_EXAMPLES=2000 runs a longer search (the default keeps the suite fast).
EXAMPLES = int(os.environ.get("NEGSCOPE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_NAMES = st.sampled_from(
    ["negative", "negative_1", "negative_2", "negative_10", "label", "anchor_label", "positive_label", "id"]
)
COLUMN_NAMES = st.one_of(
    KNOWN_NAMES, KNOWN_NAMES, KNOWN_NAMES, st.sampled_from(["", "Anchor", "extra"]), st.text(max_size=6)
)

PATHS = st.sampled_from(
    [
        "img/a.png",
        "img/b.JPG",
        "img/bad.png",
        "img/missing.jpg",
        "img",
        "img/",
        "../x.png",
        "/etc/x.png",
        "link/out.png",
        "img/../img/a.png",
        "C:\\x.png",
        "img/a.png\n",
        "\0.png",
        ".png",
        "..",
    ]
)

#: Anything at all: what a broken export might put in a cell.
CHAOS = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["a cat", " ", "", "0", "1", "007", "-3"]),
    PATHS,
    st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
    st.lists(st.integers(max_value=9), max_size=2),
)
#: Cells of a healthy column of each kind.
GOOD = {
    "text": st.sampled_from(["a cat", "a dog", "two birds", "ein B\u00e4r", "\u732b", "x", "42"]),
    "image": st.sampled_from(["img/a.png", "img/b.JPG", "img/../img/a.png"]),
    "label": st.one_of(st.integers(0, 3), st.sampled_from(["cat", "dog"]), st.none()),
    "id": st.integers(0, 20),
    "chaos": CHAOS,
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    """A header (usually with the required columns) and 0-6 rows; most cells healthy, some chaotic."""
    names = draw(st.lists(COLUMN_NAMES, max_size=4, unique=True))
    if draw(st.integers(0, 4)) > 0:
        names = ["anchor", "positive", *(n for n in names if n not in ("anchor", "positive"))]
    if draw(st.integers(0, 9)) == 0:
        names = [*names, draw(st.sampled_from(names or ["anchor"]))]  # a repeated column name
    kinds = []
    for name in names:
        if name in ("label", "anchor_label", "positive_label", "id"):
            kinds.append(name.rsplit("_", 1)[-1])
        else:
            kinds.append(draw(st.sampled_from(["text", "text", "image", "chaos"])))
    n_rows = 0 if draw(st.integers(0, 9)) == 0 else draw(st.integers(min_value=1, max_value=6))
    rows = []
    for _ in range(n_rows):
        row = []
        for kind in kinds:
            chaotic = draw(st.integers(0, 29)) == 0
            row.append(draw(CHAOS if chaotic else GOOD[kind]))
        rows.append(row)
    return names, rows


OPTIONS = st.fixed_dictionaries(
    {
        "batch_size": st.integers(min_value=1, max_value=4),
        "check_images": st.booleans(),
        "in_batch": st.sampled_from([None, True, False]),
        "modality": st.integers(0, 2).flatmap(
            lambda k: (
                st.just(None)
                if k
                else st.sampled_from(
                    [
                        {"positive": "text"},
                        {"anchor": "image"},
                        {"negative": "text"},
                        {"bogus": "text"},
                        {"anchor": "x"},
                    ]
                )
            )
        ),
    }
)
ENCODINGS = st.integers(0, 3).flatmap(
    lambda k: st.sampled_from(["utf-8-sig", "latin-1", "cp1252", "utf-16"]) if k == 0 else st.just("utf-8")
)


def make_folder(base: Path) -> Path:
    """A dataset folder with a good image, an upper-case one, a broken one and a symlink leaving it."""
    data = base / "data"
    (data / "img").mkdir(parents=True)
    Image.new("RGB", (4, 4), (200, 0, 0)).save(data / "img" / "a.png")
    Image.new("RGB", (4, 4), (0, 200, 0)).save(data / "img" / "b.JPG", format="JPEG")
    (data / "img" / "bad.png").write_bytes(b"\x89PNG broken")
    outside = base / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "out.png")
    os.symlink(outside, data / "link")
    return data


def damage(data: bytes, cut: int | None, garbage: bytes) -> bytes:
    """Truncate ``data`` at a fraction and/or splice garbage bytes into it."""
    if cut is not None:
        data = data[: len(data) * cut // 100]
    if garbage:
        middle = len(data) // 2
        data = data[:middle] + garbage + data[middle:]
    return data


_HARM = st.tuples(st.one_of(st.none(), st.integers(min_value=0, max_value=99)), st.binary(max_size=6))
DAMAGE = st.integers(0, 3).flatmap(lambda k: _HARM if k == 0 else st.just((None, b"")))


def check(path: Path, options: dict[str, Any]) -> None:
    """load_dataset returns a consistent Dataset or raises a DatasetError naming the file; nothing else."""
    try:
        ds = load_dataset(path, **options)
    except DatasetError as exc:
        assert exc.file is not None and str(exc)
        assert exc.row is None or exc.row >= 1
        return
    assert_consistent(ds)


def assert_consistent(ds: Dataset) -> None:
    n = len(ds.items)
    assert ds.items["item_id"].tolist() == list(range(n))
    assert not ds.items.duplicated(["modality", "content"]).any()
    assert set(ds.items["modality"]) <= {"text", "image"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in ds.items["key"])
    assert str(ds.items["label"].dtype) == "string"
    assert len(ds.pairs) >= 1 and ds.pairs["pair_id"].is_unique
    for column in ("anchor_id", "positive_id"):
        assert ds.pairs[column].between(0, n - 1).all()
    assert ds.negatives["negative_id"].between(0, n - 1).all()
    assert set(ds.negatives["pair_id"]) <= set(ds.pairs["pair_id"])
    assert set(ds.negatives["source"]) <= {"given", "in_batch"}
    root = ds.root.resolve()
    for content in ds.items.loc[ds.items["modality"] == "image", "content"]:
        assert (root / content).resolve().is_relative_to(root)
    for text in ds.items.loc[ds.items["modality"] == "text", "content"]:
        assert text.strip()
        text.encode("utf-8")
    assert re.fullmatch(r"[0-9a-f]{64}", ds.dataset_hash)


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


@FUZZ
@given(table=tables(), options=OPTIONS, encoding=ENCODINGS, harm=DAMAGE)
def test_csv_fuzz(table, options, encoding, harm) -> None:
    names, rows = table
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    writer.writerows([[_csv_cell(v) for v in row] for row in rows])
    data = damage(buffer.getvalue().encode(encoding, errors="replace"), *harm)
    with tempfile.TemporaryDirectory() as base:
        folder = make_folder(Path(base))
        path = folder / "pairs.csv"
        path.write_bytes(data)
        check(path, options)


@FUZZ
@given(
    table=tables(),
    options=OPTIONS,
    encoding=ENCODINGS,
    harm=DAMAGE,
    junk=st.integers(0, 3).flatmap(
        lambda k: (
            st.just([])
            if k
            else st.lists(
                st.one_of(st.binary(max_size=12), st.sampled_from([b"[1]", b"{", b"null", b'"x"', b"[" * 5000]))
            )
        )
    ),
)
def test_jsonl_fuzz(table, options, encoding, harm, junk) -> None:
    names, rows = table
    lines = [json.dumps(dict(zip(names, row, strict=True))) for row in rows]
    body = "\n".join(lines).encode(encoding, errors="replace")
    data = damage(b"\n".join([body, *junk]), *harm)
    with tempfile.TemporaryDirectory() as base:
        folder = make_folder(Path(base))
        path = folder / "pairs.jsonl"
        path.write_bytes(data)
        check(path, options)


def _arrow_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


@FUZZ
@given(table=tables(), options=OPTIONS, harm=DAMAGE)
def test_parquet_fuzz(table, options, harm) -> None:
    names, rows = table
    arrays = [_arrow_column([row[i] for row in rows]) for i in range(len(names))]
    with tempfile.TemporaryDirectory() as base:
        folder = make_folder(Path(base))
        path = folder / "pairs.parquet"
        try:
            pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
        except (pa.ArrowException, ValueError):
            path.write_bytes(b"PAR1 not really")
        path.write_bytes(damage(path.read_bytes(), *harm))
        check(path, options)


@settings(max_examples=max(EXAMPLES // 2, 1), deadline=None)
@given(data=st.binary(max_size=200), ext=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_random_bytes_fuzz(data: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as base:
        path = Path(base) / f"pairs{ext}"
        path.write_bytes(data)
        check(path, {})


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_fuzz_generator_reaches_valid_datasets(ext: str) -> None:
    """The property tests above are only meaningful if valid tables also pass: check one by hand."""
    names = ["id", "anchor", "positive", "negative_1", "label"]
    rows = [[1, "img/a.png", "a cat", "a dog", 3], [2, "img/b.JPG", "a dog", None, 4]]
    with tempfile.TemporaryDirectory() as base:
        folder = make_folder(Path(base))
        path = folder / f"pairs{ext}"
        if ext == ".csv":
            buffer = io.StringIO()
            csv.writer(buffer).writerows([names, *[[_csv_cell(v) for v in row] for row in rows]])
            path.write_text(buffer.getvalue())
        elif ext == ".jsonl":
            path.write_text("\n".join(json.dumps(dict(zip(names, row, strict=True))) for row in rows))
        else:
            arrays = [_arrow_column([row[i] for row in rows]) for i in range(len(names))]
            pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
        ds = load_dataset(path)
        assert_consistent(ds)
        assert ds.columns == {"anchor": "image", "positive": "text", "negative_1": "text"}
        assert ds.pairs["pair_id"].tolist() == [1, 2]
        assert ds.negatives["source"].tolist() == ["given", "in_batch"]


def _mostly(good: st.SearchStrategy, bad: st.SearchStrategy, *, odds: int = 4) -> st.SearchStrategy:
    """``good`` most of the time, ``bad`` about once in ``odds`` draws."""
    return st.integers(0, odds - 1).flatmap(lambda k: bad if k == 1 else good)  # hypothesis favours 0 and the ends


ODD_IDS = st.sampled_from(["", " ", "x", "q9"])
JUNK_LINE = st.one_of(st.binary(max_size=10), st.sampled_from([b"[]", b"{", b"", b"\xff\xfe", b"null"]))


@st.composite
def beir_lines(draw: st.DrawFn, prefix: str) -> list[bytes]:
    """Lines of queries.jsonl / corpus.jsonl: records with ids prefix1, prefix2, ... and now and then junk."""
    lines = []
    for number in range(1, draw(st.integers(1, 3)) + 1):
        record = {"_id": draw(_mostly(st.just(f"{prefix}{number}"), st.one_of(ODD_IDS, st.integers(0, 3), st.none())))}
        if draw(_mostly(st.just(True), st.just(False))):
            record["text"] = draw(_mostly(st.sampled_from(["what purrs", "cats purr", "dogs"]), st.text(max_size=8)))
        if draw(st.booleans()):
            record["title"] = draw(st.text(max_size=5))
        lines.append(draw(_mostly(st.just(json.dumps(record).encode()), JUNK_LINE, odds=12)))
    return lines


QRELS_LINE = _mostly(
    st.tuples(
        _mostly(st.sampled_from(["q1", "q2"]), ODD_IDS, odds=12),
        _mostly(st.sampled_from(["d1", "d2"]), ODD_IDS, odds=12),
        _mostly(st.just("1"), st.sampled_from(["0", "2", "-1", "x", "1.5", ""]), odds=6),
    ).map(lambda t: "\t".join(t).encode()),
    JUNK_LINE,
    odds=12,
)


@settings(max_examples=max(EXAMPLES // 2, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    queries=beir_lines("q"),
    corpus=beir_lines("d"),
    qrels=st.lists(QRELS_LINE, min_size=1, max_size=4),
    header=_mostly(st.just(True), st.just(False), odds=8),
)
def test_beir_fuzz(queries, corpus, qrels, header) -> None:
    with tempfile.TemporaryDirectory() as base:
        folder = Path(base)
        (folder / "qrels").mkdir()
        (folder / "queries.jsonl").write_bytes(b"\n".join(queries))
        (folder / "corpus.jsonl").write_bytes(b"\n".join(corpus))
        lines = ([b"query-id\tcorpus-id\tscore"] if header else []) + qrels
        (folder / "qrels" / "test.tsv").write_bytes(b"\n".join(lines))
        check(folder, {})
