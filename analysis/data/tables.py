"""From raw cells to NegScope's tables: items (deduplicated), pairs and negatives (given and in-batch).

The tables have the columns of the run folder (see ``DESIGN.md``)::

    items      item_id, modality ('text' | 'image'), content, label (pandas 'string', nullable), key
    pairs      pair_id, anchor_id, positive_id
    negatives  pair_id, negative_id, source ('given' | 'in_batch'), column (dataset column, '' for in_batch)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.data.images import image_path_mask, inspect_images, resolve_image_path, text_key
from analysis.data.readers import RawTable, negative_columns, undecodable_message
from analysis.errors import DatasetError
from analysis.runs.folder import NEGATIVE_SOURCES

MODALITIES = ("text", "image")
_REQUIRED = ("anchor", "positive")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class DatasetTables:
    """The tables built from one dataset (see module docstring), the modality of each column and the hash."""

    items: pd.DataFrame
    pairs: pd.DataFrame
    negatives: pd.DataFrame
    columns: dict[str, str]
    dataset_hash: str


# ------------------------------------------------------------------------------------------- cells


def _fail(table: RawTable, index: int | None, column: str | None, message: str) -> DatasetError:
    if index is None:
        return DatasetError(message, file=table.file, column=column)
    file, row = table.where(index)
    return DatasetError(message, file=file, row=row, column=column)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes | bytearray | memoryview):
        return "binary data"
    return f"a {type(value).__name__} value"


def content_cells(table: RawTable, column: str) -> list[str | None]:
    """Text or image-path cells of ``column``; None where empty (blank strings, null, NaN).

    Numbers become their text; booleans, lists, objects and binary data are refused.
    """
    out: list[str | None] = []
    append = out.append
    for index, value in enumerate(table.cells[column]):
        if type(value) is str:  # the common case, first
            if not value or value.isspace():
                append(None)
            elif value.isascii():
                append(value)
            else:
                message = undecodable_message(value)
                if message is not None:
                    raise _fail(table, index, column, message)
                append(value)
            continue
        if value is None:
            append(None)
            continue
        if isinstance(value, str):
            text = str(value)
        elif isinstance(value, float):
            if math.isnan(value):
                append(None)
                continue
            text = repr(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        else:
            raise _fail(table, index, column, f"the cell holds {_type_name(value)}; expected text or an image path")
        if not text.strip():
            append(None)
            continue
        message = undecodable_message(text)
        if message is not None:
            raise _fail(table, index, column, message)
        append(text)
    return out


MISSING_LABEL_TEXTS = frozenset({"", "nan", "none", "null", "<na>"})
"""Label cells that mean "no label" (compared stripped and lower-cased), besides JSON null and NaN."""


def normalise_label(value: Any) -> str | None:
    """The one meaning of a class label: its stripped text, or None when the label is missing.

    Missing: None, NaN (float or pandas NA), and text that is empty, blank or one of ``MISSING_LABEL_TEXTS``
    in any case (``"null"``, ``"None"``, ``"NaN"``, ``"<NA>"``: what CSV and JSON writers put in empty
    cells). Integral floats become integers (``3.0`` -> ``'3'``) and booleans ``'true'`` / ``'false'``.

    Raises
    ------
    TypeError
        For values that are not text, numbers or booleans (lists, objects, bytes).
    """
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, int | np.integer | str):
        text = str(value).strip()
        return None if text.lower() in MISSING_LABEL_TEXTS else text
    raise TypeError(f"a label cannot hold {_type_name(value)}")


def normalise_labels(values: Any) -> np.ndarray:
    """(N,) object array of :func:`normalise_label` over ``values`` (str, or None where missing)."""
    return np.array([normalise_label(v) for v in list(values)], dtype=object)



def label_cells(table: RawTable, column: str) -> list[str | None]:
    """Label cells as strings (integral floats as integers: 3.0 -> '3'); None where empty."""
    out: list[str | None] = []
    for index, value in enumerate(table.cells[column]):
        try:
            text = normalise_label(value)
        except TypeError:
            raise _fail(
                table, index, column, f"the label holds {_type_name(value)}; expected text or a number"
            ) from None
        if text is not None and (message := undecodable_message(text)) is not None:
            raise _fail(table, index, column, message)
        out.append(text)
    return out


def pair_ids(table: RawTable) -> pd.Series:
    """The ``id`` column as pair ids (int64 when every id is a canonical integer, else strings).

    Without an ``id`` column, the 0-based row number.
    """
    if "id" not in table.cells:
        return pd.Series(np.arange(len(table), dtype=np.int64), name="pair_id")
    ids: list[str] = []
    all_int = True
    first_row: dict[str, int] = {}
    for index, value in enumerate(table.cells["id"]):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise _fail(table, index, "id", "the id is empty; every pair needs a unique id")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _fail(table, index, "id", f"the id holds {_type_name(value)}; expected text or an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise _fail(table, index, "id", f"the id {value!r} is not an integer")
            value = int(value)
        text = str(value)
        if not text.strip():
            raise _fail(table, index, "id", "the id is empty; every pair needs a unique id")
        if (message := undecodable_message(text)) is not None:
            raise _fail(table, index, "id", message)
        if text in first_row:
            _, earlier = table.where(first_row[text])
            raise _fail(table, index, "id", f"the id {text[:80]!r} is also used on row {earlier}; ids must be unique")
        first_row[text] = index
        if all_int:
            try:
                number = int(text)
            except ValueError:
                all_int = False
            else:
                all_int = str(number) == text and -_INT64_MAX - 1 <= number <= _INT64_MAX
        ids.append(text)
    if all_int:
        return pd.Series(np.array([int(t) for t in ids], dtype=np.int64), name="pair_id")
    return pd.Series(ids, dtype=object, name="pair_id").astype(str)


# ---------------------------------------------------------------------------------------- modality


def _check_override(modality: dict[str, str] | None, content_columns: list[str], table: RawTable) -> dict[str, str]:
    if not modality:
        return {}
    if not isinstance(modality, dict):
        raise DatasetError(f"modality must map column names to 'text' or 'image', got {modality!r}", file=table.file)
    out: dict[str, str] = {}
    negatives = [c for c in content_columns if c not in _REQUIRED]
    for column, value in modality.items():
        if value not in MODALITIES:
            raise DatasetError(
                f"modality for column '{column}' must be 'text' or 'image', got {value!r}", file=table.file
            )
        if column in content_columns:
            out[column] = value
        elif column == "negative" and negatives:
            for name in negatives:
                out.setdefault(name, value)
        else:
            raise DatasetError(
                f"the modality override names column '{column}', which is not an anchor, positive or negative "
                f"column of this dataset (those are: {', '.join(content_columns)})",
                file=table.file,
            )
    # an exact per-column entry wins over the 'negative' group entry
    for column, value in modality.items():
        if column in content_columns:
            out[column] = value
    return out


def column_modality(table: RawTable, column: str, values: list[str | None], fallback: str) -> str:
    """Detect whether ``column`` holds text or image paths; refuse a column that mixes both.

    Raises
    ------
    DatasetError
        Naming the first row whose cell disagrees with the majority of the column.
    """
    present = ~pd.isna(np.asarray(values, dtype=object)) if values else np.zeros(0, dtype=bool)
    if not present.any():
        return fallback
    is_image = image_path_mask(values)
    n_image = int(is_image.sum())
    n_text = int(present.sum()) - n_image
    if n_text == 0:
        return "image"
    if n_image == 0:
        return "text"
    # the majority decides; a tie goes to the first cell's modality
    first = int(np.argmax(present))
    majority_image = n_image > n_text if n_image != n_text else bool(is_image[first])
    offending = present & (is_image != majority_image)
    index = int(np.argmax(offending))
    value = values[index] or ""
    what = "an image path" if not majority_image else "text, not an image path"
    major_count = n_image if majority_image else n_text
    noun = "image paths" if majority_image else "text"
    raise _fail(
        table,
        index,
        column,
        f"the column mixes image paths and text: this cell holds {what} ({value[:80]!r}) while {major_count} of "
        f"{n_image + n_text} cells are {noun}; one column holds one modality (image paths end in .png, .jpg, .jpeg, "
        f".webp or .bmp): fix the cell, or pass modality={{'{column}': 'text'}} to read the whole column as text",
    )


# ------------------------------------------------------------------------------------------ tables


def build_tables(
    table: RawTable,
    *,
    batch_size: int,
    modality: dict[str, str] | None,
    check_images: bool,
    in_batch: bool | None,
    progress: Callable[[float], None] | None = None,
) -> DatasetTables:
    """Interpret a raw table: detect modalities, check images, deduplicate items, build pairs and negatives.

    Parameters
    ----------
    table : RawTable
        Cells as read by :mod:`analysis.data.readers`.
    batch_size : int
        Pairs per batch for in-batch negatives (consecutive pairs in file order).
    modality : dict, optional
        Column -> 'text' | 'image' overrides ('negative' applies to every negative column).
    check_images : bool
        Open every image with PIL; a missing or unreadable image is an error.
    in_batch : bool or None
        None: in-batch negatives for the pairs without given negatives; True: for every pair; False: never.
    progress : callable, optional
        Called with the fraction done (image checks dominate).
    """
    columns = table.columns
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        raise DatasetError(_missing_columns_message(missing, columns), file=table.file)
    neg_columns = negative_columns(columns)
    content_columns = [*_REQUIRED, *neg_columns]
    overrides = {**table.default_modality, **_check_override(modality, content_columns, table)}

    values = {column: content_cells(table, column) for column in content_columns}
    for column in _REQUIRED:
        for index, value in enumerate(values[column]):
            if value is None:
                raise _fail(table, index, column, f"the {column} is empty; every pair needs an anchor and a positive")
    ids = pair_ids(table)

    modalities: dict[str, str] = {}
    for column in _REQUIRED:
        modalities[column] = overrides.get(column) or column_modality(table, column, values[column], "text")
    for column in neg_columns:
        modalities[column] = overrides.get(column) or column_modality(
            table, column, values[column], modalities["positive"]
        )
    if progress is not None:
        progress(0.05)

    image_keys = _image_keys(table, values, modalities, check_images=check_images, progress=progress)

    labels = {name: label_cells(table, name) for name in ("label", "anchor_label", "positive_label") if name in columns}
    anchor_labels = _role_labels(labels, "anchor_label", len(table))
    positive_labels = _role_labels(labels, "positive_label", len(table))

    n_pairs = len(table)
    slots = [*_REQUIRED, *neg_columns]
    width = len(slots)
    flat = np.empty(n_pairs * width, dtype=object)  # row-major: (row, slot) -> content or None
    flat_label = np.full(n_pairs * width, None, dtype=object)
    for slot, column in enumerate(slots):
        flat[slot::width] = values[column]
    flat_label[0::width] = anchor_labels
    flat_label[1::width] = positive_labels
    slot_kind = np.array([MODALITIES.index(modalities[column]) for column in slots], dtype=np.int64)
    item_of, item_kind, item_content = _deduplicate(flat, np.tile(slot_kind, n_pairs))
    item_modality = [MODALITIES[k] for k in item_kind]
    item_label = _first_labels(item_of, flat_label, len(item_content))

    anchor_ids = item_of[0::width].copy()
    positive_ids = item_of[1::width].copy()
    given_at = np.flatnonzero(item_of >= 0)
    given_at = given_at[given_at % width >= 2]
    neg_pair = given_at // width
    neg_item = item_of[given_at]
    neg_code = given_at % width - 2  # position of the column in neg_columns

    keys = [
        image_keys[content] if kind == "image" else text_key(content)
        for kind, content in zip(item_modality, item_content, strict=True)
    ]
    items = pd.DataFrame(
        {
            "item_id": np.arange(len(item_content), dtype=np.int64),
            "modality": _names_from_codes(item_kind, list(MODALITIES)),
            "content": pd.Series(item_content, dtype=str),
            "label": pd.Series(item_label, dtype="string"),
            "key": pd.Series(keys, dtype=str),
        }
    )
    pairs = pd.DataFrame({"pair_id": ids, "anchor_id": anchor_ids, "positive_id": positive_ids})

    given_rows = neg_pair.astype(np.int64)
    has_given = np.zeros(n_pairs, dtype=bool)
    has_given[given_rows] = True
    wants_in_batch = ~has_given if in_batch is None else np.full(n_pairs, bool(in_batch))
    batch_rows, batch_items = in_batch_negatives(positive_ids, batch_size=batch_size, wanted=wants_in_batch)

    rows = np.concatenate([given_rows, batch_rows])
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    source_code = np.concatenate([np.zeros(len(given_rows), np.int64), np.ones(len(batch_rows), np.int64)])[order]
    # column codes: 0 = '' (in-batch), 1 + k = neg_columns[k]
    column_code = np.concatenate([neg_code + 1, np.zeros(len(batch_rows), np.int64)])
    negatives = pd.DataFrame(
        {
            "pair_id": ids.to_numpy()[rows],
            "negative_id": np.concatenate([neg_item, batch_items])[order],
            "source": _names_from_codes(source_code, ["given", "in_batch"]),
            "column": _names_from_codes(column_code[order], ["", *neg_columns]),
        }
    )
    negatives["pair_id"] = negatives["pair_id"].astype(pairs["pair_id"].dtype)
    if progress is not None:
        progress(1.0)
    return DatasetTables(
        items=items,
        pairs=pairs,
        negatives=negatives,
        columns=modalities,
        dataset_hash=_hash_tables(
            item_kind=item_kind,
            keys=keys,
            labels=item_label,
            contents=item_content,
            pair_ids=ids,
            anchor_ids=anchor_ids,
            positive_ids=positive_ids,
            negative_rows=rows,
            negative_ids=negatives["negative_id"].to_numpy(),
            negative_source=source_code,
            negative_column=(column_code[order], ["", *neg_columns]),
        ),
    )


def _deduplicate(flat: np.ndarray, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Items by (modality, content), numbered in order of first appearance.

    Parameters
    ----------
    flat : numpy.ndarray
        (M,) object, contents or None, in reading order.
    kind : numpy.ndarray
        (M,) int64 modality code (index into ``MODALITIES``) of each cell.

    Returns
    -------
    item_of : numpy.ndarray
        (M,) int64 item id of each cell, -1 where the cell is None.
    item_kind : numpy.ndarray
        (N,) int64 modality code of each item.
    item_content : list of str
        (N,) content of each item.
    """
    present = ~pd.isna(flat)
    item_of = np.full(len(flat), -1, dtype=np.int64)
    firsts, kinds, uniques, groups = [], [], [], []
    for code in range(len(MODALITIES)):
        at = np.flatnonzero(present & (kind == code))
        if not len(at):
            continue
        codes, unique = pd.factorize(flat[at], sort=False)  # codes numbered by first appearance
        first_index = np.unique(codes, return_index=True)[1]
        firsts.append(at[first_index])
        kinds.append(np.full(len(unique), code, dtype=np.int64))
        uniques.extend(unique.tolist())
        groups.append((at, codes, len(unique)))
    if not firsts:
        return item_of, np.zeros(0, dtype=np.int64), []
    first = np.concatenate(firsts)
    order = np.argsort(first, kind="stable")
    new_id = np.empty(len(first), dtype=np.int64)
    new_id[order] = np.arange(len(first), dtype=np.int64)
    offset = 0
    for at, codes, count in groups:
        item_of[at] = new_id[offset + codes]
        offset += count
    return item_of, np.concatenate(kinds)[order], [uniques[i] for i in order]


