"""Planted ground truth of a dataset (the bundled digits sample records it), joined to a run's ids.

Two optional files beside the dataset table (in ``run.dataset_root``)::

    truth.csv            id, image_digit, caption_digit, label_flipped, mismatched     (one row per pair)
    negatives_truth.csv  id, column, negative_digit, is_false_negative                 (one row per given negative)

``id`` is the dataset's pair id (``pairs.pair_id`` in the run) and ``column`` the dataset column a given
negative came from (``negatives.column`` in the run). Datasets without these files have no truth: the
functions return None. The detectors' tests and the benchmarks score themselves against these tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import DatasetError
from analysis.runs.folder import Run

PAIR_TRUTH_FILE = "truth.csv"
NEGATIVE_TRUTH_FILE = "negatives_truth.csv"
PAIR_TRUTH_COLUMNS = ("id", "image_digit", "caption_digit", "label_flipped", "mismatched")
NEGATIVE_TRUTH_COLUMNS = ("id", "column", "negative_digit", "is_false_negative")
_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False}


def _bool_column(values: pd.Series, *, file: Path, column: str) -> pd.Series:
    words = values.astype(str).str.strip().str.lower()
    bad = ~words.isin(list(_BOOL_WORDS))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise DatasetError(f"expected True or False, got {values.iloc[row - 1]!r}", file=file, row=row, column=column)
    return words.map(_BOOL_WORDS).astype(bool)


def _int_column(values: pd.Series, *, file: Path, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != np.round(numbers))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise DatasetError(f"expected an integer, got {values.iloc[row - 1]!r}", file=file, row=row, column=column)
    return numbers.astype(np.int64)


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"cannot read the truth table: {exc}", file=path) from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"the truth table lacks columns {missing}", file=path)
    return table[list(columns)].copy()


def pair_truth_from_files(folder: str | Path) -> pd.DataFrame | None:
    """Read ``truth.csv`` from ``folder``.

    Returns
    -------
    pandas.DataFrame or None
        (P rows) ``id`` (str, as written), ``image_digit``, ``caption_digit`` (int64), ``label_flipped``,
        ``mismatched`` (bool); None when the file does not exist.

    Raises
    ------
    DatasetError
        When the file exists but is unreadable or malformed (names the file, row and column).
    """
    path = Path(folder) / PAIR_TRUTH_FILE
    if not path.is_file():
        return None
    table = _read(path, PAIR_TRUTH_COLUMNS)
    for col in ("image_digit", "caption_digit"):
        table[col] = _int_column(table[col], file=path, column=col)
    for col in ("label_flipped", "mismatched"):
        table[col] = _bool_column(table[col], file=path, column=col)
    return table


def negative_truth_from_files(folder: str | Path) -> pd.DataFrame | None:
    """Read ``negatives_truth.csv`` from ``folder``.

    Returns
    -------
    pandas.DataFrame or None
        ``id`` (str), ``column`` (str), ``negative_digit`` (int64), ``is_false_negative`` (bool); None when the
        file does not exist.

    Raises
    ------
    DatasetError
        When the file exists but is unreadable or malformed.
    """
    path = Path(folder) / NEGATIVE_TRUTH_FILE
    if not path.is_file():
        return None
    table = _read(path, NEGATIVE_TRUTH_COLUMNS)
    table["negative_digit"] = _int_column(table["negative_digit"], file=path, column="negative_digit")
    table["is_false_negative"] = _bool_column(table["is_false_negative"], file=path, column="is_false_negative")
    return table


def _truth_folder(run: Run) -> Path | None:
    root = run.dataset_root
    return root if root is not None and root.is_dir() else None


def _id_keys(values: pd.Series) -> pd.Series:
    """Pair ids as join keys: the run may hold int64 or string ids, the CSV always gives strings."""
    return values.astype(str).str.strip()


def pair_truth(run: Run) -> pd.DataFrame | None:
    """Planted truth of every pair of ``run``, in the order of ``run.pairs``.

    Parameters
    ----------
    run : Run
        A run whose dataset folder (``run.dataset_root``) may hold ``truth.csv``.

    Returns
    -------
    pandas.DataFrame or None
        (P rows, index 0..P-1 aligned with ``run.pairs``) ``pair_id``, ``anchor_id``, ``positive_id``,
        ``image_digit``, ``caption_digit`` (nullable Int64), ``label_flipped``, ``mismatched`` (nullable
        boolean; NA for a pair the truth file does not list). None when the dataset has no ``truth.csv``.
    """
    folder = _truth_folder(run)
    table = pair_truth_from_files(folder) if folder is not None else None
    if table is None:
        return None
    table = table.drop_duplicates("id", keep="first").set_index("id")
    keys = _id_keys(run.pairs["pair_id"])
    out = run.pairs[["pair_id", "anchor_id", "positive_id"]].reset_index(drop=True)
    for col in ("image_digit", "caption_digit"):
        out[col] = pd.array(table[col].reindex(keys.to_numpy()).to_numpy(), dtype="Int64")
    for col in ("label_flipped", "mismatched"):
        out[col] = pd.array(table[col].reindex(keys.to_numpy()).to_numpy(), dtype="boolean")
    return out


def item_digits(run: Run) -> pd.Series | None:
    """The digit each item really shows (an anchor image) or names (a positive caption), from ``truth.csv``.

    Returns
    -------
    pandas.Series or None
        (N,) nullable Int64 indexed by ``item_id``; NA for items that are no pair's anchor or positive, or
        whose pairs disagree. None when the dataset has no ``truth.csv``.
    """
    truth = pair_truth(run)
    if truth is None:
        return None
    parts = pd.concat(
        [
            truth[["anchor_id", "image_digit"]].set_axis(["item_id", "digit"], axis=1),
            truth[["positive_id", "caption_digit"]].set_axis(["item_id", "digit"], axis=1),
        ]
    ).dropna()
    per_item = parts.groupby("item_id")["digit"].agg(["min", "max"])
    agreed = per_item.loc[per_item["min"] == per_item["max"], "min"]
    out = pd.Series(pd.NA, index=pd.RangeIndex(len(run.items), name="item_id"), dtype="Int64")
    out.loc[agreed.index.to_numpy()] = agreed.to_numpy()
    return out


def negative_truth(run: Run) -> pd.DataFrame | None:
    """Planted truth of every negative of ``run``: is it really a positive (same digit as the anchor image)?

    Given negatives are joined on (pair id, dataset column) to ``negatives_truth.csv``. Negatives that file
    does not cover (``in_batch`` / ``mined`` ones, or a run without the ``column`` column) get their truth
    from ``truth.csv``: a negative is a false negative when the digit it names (:func:`item_digits`) equals
    the digit of the pair's anchor image.

    Returns
    -------
    pandas.DataFrame or None
        One row per row of ``run.negatives``, in its order: ``pair_id``, ``negative_id``, ``source``,
        ``column`` ('' where not a given negative), ``negative_digit`` (nullable Int64),
        ``is_false_negative`` (nullable boolean; NA where neither file knows). None when the dataset folder
        holds neither truth file.
    """
    folder = _truth_folder(run)
    given = negative_truth_from_files(folder) if folder is not None else None
    digits = item_digits(run)
    if given is None and digits is None:
        return None
    negatives = run.negatives.reset_index(drop=True)
    column = (
        negatives["column"].fillna("").astype(str)
        if "column" in negatives.columns
        else pd.Series("", index=negatives.index)
    )
    out = pd.DataFrame(
        {
            "pair_id": negatives["pair_id"],
            "negative_id": negatives["negative_id"],
            "source": negatives["source"],
            "column": column,
        }
    )
    neg_digit = pd.Series(pd.NA, index=out.index, dtype="Int64")
    is_fn = pd.Series(pd.NA, index=out.index, dtype="boolean")
    if digits is not None:
        pairs = pair_truth(run)
        anchor_digit = pd.Series(pairs["image_digit"].to_numpy(), index=_id_keys(pairs["pair_id"]).to_numpy())
        anchor_digit = anchor_digit[~anchor_digit.index.duplicated()]
        neg_digit = pd.Series(digits.reindex(out["negative_id"].to_numpy()).to_numpy(), dtype="Int64")
        anchors = pd.Series(anchor_digit.reindex(_id_keys(out["pair_id"]).to_numpy()).to_numpy(), dtype="Int64")
        is_fn = pd.Series(pd.array(neg_digit == anchors, dtype="boolean"))
    if given is not None:
        table = given.drop_duplicates(["id", "column"], keep="first").set_index(["id", "column"])
        index = pd.MultiIndex.from_arrays([_id_keys(out["pair_id"]), out["column"]])
        joined = table.reindex(index)
        known = joined["is_false_negative"].notna().to_numpy()
        neg_digit = neg_digit.mask(known, pd.Series(joined["negative_digit"].to_numpy(), dtype="Int64"))
        is_fn = is_fn.mask(known, pd.Series(joined["is_false_negative"].to_numpy(), dtype="boolean"))
    out["negative_digit"] = neg_digit.to_numpy()
    out["is_false_negative"] = pd.array(is_fn.to_numpy(), dtype="boolean")
    out["negative_digit"] = out["negative_digit"].astype("Int64")
    return out
