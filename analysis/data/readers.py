"""Readers for dataset files: each turns one file format into a :class:`RawTable` of Python cell values.

Readers only parse; they do not interpret cells (text or image, labels, ids). That happens in
:mod:`analysis.data.tables`. Every problem with the bytes of a file is raised as a
:class:`~analysis.errors.DatasetError` naming the file and, where known, the row and column.

Row numbers in messages are 1-based data rows (the header is not counted) for CSV, Parquet and Hugging Face
datasets, and line numbers for JSONL files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.data.paths import confined
from analysis.errors import DatasetError, NegScopeError

#: File extensions of the table formats, and the format each one is read as.
TABLE_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

#: Column names of the sentence-transformers convention that NegScope reads (besides ``negative_<k>``).
KNOWN_COLUMNS = ("id", "anchor", "positive", "negative", "label", "anchor_label", "positive_label")
_NEGATIVE_K = re.compile(r"negative_(\d+)")

_CSV_FIELD_LIMIT = 2**31 - 1


def is_known_column(name: str) -> bool:
    """True for a column that NegScope reads (anchor, positive, negatives, labels, id)."""
    return name in KNOWN_COLUMNS or _NEGATIVE_K.fullmatch(name) is not None


def negative_columns(columns: list[str]) -> list[str]:
    """The given-negative columns among ``columns``: ``negative`` first, then ``negative_<k>`` by k."""
    numbered = sorted((int(m.group(1)), name) for name in columns if (m := _NEGATIVE_K.fullmatch(name)) is not None)
    head = ["negative"] if "negative" in columns else []
    return head + [name for _, name in numbered]


@dataclass
class RawTable:
    """Cells of one dataset as read from disk, before interpretation.

    Attributes
    ----------
    file : Path
        The file named in error messages (as the user gave it).
    root : Path
        Absolute folder that image paths are relative to.
    source : Path
        Absolute path of what was read (a table file, or a BEIR / Hugging Face folder).
    format : str
        'csv', 'jsonl', 'parquet', 'beir' or 'hf'.
    columns : list of str
        Column names in file order.
    cells : dict of str to list
        Per column, one Python value per record (``None`` where empty or absent). Parquet and Hugging Face
        readers convert only the columns NegScope reads (see :func:`is_known_column`).
    rows : list of int
        (R,) the row number (JSONL: line number) of each record, for messages.
    files : list of Path, optional
        (R,) the file of each record where records come from several files (BEIR qrels).
    default_modality : dict of str to str
        Modality a reader knows for a column ('text' for every BEIR column); user overrides win.
    """

    file: Path
    root: Path
    source: Path
    format: str
    columns: list[str]
    cells: dict[str, list[Any]]
    rows: list[int]
    files: list[Path] | None = None
    default_modality: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, index: int) -> tuple[Path, int]:
        """The (file, row) of record ``index`` for an error message."""
        file = self.files[index] if self.files is not None else self.file
        return file, self.rows[index]


# --------------------------------------------------------------------------------------------- bytes


def inside(path: Path, root: Path, display: Path) -> Path:
    """``path`` resolved (links followed), refused with a DatasetError when it leaves the folder ``root``."""
    try:
        return confined(path, root)
    except NegScopeError as exc:
        raise DatasetError(str(exc), file=display) from None


def read_bytes(path: Path, display: Path) -> bytes:
    """Read a whole file, turning OS errors into a DatasetError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("the file does not exist", file=display) from None
    except IsADirectoryError:
        raise DatasetError("is a folder, expected a file", file=display) from None
    except OSError as exc:
        raise DatasetError(f"the file cannot be read ({exc.strerror or exc})", file=display) from None


def _check_not_utf16(data: bytes, display: Path) -> None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError("the file is UTF-16 encoded; save it as UTF-8", file=display)