def _first_labels(item_of: np.ndarray, flat_label: np.ndarray, n_items: int) -> list[str | None]:
    """(N,) the first non-null label each item gets, in reading order (later, conflicting labels are ignored)."""
    labels: list[str | None] = [None] * n_items
    at = np.flatnonzero((item_of >= 0) & ~pd.isna(flat_label))
    if len(at):
        items, first = np.unique(item_of[at], return_index=True)
        for item, position in zip(items.tolist(), at[first].tolist(), strict=True):
            labels[item] = flat_label[position]
    return labels


def _names_from_codes(codes: np.ndarray, names: list[str]) -> pd.Series:
    """(M,) integer codes into ``names`` -> a string Series (decoded by arrow: fast)."""
    import pyarrow as pa

    decoded = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int64()), pa.array(names, type=pa.string()))
    return pd.Series(decoded.cast(pa.string()).to_pandas()).astype(str)


def _missing_columns_message(missing: list[str], columns: list[str]) -> str:
    found = ", ".join(repr(c) for c in columns[:20]) + (" ..." if len(columns) > 20 else "")
    message = (
        f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
        f"(found: {found or 'no columns'}); expected the sentence-transformers columns anchor, positive, "
        "optionally negative or negative_1..negative_k, label or anchor_label/positive_label, and id"
    )
    near = [c for c in columns if c.strip().lower() in missing and c not in missing]
    if near:
        message += f"; note {', '.join(repr(c) for c in near)}: check spaces and upper case in the header"
    if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
        message += "; the header looks separated by ';', tab or '|': NegScope reads comma-separated files"
    if "_id" in columns:
        message += "; this looks like part of a BEIR dataset: pass the BEIR folder instead"
    return message


