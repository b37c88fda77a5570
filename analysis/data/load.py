"""Load a dataset of (anchor, positive, negatives) pairs into NegScope's items / pairs / negatives tables.

Formats (see ``docs/datasets.md``):

- a CSV, JSONL or Parquet table in the sentence-transformers columns: ``anchor``, ``positive`` (required),
  ``negative`` or ``negative_1`` .. ``negative_k`` (given negatives), ``label`` or ``anchor_label`` /
  ``positive_label``, ``id``; a cell is text or an image path relative to the table's folder;
- a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``);
- a Hugging Face ``datasets`` folder written by ``save_to_disk`` (needs the ``datasets`` package).

Every problem with the input raises :class:`~analysis.errors.DatasetError` naming the file, row and column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.data.readers import (
    TABLE_EXTENSIONS,
    RawTable,
    inside,
    is_beir_folder,
    is_hf_folder,
    read_beir,
    read_hf,
    read_table,
    table_header,
)
from analysis.data.tables import build_tables, in_batch_negatives
from analysis.errors import DatasetError

__all__ = ["Dataset", "DatasetError", "find_dataset_file", "in_batch_negatives", "load_dataset"]

FORMATS = ("csv", "jsonl", "parquet", "beir", "hf")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset, in the tables of the run folder.

    Attributes
    ----------
    items : pandas.DataFrame
        (N rows) ``item_id`` (0..N-1), ``modality`` ('text' | 'image'), ``content`` (the text, or the image
        path exactly as the dataset wrote it), ``label`` (pandas 'string', nullable), ``key`` (content hash:
        sha256 hex of ``"text\\0" + text``, or of ``"image\\0" + sha256_hex(image file bytes)``).
        Deduplicated by (modality, content).
    pairs : pandas.DataFrame
        (P rows) ``pair_id`` (the dataset's ``id``, int64 when every id is an integer, else strings; without
        ids the 0-based row number; BEIR: ``"queryid:docid"``), ``anchor_id``, ``positive_id``.
    negatives : pandas.DataFrame
        ``pair_id``, ``negative_id``, ``source`` ('given' | 'in_batch'), ``column`` (the dataset column of a
        given negative, e.g. 'negative_3'; '' for in-batch ones). Grouped by pair, in pair order.
    root : Path
        Absolute folder that image paths are relative to.
    source : Path
        Absolute path of what was read (the table file, or the BEIR / Hugging Face folder).
    format : str
        'csv', 'jsonl', 'parquet', 'beir' or 'hf'.
    dataset_hash : str
        sha256 hex over the items' keys, labels and image paths and the pairs / negatives structure; the
        same content gives the same hash whatever the file is called or wherever it lies.
    columns : dict of str to str
        Modality ('text' | 'image') of each anchor / positive / negative column.
    """

    items: pd.DataFrame
    pairs: pd.DataFrame
    negatives: pd.DataFrame
    root: Path
    source: Path
    format: str
    dataset_hash: str
    columns: dict[str, str]

    @property
    def anchor_modality(self) -> str:
        """Modality of the anchors ('text' or 'image')."""
        return self.columns["anchor"]

    @property
    def positive_modality(self) -> str:
        """Modality of the positives ('text' or 'image')."""
        return self.columns["positive"]


def find_dataset_file(path: str | Path) -> tuple[str, Path]:
    """Decide how to read ``path``: returns (format, file or folder to read).

    A folder is a BEIR folder, a saved Hugging Face dataset, or a folder holding one table file (when it
    holds several, the one whose header has ``anchor`` and ``positive``, if exactly one does).

    Raises
    ------
    DatasetError
        When the path does not exist, has an unknown extension, or the folder holds no usable dataset.
    """
    path = Path(path).expanduser()
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"the path cannot be used ({exc})", file=path) from None
    if not exists:
        raise DatasetError("the file or folder does not exist", file=path)
    if not is_dir:
        kind = TABLE_EXTENSIONS.get(path.suffix.lower())
        if kind is None:
            read_table(path, path)  # raises the "unknown file type" error
        return kind, path  # type: ignore[return-value]
    if is_hf_folder(path):
        return "hf", path
    if is_beir_folder(path):
        return "beir", path
    tables = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_EXTENSIONS and p.is_file())
    for table in tables:  # a table linked from outside the folder is refused, not read
        inside(table, path, table)
    if len(tables) == 1:
        return TABLE_EXTENSIONS[tables[0].suffix.lower()], tables[0]
    if not tables:
        raise DatasetError(
            "the folder holds no dataset: expected one .csv, .jsonl or .parquet table, a BEIR folder "
            "(corpus.jsonl, queries.jsonl, qrels/) or a saved Hugging Face dataset",
            file=path,
        )
    usable = [p for p in tables if {"anchor", "positive"} <= set(table_header(p) or [])]
    if len(usable) == 1:
        return TABLE_EXTENSIONS[usable[0].suffix.lower()], usable[0]
    names = ", ".join(p.name for p in (usable or tables))
    raise DatasetError(f"the folder holds several tables ({names}); pass the one to read", file=path)


def load_dataset(
    path: str | Path,
    *,
    batch_size: int = 32,
    modality: dict[str, str] | None = None,
    check_images: bool = True,
    in_batch: bool | None = None,
    progress: Callable[[float], None] | None = None,
) -> Dataset:
    """Read a dataset file or folder into items, pairs and negatives.

    Parameters
    ----------
    path : str or Path
        A .csv / .jsonl / .parquet table, a folder holding one, a BEIR folder, or a saved Hugging Face
        dataset folder.
    batch_size : int
        Pairs per batch for in-batch negatives: pairs are cut into consecutive batches in file order, and
        the other pairs' positives in a pair's batch become its ``in_batch`` negatives.
    modality : dict, optional
        Per-column override, e.g. ``{"positive": "text"}``; the key ``"negative"`` applies to every
        negative column without its own entry. Columns not named are detected: image paths (ending in
        .png/.jpg/.jpeg/.webp/.bmp, any case) or text.
    check_images : bool
        Open every image with PIL (``verify``); a missing or unreadable image is an error. Without it, images
        are still hashed when readable (a missing one gets a key from its path).
    in_batch : bool, optional
        None (default): in-batch negatives only for pairs with no given negative; True: for every pair;
        False: never.
    progress : callable, optional
        Called with the fraction done, from 0 to 1.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        For every problem with the input, naming the file and, where known, the row and column.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError(f"batch_size must be a positive integer, got {batch_size!r}", file=path)
    if in_batch not in (None, True, False):
        raise DatasetError(f"in_batch must be None, True or False, got {in_batch!r}", file=path)
    kind, target = find_dataset_file(path)
    if progress is not None:
        progress(0.0)
    table = _read(kind, target)

    def report(fraction: float) -> None:
        if progress is not None:
            progress(0.2 + 0.8 * fraction)

    report(0.0)
    tables = build_tables(
        table,
        batch_size=batch_size,
        modality=modality,
        check_images=check_images,
        in_batch=in_batch,
        progress=report,
    )
    return Dataset(
        items=tables.items,
        pairs=tables.pairs,
        negatives=tables.negatives,
        root=table.root,
        source=table.source,
        format=table.format,
        dataset_hash=tables.dataset_hash,
        columns=tables.columns,
    )


def _read(kind: str, target: Path) -> RawTable:
    if kind == "beir":
        return read_beir(target, target)
    if kind == "hf":
        return read_hf(target, target)
    return read_table(target, target)
