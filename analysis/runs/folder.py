"""The run folder: the on-disk contract between the embedding engine and every analysis.

Layout (a public interface, see ``DESIGN.md``)::

    RUN/manifest.json      dataset/checkpoint paths and hashes, model kind, dim, device, dtype, logit scale ...
    RUN/items.parquet      item_id, modality ('text' | 'image'), content, label (nullable), key (content hash)
    RUN/embeddings.npy     float32 (N, D), rows L2-normalised
    RUN/pairs.parquet      pair_id, anchor_id, positive_id
    RUN/negatives.parquet  pair_id, negative_id, source ('given' | 'in_batch' | 'mined')

``items.parquet`` also carries ``key``, a content hash of the item (modality + text, or modality + image
bytes), so that review decisions survive re-embedding with another checkpoint.

A run written by a distributed engine is **sharded** (``embeddings/part-NNNNN.npy``, ``items/part-NNNNN.parquet``
..., listed in ``manifest["shards"]``; see :mod:`analysis.runs.shards`); :func:`load_run` opens both forms,
memory-mapped, behind the one :class:`Run` interface.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.choices import NEGATIVE_SOURCES as NEGATIVE_SOURCES
from analysis.errors import RunError

ITEM_COLUMNS = ("item_id", "modality", "content", "label", "key")
PAIR_COLUMNS = ("pair_id", "anchor_id", "positive_id")
NEGATIVE_COLUMNS = ("pair_id", "negative_id", "source")


@dataclass(frozen=True, eq=False)
class Run:
    """A loaded run folder.

    Attributes
    ----------
    path : Path
        The run folder.
    manifest : dict
        Contents of ``manifest.json``.
    items : pandas.DataFrame
        (N rows) ``item_id`` (= row of ``embeddings``), ``modality``, ``content``, ``label``, ``key``.
    embeddings : numpy.ndarray
        float32 (N, D), rows L2-normalised.
    pairs : pandas.DataFrame
        (P rows) ``pair_id``, ``anchor_id``, ``positive_id``.
    negatives : pandas.DataFrame
        ``pair_id``, ``negative_id``, ``source``.
    """

    path: Path
    manifest: dict[str, Any]
    items: pd.DataFrame
    embeddings: np.ndarray
    pairs: pd.DataFrame
    negatives: pd.DataFrame
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        """The run folder's name (unique within a workspace)."""
        return self.path.name

    @property
    def sharded(self) -> bool:
        """Whether the run folder is in the sharded form (``manifest["shards"]``, see :mod:`analysis.runs.shards`)."""
        return "shards" in self.manifest

    def embedding_parts(self) -> Iterator[tuple[int, np.ndarray]]:
        """The embeddings part by part, for analyses that stream instead of holding (N, D) at once.

        Returns
        -------
        iterator of (int, numpy.ndarray)
            ``(first_item_id, block)``: float32 (rows, D) blocks in item-id order, memory-mapped where the run
            folder is; an unsharded run is one block.
        """
        parts = self._cache.get("embedding_parts")
        if parts is None:
            yield 0, self.embeddings
            return
        start = 0
        for part in parts:
            yield start, part
            start += int(part.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])

    @property
    def logit_scale(self) -> float | None:
        """The checkpoint's learned logit scale (1 / tau), or None when it has none."""
        value = self.manifest.get("logit_scale")
        return float(value) if value is not None else None

    @property
    def tau(self) -> float | None:
        """The checkpoint's learned temperature, or None."""
        scale = self.logit_scale
        return 1.0 / scale if scale else None

    @property
    def dataset_hash(self) -> str:
        """Content hash of the dataset (keys the review decisions)."""
        return str(self.manifest.get("dataset_hash", ""))

    @property
    def content_hash(self) -> str:
        """Content-only hash of the dataset (keys the review decisions; independent of batch size and checkpoint).

        The manifest's ``dataset_content_hash``; for a run written before that key existed, computed from the
        run's tables with :func:`analysis.data.tables.content_hash` (the same value).
        """
        value = self.manifest.get("dataset_content_hash")
        if isinstance(value, str) and value:
            return value
        if "content_hash" not in self._cache:
            from analysis.data.tables import content_hash

            self._cache["content_hash"] = content_hash(self.items, self.pairs, self.negatives)
        return str(self._cache["content_hash"])

    @property
    def item_keys(self) -> np.ndarray:
        """(N,) object array of the items' content keys (``items.key``), indexed by item id."""
        if "item_keys" not in self._cache:
            self._cache["item_keys"] = self.items["key"].astype(str).to_numpy(dtype=object)
        return self._cache["item_keys"]

    def item_ids_for_keys(self, keys: Any) -> np.ndarray:
        """(M,) int64 item id of each content key (the lowest id holding it), -1 where no item has that key."""
        if "first_item_of_key" not in self._cache:
            keys_ = pd.Index(self.item_keys)
            first = ~keys_.duplicated(keep="first")
            self._cache["first_item_of_key"] = pd.Series(np.flatnonzero(first).astype(np.int64), index=keys_[first])
        found = self._cache["first_item_of_key"].reindex(pd.Index([str(k) for k in list(keys)], dtype=object))
        return found.fillna(-1).to_numpy(dtype=np.int64)

    def items_for_keys(self, keys: Any) -> pd.DataFrame:
        """Every item holding each key (identical images at two paths share a key).

        Returns
        -------
        pandas.DataFrame
            ``position`` (index into ``keys``), ``item_id``: one row per matching item, in key order, then
            item-id order; keys no item holds have no row.
        """
        table = pd.DataFrame({"key": self.item_keys, "item_id": np.arange(len(self.items), dtype=np.int64)})
        wanted = pd.DataFrame({"key": [str(k) for k in list(keys)]})
        wanted["position"] = np.arange(len(wanted), dtype=np.int64)
        out = wanted.merge(table, on="key", how="inner").sort_values(["position", "item_id"], kind="stable")
        return out[["position", "item_id"]].reset_index(drop=True)

    @property
    def labels(self) -> np.ndarray:
        """(N,) object array of the items' class labels, normalised (str, or None where missing).

        See :func:`analysis.data.tables.normalise_label`: the one meaning of "this label is missing".
        """
        if "labels" not in self._cache:
            from analysis.data.tables import normalise_label

            def one(value: Any) -> str | None:
                try:
                    return normalise_label(value)
                except TypeError:  # a hand-written run folder: anything else counts by its text
                    return normalise_label(str(value))

            if "label" in self.items.columns:
                self._cache["labels"] = np.array([one(v) for v in self.items["label"].astype(object)], dtype=object)
            else:
                self._cache["labels"] = np.full(len(self.items), None, dtype=object)
        return self._cache["labels"]

    @property
    def dataset_root(self) -> Path | None:
        """Folder that image paths in ``items.content`` are relative to."""
        root = self.manifest.get("dataset_root")
        return Path(root) if root else None

    def anchor_modality(self) -> str:
        """Modality of the anchor column ('text' or 'image')."""
        return str(self.items["modality"].iloc[int(self.pairs["anchor_id"].iloc[0])])

    def positive_modality(self) -> str:
        """Modality of the positive column ('text' or 'image')."""
        return str(self.items["modality"].iloc[int(self.pairs["positive_id"].iloc[0])])

    def image_path(self, item_id: int) -> Path:
        """Absolute path of an image item, refused when it escapes the dataset folder.

        Raises
        ------
        RunError
            When the item is not an image, or its path resolves outside the dataset folder.
        """
        row = self.items.iloc[int(item_id)]
        if row["modality"] != "image":
            raise RunError(f"item {item_id} is not an image")
        root = self.dataset_root
        if root is None:
            raise RunError(f"run {self.run_id} does not record the dataset folder")
        root = root.resolve()
        path = (root / str(row["content"])).resolve()
        if not path.is_relative_to(root):
            raise RunError(f"image path of item {item_id} leaves the dataset folder")
        return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_run(
    path: Path,
    *,
    manifest: dict[str, Any],
    items: pd.DataFrame,
    embeddings: np.ndarray,
    pairs: pd.DataFrame,
    negatives: pd.DataFrame,
) -> Path:
    """Write a run folder; ``manifest.json`` is written last, so a folder with a manifest is complete.

    Parameters
    ----------
    path : Path
        Folder to create (parents too).
    manifest : dict
        JSON-serialisable metadata; ``dim`` and ``n_items`` are filled in.
    items, pairs, negatives : pandas.DataFrame
        Tables with at least the columns of ``ITEM_COLUMNS``, ``PAIR_COLUMNS``, ``NEGATIVE_COLUMNS``.
    embeddings : numpy.ndarray
        (N, D); stored as float32 with rows L2-normalised.

    Returns
    -------
    Path
        The run folder.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(items):
        raise RunError(f"embeddings have shape {emb.shape}, expected ({len(items)}, D)")
    if not np.isfinite(emb).all():
        row = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
        raise RunError(f"the embedding of item {row} holds NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise RunError(f"the embedding of item {row} is all zeros; it has no direction to compare")
    emb = emb / np.maximum(norms, 1e-12)
    items = items.copy()
    if "key" not in items.columns:
        items["key"] = items["modality"].astype(str) + ":" + items["content"].astype(str)
    np.save(path / "embeddings.npy", emb.astype(np.float32))
    items.to_parquet(path / "items.parquet", index=False)
    pairs.to_parquet(path / "pairs.parquet", index=False)
    negatives.to_parquet(path / "negatives.parquet", index=False)
    manifest = {**manifest, "dim": int(emb.shape[1]), "n_items": int(emb.shape[0])}
    try:
        text = json.dumps(manifest, indent=2, default=str, allow_nan=False)
    except ValueError as exc:
        raise RunError(f"the run manifest holds a value JSON cannot store (NaN or infinity): {exc}") from None
    _atomic_write_bytes(path / "manifest.json", text.encode())
    return path


def load_run(path: str | Path) -> Run:
    """Load a run folder written by :func:`write_run` (or by hand, following DESIGN.md), validating it.

    Checked before anything uses the run: ``manifest.json`` is a JSON object with the expected types (a
    finite positive ``logit_scale`` or null; ``dim`` / ``n_items`` matching the embeddings); the tables have
    their columns with the expected types; ``item_id`` is 0..N-1 in order; every id is an integer in range;
    pair ids are unique; negatives name known pairs and known sources; the embeddings are a finite float (N, D)
    array whose rows are L2-normalised (to :data:`NORM_TOLERANCE`).

    Raises
    ------
    RunError
        With a one-line message naming the file and what is wrong.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    try:
        found = manifest_path.is_file()
    except (OSError, ValueError) as exc:
        raise RunError(f"the run folder path cannot be used: {_one_line(exc, 200)}") from None
    if not found:
        raise RunError(f"{str(path)[:300]} is not a run folder (no manifest.json)")
    manifest = _read_manifest(manifest_path)
    parts: list[np.ndarray] | None = None
    embeddings_file = path / "embeddings.npy"
    if "shards" in manifest:  # the sharded form (analysis.runs.shards): parts memory-mapped, joined once
        from analysis.runs.shards import join_embedding_parts, open_shards

        items, parts, pairs, negatives = open_shards(path, manifest)
        embeddings_file = path / "embeddings"
        embeddings = join_embedding_parts(path, parts)
    else:
        try:
            items = pd.read_parquet(path / "items.parquet")
            pairs = pd.read_parquet(path / "pairs.parquet")
            negatives = pd.read_parquet(path / "negatives.parquet")
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt or missing file
            raise RunError(f"cannot read run folder {path}: {_one_line(exc)}") from None
        embeddings = _read_embeddings(embeddings_file)
    for name, table, cols in (
        ("items", items, ITEM_COLUMNS[:4]),
        ("pairs", pairs, PAIR_COLUMNS),
        ("negatives", negatives, NEGATIVE_COLUMNS),
    ):
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise RunError(f"{path / (name + '.parquet')} lacks columns {missing}")
    if "key" not in items.columns:
        items["key"] = items["modality"].astype(str) + ":" + items["content"].astype(str)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(items) or embeddings.shape[1] < 1:
        raise RunError(f"{path}: embeddings.npy has shape {embeddings.shape} but there are {len(items)} items")
    items, pairs, negatives = _validate_tables(path, items, pairs, negatives)
    _validate_embeddings(embeddings_file, embeddings)
    _validate_manifest(manifest_path, manifest, embeddings.shape)
    run = Run(
        path=path,
        manifest=manifest,
        items=items,
        embeddings=embeddings.astype(np.float32, copy=False),
        pairs=pairs,
        negatives=negatives,
    )
    if parts is not None:
        run._cache["embedding_parts"] = parts
    return run