def undecodable_message(text: str) -> str | None:
    """A message when ``text`` holds characters that cannot be UTF-8 (undecodable bytes, lone surrogates)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        code = ord(bad)
        if 0xDC80 <= code <= 0xDCFF:
            return (
                f"the text is not valid UTF-8 (byte 0x{code - 0xDC00:02X} at character {exc.start + 1}); "
                "save the file as UTF-8"
            )
        return f"the text holds an unpaired surrogate character (U+{code:04X}) that is not valid Unicode"
    return None


# ----------------------------------------------------------------------------------------------- CSV


def read_csv(path: Path, display: Path) -> RawTable:
    """Read a comma-separated file with a header row.

    The bytes are decoded as UTF-8 with undecodable bytes kept as surrogates, so that a cell which is not
    valid UTF-8 is reported with its row and column when it is used (see :func:`undecodable_message`).
    """
    data = read_bytes(path, display)
    _check_not_utf16(data, display)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise DatasetError("the file is empty", file=display)
    text = data.decode("utf-8", errors="surrogateescape")
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[list[str]] = []
    rows: list[int] = []
    try:
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if header is None:
                header = record
                continue
            records.append(record)
            rows.append(len(records))
    except csv.Error as exc:
        row = len(records) + 1 if header is not None else None
        hint = " (a quote that is never closed?)" if "end of data" in str(exc) else ""
        raise DatasetError(f"malformed CSV near line {reader.line_num}: {exc}{hint}", file=display, row=row) from None
    if header is None:
        raise DatasetError("the file is empty (no header row)", file=display)
    for position, name in enumerate(header, start=1):
        message = undecodable_message(name)
        if message is not None:
            raise DatasetError(f"the header (column {position}) is not valid UTF-8: {message}", file=display)
    _check_unique_columns(header, display)
    if not records:
        raise DatasetError("the file has a header but no data rows", file=display)
    width = len(header)
    columns: dict[str, list[Any]] = {name: [] for name in header}
    for row, record in zip(rows, records, strict=True):
        if len(record) > width:
            extra = record[width:]
            if any(value.strip() for value in extra):
                raise DatasetError(
                    f"this row has {len(record)} values but the header names {width} columns",
                    file=display,
                    row=row,
                )
        for position, name in enumerate(header):
            value = record[position] if position < len(record) else ""
            columns[name].append(value if value != "" else None)
    return RawTable(
        file=display,
        root=path.absolute().parent.resolve(),
        source=path.resolve(),
        format="csv",
        columns=list(header),
        cells=columns,
        rows=rows,
    )


def _check_unique_columns(columns: list[str], display: Path) -> None:
    seen: set[str] = set()
    for name in columns:
        if name in seen and name != "":
            raise DatasetError(f"the column '{name}' appears more than once in the header", file=display)
        seen.add(name)


# --------------------------------------------------------------------------------------------- JSONL


def iter_json_lines(path: Path, display: Path) -> list[tuple[int, dict[str, Any]]]:
    """Parse a JSON Lines file into (line number, object) pairs, skipping blank lines.

    Raises
    ------
    DatasetError
        Naming the line when it is not UTF-8, not valid JSON, or not a JSON object.
    """
    data = read_bytes(path, display)
    _check_not_utf16(data, display)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    records: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"line {number} is not valid UTF-8 (byte 0x{raw[exc.start]:02X} at byte {exc.start + 1}); "
                "save the file as UTF-8",
                file=display,
                row=number,
            ) from None
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:
            detail = f": {exc}" if isinstance(exc, ValueError) else " (nested too deeply)"
            raise DatasetError(f"line {number} is not valid JSON{detail}", file=display, row=number) from None
        if not isinstance(value, dict):
            raise DatasetError(
                f"line {number} is a JSON {type(value).__name__}, expected an object like "
                '{"anchor": ..., "positive": ...}',
                file=display,
                row=number,
            )
        records.append((number, value))
    return records


def read_jsonl(path: Path, display: Path) -> RawTable:
    """Read a JSON Lines file: one JSON object per line; keys are columns."""
    records = iter_json_lines(path, display)
    if not records:
        raise DatasetError("the file holds no records", file=display)
    names: dict[str, None] = {}
    for _, record in records:
        for key in record:
            names.setdefault(key, None)
    columns = list(names)
    cells = {name: [record.get(name) for _, record in records] for name in columns}
    return RawTable(
        file=display,
        root=path.absolute().parent.resolve(),
        source=path.resolve(),
        format="jsonl",
        columns=columns,
        cells=cells,
        rows=[number for number, _ in records],
    )


# ------------------------------------------------------------------------------------------- Parquet


def _arrow_columns(table: Any, display: Path, *, convert: Callable[[str, Any], list[Any]] | None = None):
    names = [str(name) for name in table.column_names]
    _check_unique_columns(names, display)
    cells: dict[str, list[Any]] = {}
    for position, name in enumerate(names):
        if not is_known_column(name):
            continue
        try:
            values = table.column(position).to_pylist()
        except Exception as exc:  # noqa: BLE001 - any arrow conversion failure is bad input
            raise DatasetError(
                f"the column cannot be read ({type(exc).__name__}: {exc})", file=display, column=name
            ) from None
        cells[name] = convert(name, values) if convert is not None else values
    return names, cells


def read_parquet(path: Path, display: Path) -> RawTable:
    """Read a Parquet file (only the columns NegScope uses are converted to Python values)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        read_bytes(path, display)  # raises the right "missing" / "folder" error
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
        raise DatasetError(f"not a readable Parquet file ({type(exc).__name__}: {exc})", file=display) from None
    if table.num_rows == 0:
        raise DatasetError("the file has no rows", file=display)
    columns, cells = _arrow_columns(table, display)
    return RawTable(
        file=display,
        root=path.absolute().parent.resolve(),
        source=path.resolve(),
        format="parquet",
        columns=columns,
        cells=cells,
        rows=list(range(1, table.num_rows + 1)),
    )