def _role_labels(labels: dict[str, list[str | None]], role_column: str, n: int) -> list[str | None]:
    role = labels.get(role_column)
    shared = labels.get("label")
    if role is None:
        return shared if shared is not None else [None] * n
    if shared is None:
        return role
    return [r if r is not None else s for r, s in zip(role, shared, strict=True)]


def _image_keys(
    table: RawTable,
    values: dict[str, list[str | None]],
    modalities: dict[str, str],
    *,
    check_images: bool,
    progress: Callable[[float], None] | None,
) -> dict[str, str]:
    """Resolve, check and hash every distinct image path; errors name the first row that uses the path."""
    position = {column: i for i, column in enumerate(modalities)}
    first_use: dict[str, tuple[int, str]] = {}
    for column, kind in modalities.items():
        if kind != "image":
            continue
        for index, content in enumerate(values[column]):
            if content is None:
                continue
            seen = first_use.get(content)
            if seen is None or seen[0] > index:
                first_use[content] = (index, column)
    if not first_use:
        return {}
    root = table.root
    ordered = sorted(first_use.items(), key=lambda kv: (kv[1][0], position[kv[1][1]]))
    paths: list[Path] = []
    contents: list[str] = []
    for content, (index, column) in ordered:
        resolved, problem = resolve_image_path(root, content)
        if problem is not None:
            raise _fail(table, index, column, problem)
        paths.append(resolved)  # type: ignore[arg-type]
        contents.append(content)

    def report(fraction: float) -> None:
        if progress is not None:
            progress(0.05 + 0.9 * fraction)

    results = inspect_images(paths, contents, check=check_images, progress=report)
    problems = [(content, result.problem) for content, result in zip(contents, results, strict=True) if result.problem]
    if problems:
        content, problem = problems[0]
        index, column = first_use[content]
        more = f" ({len(problems)} images in all are missing or unreadable)" if len(problems) > 1 else ""
        raise _fail(table, index, column, f"{problem}{more}")
    return {content: result.key for content, result in zip(contents, results, strict=True)}  # type: ignore[misc]