#: How far a row's L2 norm may be from 1 (float32 rounding of a normalised row is about 1e-7).
NORM_TOLERANCE = 1e-3
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_MANIFEST_STRINGS = (
    "dataset_path",
    "dataset_root",
    "dataset_source",
    "dataset_format",
    "dataset_hash",
    "dataset_content_hash",
    "checkpoint_path",
    "checkpoint_hash",
    "model_kind",
    "device",
    "dtype",
)


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    try:
        if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise RunError(f"{manifest_path} is larger than {_MAX_MANIFEST_BYTES // 2**20} MB; it is not a manifest")
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except RunError:
        raise
    except RecursionError:
        raise RunError(f"{manifest_path} is not valid JSON (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{manifest_path} is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{manifest_path} must hold a JSON object, found a JSON {type(manifest).__name__}")
    return manifest


def _read_embeddings(file: Path) -> np.ndarray:
    try:
        _check_npy_header(file)
        # memory-mapped read-only: the pages are the file's own (shared by every command and page that reads the
        # run, and kept by the system between them) instead of a fresh private copy per process
        embeddings = np.load(file, allow_pickle=False, mmap_mode="r")
    except RunError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises many types for a corrupt file
        raise RunError(f"cannot read {file}: {_one_line(exc)}") from None
    if not isinstance(embeddings, np.ndarray) or embeddings.dtype.kind != "f" or embeddings.dtype.itemsize > 8:
        kind = getattr(embeddings, "dtype", type(embeddings).__name__)
        raise RunError(f"{file} must hold a float array (float32), found {kind}")
    return np.asarray(embeddings)