def read_table(path: Path, display: Path) -> RawTable:
    """Read a CSV, JSONL or Parquet table chosen by the file extension."""
    kind = TABLE_EXTENSIONS.get(path.suffix.lower())
    if kind == "csv":
        return read_csv(path, display)
    if kind == "jsonl":
        return read_jsonl(path, display)
    if kind == "parquet":
        return read_parquet(path, display)
    hint = " (a JSON array file? save one JSON object per line as .jsonl)" if path.suffix.lower() == ".json" else ""
    raise DatasetError(
        f"unknown file type '{path.suffix or path.name}'{hint}; NegScope reads .csv, .jsonl and .parquet tables, "
        "a BEIR folder or a saved Hugging Face dataset folder",
        file=display,
    )


def table_header(path: Path) -> list[str] | None:
    """Column names of a table file read cheaply (first record / schema), or None when unreadable."""
    kind = TABLE_EXTENSIONS.get(path.suffix.lower())
    try:
        if kind == "csv":
            with path.open("rb") as fh:
                head = fh.read(1 << 16)
            text = head.decode("utf-8-sig", errors="replace")
            for record in csv.reader(io.StringIO(text, newline="")):
                if record:
                    return record
            return None
        if kind == "jsonl":
            with path.open("rb") as fh:
                for raw in fh:
                    if raw.strip():
                        value = json.loads(raw.decode("utf-8-sig"))
                        return list(value) if isinstance(value, dict) else None
            return None
        if kind == "parquet":
            import pyarrow.parquet as pq

            return [str(name) for name in pq.read_schema(path).names]
    except Exception:  # noqa: BLE001 - a header we cannot read just means "not a candidate"
        return None
    return None


# ---------------------------------------------------------------------------------------------- BEIR


def is_beir_folder(folder: Path) -> bool:
    """True when ``folder`` has the files of a BEIR dataset (corpus.jsonl, queries.jsonl or qrels/)."""
    return (folder / "corpus.jsonl").is_file() or (folder / "queries.jsonl").is_file() or (folder / "qrels").is_dir()