def in_batch_negatives(
    positive_ids: np.ndarray, *, batch_size: int, wanted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """In-batch negatives: within consecutive batches of pairs, the other pairs' positives.

    A pair's own positive item is skipped (when another pair shares it), and each item is listed once
    per pair.

    Parameters
    ----------
    positive_ids : numpy.ndarray
        (P,) int64 positive item of each pair, in file order.
    batch_size : int
        Pairs per batch (the last batch may be smaller).
    wanted : numpy.ndarray, optional
        (P,) bool, the pairs that get in-batch negatives (default: all).

    Returns
    -------
    rows : numpy.ndarray
        (M,) int64 pair positions (0-based row of the pair).
    items : numpy.ndarray
        (M,) int64 negative item ids, in batch order within each pair.
    """
    positive_ids = np.asarray(positive_ids, dtype=np.int64)
    n = len(positive_ids)
    if wanted is None:
        wanted = np.ones(n, dtype=bool)
    out_rows: list[np.ndarray] = []
    out_items: list[np.ndarray] = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if not wanted[start:stop].any():
            continue
        pos = positive_ids[start:stop]
        size = stop - start
        _, first_index = np.unique(pos, return_index=True)
        first = np.zeros(size, dtype=bool)
        first[first_index] = True
        keep = (pos[None, :] != pos[:, None]) & first[None, :] & wanted[start:stop, None]
        i, j = np.nonzero(keep)
        out_rows.append(i + start)
        out_items.append(pos[j])
    if not out_rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_rows).astype(np.int64), np.concatenate(out_items).astype(np.int64)