def _positive_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:
        return False


def _check_npy_header(file: Path) -> None:
    """Refuse a ``.npy`` whose header declares more (or less) data than the file holds, before allocating it."""
    with file.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return  # np.load reports other versions itself
        data_bytes = file.stat().st_size - fh.tell()
    if dtype.hasobject:
        raise RunError(f"{file} holds Python objects (dtype {dtype}); a run's embeddings are float32")
    declared = math.prod(shape) * dtype.itemsize
    if declared != data_bytes:
        raise RunError(
            f"{file}: its header declares shape {shape} of {dtype} ({declared:,} bytes) but the file holds "
            f"{data_bytes:,} bytes of data"
        )


def _validate_manifest(manifest_path: Path, manifest: dict[str, Any], shape: tuple[int, ...]) -> None:
    where = manifest_path
    scale = manifest.get("logit_scale")
    if scale is not None and not _positive_number(scale):
        raise RunError(f"{where}: 'logit_scale' must be a finite positive number or null, found {scale!r:.60}")
    for key, expected in (("dim", shape[1]), ("n_items", shape[0])):
        value = manifest.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value != expected:
            raise RunError(f"{where}: '{key}' is {value!r:.60} but embeddings.npy has {expected}")
    for key in _MANIFEST_STRINGS:
        value = manifest.get(key)
        if value is not None and not isinstance(value, str):
            raise RunError(f"{where}: '{key}' must be a string or null, found a JSON {type(value).__name__}")
    if "options" in manifest and manifest["options"] is not None and not isinstance(manifest["options"], dict):
        raise RunError(f"{where}: 'options' must be a JSON object")