def _text_field(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def _read_qrels(folder: Path, display: Path) -> list[tuple[str, str, Path, int]]:
    qrels_dir = folder / "qrels"
    files = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not files:
        raise DatasetError(
            "a BEIR folder needs qrels/*.tsv files (query-id, corpus-id, score); none found", file=display / "qrels"
        )
    relevant: list[tuple[str, str, Path, int]] = []
    for qrels in files:
        shown = display / "qrels" / qrels.name
        inside(qrels, folder, shown)
        data = read_bytes(qrels, shown)
        _check_not_utf16(data, shown)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            row = data[: exc.start].count(b"\n")
            raise DatasetError("the file is not valid UTF-8", file=shown, row=row or None) from None
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            continue
        header = [part.strip().lower() for part in lines[0].split("\t")]
        if header[:3] != ["query-id", "corpus-id", "score"]:
            raise DatasetError(
                f"expected the header 'query-id<TAB>corpus-id<TAB>score', found {lines[0][:80]!r}", file=shown
            )
        for row, line in enumerate(lines[1:], start=1):
            parts = line.split("\t")
            if len(parts) < 3:
                raise DatasetError(
                    f"expected 3 tab-separated values (query-id, corpus-id, score), found {len(parts)}",
                    file=shown,
                    row=row,
                )
            query_id, doc_id, score_text = parts[0].strip(), parts[1].strip(), parts[2].strip()
            try:
                score = float(score_text)
            except ValueError:
                raise DatasetError(
                    f"the score {score_text[:40]!r} is not a number", file=shown, row=row, column="score"
                ) from None
            if not query_id:
                raise DatasetError("the query id is empty", file=shown, row=row, column="query-id")
            if not doc_id:
                raise DatasetError("the corpus id is empty", file=shown, row=row, column="corpus-id")
            if score > 0:
                relevant.append((query_id, doc_id, shown, row))
    return relevant


def read_beir(folder: Path, display: Path) -> RawTable:
    """Read a BEIR folder into a table with columns id ('queryid:docid'), anchor (query) and positive (doc).

    All ``qrels/*.tsv`` files are read in name order; a (query, document) pair with score > 0 becomes a
    pair (listed once, at its first occurrence). A document's text is its title and text joined by a
    space, as sentence-transformers' information-retrieval evaluator does.
    """
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise DatasetError(f"a BEIR folder needs {name}; it is missing", file=display / name)
        inside(folder / name, folder, display / name)
    relevant = _read_qrels(folder, display)
    if not relevant:
        raise DatasetError("no (query, document) pair has a score above 0", file=display / "qrels")
    wanted_docs = {doc_id for _, doc_id, _, _ in relevant}

    queries: dict[str, tuple[str, int]] = {}
    queries_file = display / "queries.jsonl"
    for line, record in iter_json_lines(folder / "queries.jsonl", queries_file):
        query_id = _text_field(record.get("_id")).strip()
        if not query_id:
            raise DatasetError("the query has no '_id'", file=queries_file, row=line, column="_id")
        if query_id in queries:
            raise DatasetError(
                f"the query id {query_id!r} is also on line {queries[query_id][1]}",
                file=queries_file,
                row=line,
                column="_id",
            )
        queries[query_id] = (_text_field(record.get("text")), line)

    docs: dict[str, tuple[str, int]] = {}
    corpus_file = display / "corpus.jsonl"
    for line, record in iter_json_lines(folder / "corpus.jsonl", corpus_file):
        doc_id = _text_field(record.get("_id")).strip()
        if not doc_id:
            raise DatasetError("the document has no '_id'", file=corpus_file, row=line, column="_id")
        if doc_id not in wanted_docs:
            continue
        if doc_id in docs:
            raise DatasetError(
                f"the document id {doc_id!r} is also on line {docs[doc_id][1]}",
                file=corpus_file,
                row=line,
                column="_id",
            )
        title = _text_field(record.get("title")).strip()
        body = _text_field(record.get("text"))
        docs[doc_id] = (f"{title} {body}" if title and body.strip() else (title or body), line)

    ids: list[str] = []
    anchors: list[str] = []
    positives: list[str] = []
    rows: list[int] = []
    files: list[Path] = []
    seen: set[str] = set()
    for query_id, doc_id, shown, row in relevant:
        pair_id = f"{query_id}:{doc_id}"
        if pair_id in seen:
            continue
        seen.add(pair_id)
        if query_id not in queries:
            raise DatasetError(
                f"the query {query_id!r} is not in queries.jsonl", file=shown, row=row, column="query-id"
            )
        if doc_id not in docs:
            raise DatasetError(
                f"the document {doc_id!r} is not in corpus.jsonl", file=shown, row=row, column="corpus-id"
            )
        query_text, query_line = queries[query_id]
        if not query_text.strip():
            raise DatasetError("the query text is empty", file=queries_file, row=query_line, column="text")
        doc_text, doc_line = docs[doc_id]
        if not doc_text.strip():
            raise DatasetError("the document has no title and no text", file=corpus_file, row=doc_line, column="text")
        ids.append(pair_id)
        anchors.append(query_text)
        positives.append(doc_text)
        rows.append(row)
        files.append(shown)
    resolved = folder.resolve()
    return RawTable(
        file=display,
        root=resolved,
        source=resolved,
        format="beir",
        columns=["id", "anchor", "positive"],
        cells={"id": ids, "anchor": anchors, "positive": positives},
        rows=rows,
        files=files,
        default_modality={"anchor": "text", "positive": "text"},
    )


# ------------------------------------------------------------------------------------- Hugging Face


def is_hf_folder(folder: Path) -> bool:
    """True when ``folder`` was written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _json_file(path: Path, root: Path, display: Path) -> Any:
    inside(path, root, display)
    try:
        return json.loads(read_bytes(path, display).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise DatasetError(
            f"cannot read the saved Hugging Face dataset: {path.name} is not valid JSON ({detail})", file=display
        ) from None


def check_hf_files(folder: Path, display: Path) -> None:
    """Check that every file a saved Hugging Face dataset names stays inside its folder (before any is read).

    ``datasets.load_from_disk`` opens the split folders listed in ``dataset_dict.json`` and the Arrow files
    listed in each ``state.json`` (``_data_files``) wherever they point; a hostile folder could name files
    outside it (``../../x.arrow``, an absolute path, a symbolic link). Those are refused here.

    Raises
    ------
    DatasetError
        Naming the JSON file and the entry that leaves the folder, or a malformed entry.
    """
    root = inside(folder, folder, display)
    split_folders = [folder]
    if (folder / "dataset_dict.json").is_file():
        data = _json_file(folder / "dataset_dict.json", root, display / "dataset_dict.json")
        splits = data.get("splits") if isinstance(data, dict) else None
        if not isinstance(splits, list) or not all(isinstance(k, str) and k for k in splits):
            raise DatasetError("expected {\"splits\": [names of split folders]}", file=display / "dataset_dict.json")
        split_folders = []
        for name in splits:
            split = folder / name
            inside(split, root, display / "dataset_dict.json")
            split_folders.append(split)
    for split in split_folders:
        shown = display / split.relative_to(folder) / "state.json" if split != folder else display / "state.json"
        for name in ("dataset_info.json", "state.json"):
            if (split / name).exists():
                inside(split / name, root, shown.parent / name)
        if not (split / "state.json").is_file():
            continue  # datasets reports the missing file
        state = _json_file(split / "state.json", root, shown)
        files = state.get("_data_files") if isinstance(state, dict) else None
        if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("filename"), str) and f["filename"] for f in files
        ):
            raise DatasetError('expected "_data_files": [{"filename": ...}, ...]', file=shown)
        for entry in files:
            name = entry["filename"]
            if "\0" in name:
                raise DatasetError("a data file name holds a NUL character", file=shown)
            inside(split / name, root, shown)


def read_hf(folder: Path, display: Path) -> RawTable:
    """Read a Hugging Face ``datasets`` folder saved with ``save_to_disk``.

    For a DatasetDict the 'train' split is read, or the first split when there is no 'train'.
    ``ClassLabel`` label columns are turned into their class names.
    """
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            "this is a saved Hugging Face dataset; reading it needs the 'datasets' package: pip install datasets",
            file=display,
        ) from None
    check_hf_files(folder, display)
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken folder
        raise DatasetError(
            f"cannot read the saved Hugging Face dataset ({type(exc).__name__}: {exc})", file=display
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if not loaded:
            raise DatasetError("the saved DatasetDict has no splits", file=display)
        split = "train" if "train" in loaded else next(iter(loaded))
        dataset = loaded[split]
    else:
        dataset = loaded
    if len(dataset) == 0:
        raise DatasetError("the dataset has no rows", file=display)
    features = dataset.features
    for name, feature in features.items():
        if is_known_column(name) and isinstance(feature, datasets.Image):
            raise DatasetError(
                "the column holds embedded images (datasets.Image); NegScope reads image paths relative to the "
                "dataset folder: save the images as files and store their paths",
                file=display,
                column=name,
            )

    def convert(name: str, values: list[Any]) -> list[Any]:
        feature = features.get(name)
        if isinstance(feature, datasets.ClassLabel):
            return [feature.int2str(v) if isinstance(v, int) and 0 <= v < feature.num_classes else None for v in values]
        return values

    try:
        table = dataset.with_format("arrow")[:]
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"cannot read the dataset's rows ({type(exc).__name__}: {exc})", file=display) from None
    columns, cells = _arrow_columns(table, display, convert=convert)
    resolved = folder.resolve()
    return RawTable(
        file=display,
        root=resolved,
        source=resolved,
        format="hf",
        columns=columns,
        cells=cells,
        rows=list(range(1, len(dataset) + 1)),
    )