def dataset_hash(items: pd.DataFrame, pairs: pd.DataFrame, negatives: pd.DataFrame) -> str:
    """Content hash of a dataset: item keys, labels and image paths; pairs; negatives with source and column.

    File names and folders do not enter it, so the same content gives the same hash wherever it lies.
    :func:`build_tables` computes the same value from its arrays.

    Parameters
    ----------
    items, pairs, negatives : pandas.DataFrame
        The tables built by :func:`build_tables`.

    Returns
    -------
    str
        sha256 hex digest.
    """
    rows = pd.Index(pairs["pair_id"]).get_indexer(negatives["pair_id"])
    labels = items["label"].astype(object)
    return _hash_tables(
        item_kind=np.array([MODALITIES.index(m) for m in items["modality"].tolist()], dtype=np.int64),
        keys=items["key"].astype(str).tolist(),
        labels=[None if pd.isna(v) else str(v) for v in labels.tolist()],
        contents=items["content"].astype(str).tolist(),
        pair_ids=pairs["pair_id"],
        anchor_ids=pairs["anchor_id"].to_numpy(),
        positive_ids=pairs["positive_id"].to_numpy(),
        negative_rows=rows,
        negative_ids=negatives["negative_id"].to_numpy(),
        negative_source=np.array([NEGATIVE_SOURCES.index(v) for v in negatives["source"].tolist()], dtype=np.int64),
        negative_column=pd.factorize(
            negatives["column"].astype(str) if "column" in negatives else pd.Series([""] * len(negatives), dtype=str)
        ),
    )