def _int_ids(file: Path, table: pd.DataFrame, column: str, n: int | None) -> np.ndarray:
    """The column as int64, refused unless every value is an integer (and in 0..n-1 when ``n`` is given)."""
    values = table[column]
    if len(values) == 0:  # an empty table (no negatives) may come back with any dtype
        return np.zeros(0, dtype=np.int64)
    if pd.api.types.is_bool_dtype(values) or not (
        pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values)
    ):
        raise RunError(f"{file}: column '{column}' must hold integers, found {values.dtype}")
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if len(array) and (not np.isfinite(array).all() or (array % 1 != 0).any()):
        row = int(np.flatnonzero(~np.isfinite(array) | (np.nan_to_num(array) % 1 != 0))[0])
        raise RunError(f"{file}: column '{column}' holds {array[row]:g} at row {row + 1}, not an integer")
    ids = values.to_numpy(dtype=np.int64) if len(array) else np.zeros(0, dtype=np.int64)
    if n is not None and len(ids) and (ids.min() < 0 or ids.max() >= n):
        row = int(np.flatnonzero((ids < 0) | (ids >= n))[0])
        raise RunError(f"{file}: column '{column}' holds {ids[row]} at row {row + 1}; item ids run from 0 to {n - 1}")
    return ids


def _string_column(file: Path, table: pd.DataFrame, column: str, *, allowed: tuple[str, ...] | None = None) -> None:
    values = table[column]
    bad = values.map(lambda v: not isinstance(v, str)).to_numpy(dtype=bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RunError(f"{file}: column '{column}' must hold text, found {values.iloc[row]!r:.60} at row {row + 1}")
    if allowed is not None:
        wrong = ~values.isin(allowed).to_numpy(dtype=bool)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise RunError(
                f"{file}: column '{column}' holds {values.iloc[row][:60]!r} at row {row + 1}; "
                f"expected one of {', '.join(allowed)}"
            )


def _validate_tables(
    path: Path, items: pd.DataFrame, pairs: pd.DataFrame, negatives: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    n = len(items)
    items_file, pairs_file, negatives_file = (path / f"{name}.parquet" for name in ("items", "pairs", "negatives"))
    if n == 0:
        raise RunError(f"{items_file} has no items")
    item_ids = _int_ids(items_file, items, "item_id", None)
    if not np.array_equal(item_ids, np.arange(n)):
        row = int(np.flatnonzero(item_ids != np.arange(n))[0])
        raise RunError(f"{items_file}: item_id must be 0..{n - 1} in order (row {row + 1} holds {item_ids[row]})")
    _string_column(items_file, items, "modality", allowed=("text", "image"))
    _string_column(items_file, items, "content")
    _string_column(items_file, items, "key")
    if len(pairs) == 0:
        raise RunError(f"{pairs_file} has no pairs")
    pairs = pairs.copy()
    for column in ("anchor_id", "positive_id"):
        pairs[column] = _int_ids(pairs_file, pairs, column, n)
    pair_ids = pairs["pair_id"]
    if pair_ids.isna().any():
        raise RunError(f"{pairs_file}: column 'pair_id' has an empty value at row {int(np.flatnonzero(pair_ids.isna())[0]) + 1}")
    if pair_ids.duplicated().any():
        dup = pair_ids[pair_ids.duplicated()].iloc[0]
        raise RunError(f"{pairs_file}: pair_id {str(dup)[:60]!r} appears more than once")
    negatives = negatives.copy()
    negatives["negative_id"] = _int_ids(negatives_file, negatives, "negative_id", n)
    _string_column(negatives_file, negatives, "source", allowed=tuple(NEGATIVE_SOURCES))
    unknown = ~negatives["pair_id"].isin(pair_ids).to_numpy(dtype=bool)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise RunError(
            f"{negatives_file}: pair_id {str(negatives['pair_id'].iloc[row])[:60]!r} at row {row + 1} is not in pairs"
        )
    return items, pairs, negatives


def _validate_embeddings(file: Path, embeddings: np.ndarray) -> None:
    # small blocks read in place (float64 sums, no float64 copy): a few MB of temporaries whatever the run's size
    chunk = max(1, (1 << 21) // max(embeddings.shape[1], 1))
    for start in range(0, embeddings.shape[0], chunk):
        block = embeddings[start : start + chunk]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise RunError(f"{file}: row {row} (item {row}) holds NaN or infinite values")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            row = start + int(np.flatnonzero(off)[0])
            raise RunError(
                f"{file}: row {row} (item {row}) has L2 norm {norms[row - start]:.6g}; "
                "run embeddings must be L2-normalised"
            )