def content_hash(items: pd.DataFrame, pairs: pd.DataFrame, negatives: pd.DataFrame) -> str:
    """Content-only hash of a dataset: what review decisions are keyed by.

    It covers the item keys of every pair's anchor and positive (with the pair ids) and of every *given*
    negative (with its column), and nothing else: not the in-batch or mined negatives (they depend on the
    batch size), not the checkpoint, not labels or file paths. Re-embedding the same data with another batch
    size or checkpoint therefore gives the same value, so decisions carry over.

    Parameters
    ----------
    items : pandas.DataFrame
        (N rows) with ``key``.
    pairs : pandas.DataFrame
        (P rows) ``pair_id``, ``anchor_id``, ``positive_id``.
    negatives : pandas.DataFrame
        ``pair_id``, ``negative_id``, ``source`` (and optionally ``column``).

    Returns
    -------
    str
        sha256 hex digest.
    """
    keys = items["key"].astype(str).to_numpy()
    h = hashlib.sha256(b"negscope-dataset-content-v1\n")

    def feed(name: str, values: list[Any]) -> None:
        h.update(f"{name}\0".encode())
        h.update(json.dumps(values, ensure_ascii=True).encode("ascii"))
        h.update(b"\0")

    feed("pairs.pair_id", [str(v) for v in pairs["pair_id"].tolist()])
    feed("pairs.anchor", keys[pairs["anchor_id"].to_numpy(np.int64)].tolist())
    feed("pairs.positive", keys[pairs["positive_id"].to_numpy(np.int64)].tolist())
    given = negatives[negatives["source"].astype(str) == "given"]
    column = given["column"].astype(str).tolist() if "column" in given.columns else [""] * len(given)
    feed("negatives.pair_id", [str(v) for v in given["pair_id"].tolist()])
    feed("negatives.negative", keys[given["negative_id"].to_numpy(np.int64)].tolist())
    feed("negatives.column", column)
    return h.hexdigest()


def _hash_tables(
    *,
    item_kind: np.ndarray,
    keys: list[str],
    labels: list[str | None],
    contents: list[str],
    pair_ids: pd.Series,
    anchor_ids: np.ndarray,
    positive_ids: np.ndarray,
    negative_rows: np.ndarray,
    negative_ids: np.ndarray,
    negative_source: np.ndarray,
    negative_column: tuple[np.ndarray, Any],
) -> str:
    """sha256 over the tables' content, in a canonical byte layout (see :func:`dataset_hash`)."""
    h = hashlib.sha256(b"negscope-dataset-v1\n")

    def feed_json(name: str, values: list[Any]) -> None:
        h.update(f"{name}:json\0".encode())
        h.update(json.dumps(values).encode("ascii"))
        h.update(b"\0")

    def feed_ints(name: str, values: Any) -> None:
        h.update(f"{name}:int64\0".encode())
        h.update(np.ascontiguousarray(np.asarray(values, dtype=np.int64)).astype("<i8").tobytes())
        h.update(b"\0")

    feed_ints("items.modality", item_kind)
    feed_json("items.key", keys)
    feed_json("items.label", labels)
    image = MODALITIES.index("image")
    feed_json("items.image_path", [c if k == image else "" for k, c in zip(item_kind.tolist(), contents, strict=True)])
    if pd.api.types.is_integer_dtype(pair_ids):
        feed_ints("pairs.pair_id", pair_ids.to_numpy())
    else:
        feed_json("pairs.pair_id", [str(v) for v in pair_ids.tolist()])
    feed_ints("pairs.anchor_id", anchor_ids)
    feed_ints("pairs.positive_id", positive_ids)
    feed_ints("negatives.pair_row", negative_rows)
    feed_ints("negatives.negative_id", negative_ids)
    feed_ints("negatives.source", negative_source)
    # column as (codes, names), renumbered by first appearance so that any coding hashes alike
    column_codes, column_names = negative_column
    codes, used = pd.factorize(np.asarray(column_codes, dtype=np.int64), sort=False)
    feed_ints("negatives.column.codes", codes)
    feed_json("negatives.column.names", [str(column_names[int(u)]) for u in used])
    return h.hexdigest()
