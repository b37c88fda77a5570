"""Sharded run folders: the form a distributed engine writes, read back behind the same ``Run`` interface.

Layout (see ``DESIGN.md`` "The run folder")::

    RUN/manifest.json                  as for an unsharded run, plus "shards" (below); written last
    RUN/embeddings/part-NNNNN.npy      float32 (rows_k, D), rows L2-normalised; part k holds items
                                       offset_k .. offset_k + rows_k - 1 (item-id order)
    RUN/items/part-NNNNN.parquet       the items of embedding part k (same rows)
    RUN/pairs/part-NNNNN.parquet       consecutive slices of the pairs table
    RUN/negatives/part-NNNNN.parquet   consecutive slices of the negatives table

``manifest["shards"]`` is ``{"rows": [rows_0, ...], "embeddings": [...], "items": [...], "pairs": [...],
"negatives": [...]}``: relative file names, in order. :func:`open_shards` reads it back; the embedding parts
are memory-mapped (one part is used as is; several are joined, see :func:`join_embedding_parts`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import RunError

#: Default rows per shard (1M x 384 float32 = 1.5 GB per embedding part).
SHARD_ROWS = 1_000_000
#: Several embedding parts of at most this many bytes together are joined in memory; larger ones are joined
#: once into ``embeddings/joined.npy`` (memory-mapped), next to the parts.
JOIN_IN_MEMORY_BYTES = 2 << 30
#: A row whose float32 L2 norm is this close to 1 counts as normalised already.
ALREADY_UNIT = 1e-6
TABLES = ("items", "pairs", "negatives")
_PART_NAME = "part-{:05d}"


def part_name(kind: str, index: int) -> str:
    """Relative file name of part ``index`` of ``kind`` ('embeddings', 'items', 'pairs' or 'negatives')."""
    suffix = ".npy" if kind == "embeddings" else ".parquet"
    return f"{kind}/{_PART_NAME.format(index)}{suffix}"


def normalised_rows(block: np.ndarray, *, first_item: int) -> np.ndarray:
    """``block`` as float32 with rows L2-normalised, refusing NaN, infinite or all-zero rows.

    Rows whose norm is already within :data:`ALREADY_UNIT` of 1 are left as they are.

    Parameters
    ----------
    block : numpy.ndarray
        (M, D) embeddings of items ``first_item`` .. ``first_item + M - 1``.
    first_item : int
        Item id of the first row (for the error message).

    Returns
    -------
    numpy.ndarray
        float32 (M, D).
    """
    emb = np.asarray(block, dtype=np.float32)
    if emb.ndim != 2:
        raise RunError(f"an embedding part must be 2-D, got shape {emb.shape}")
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        raise RunError(f"the embedding of item {first_item + int(np.flatnonzero(~finite)[0])} holds NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        row = first_item + int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise RunError(f"the embedding of item {row} is all zeros; it has no direction to compare")
    off = np.abs(norms[:, 0] - 1.0) > ALREADY_UNIT
    if off.any():  # rows already unit length are kept bit for bit (re-sharding a run copies it exactly)
        emb = emb.copy()
        emb[off] = emb[off] / norms[off]
    return emb


class ShardWriter:
    """Writes a sharded run folder part by part; :meth:`finish` writes the tables and the manifest last.

    Parameters
    ----------
    path : Path
        Folder to write (created).
    n_items : int
        N, the number of items.
    shard_rows : int
        Items per embedding/items part (the last part may be shorter).

    Notes
    -----
    Rows may arrive in any order (:meth:`add` takes item ids); a part is written, and its buffer released, as
    soon as all its rows have arrived, so memory holds only the parts still filling.
    """

    def __init__(self, path: Path, *, n_items: int, shard_rows: int = SHARD_ROWS) -> None:
        if int(shard_rows) < 1:
            raise RunError(f"rows per shard must be a positive integer, got {shard_rows}")
        if int(n_items) < 1:
            raise RunError("a run needs at least one item")
        self.path = Path(path)
        self.n = int(n_items)
        self.shard_rows = int(shard_rows)
        self.n_parts = math.ceil(self.n / self.shard_rows)
        self.dim: int | None = None
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._written = np.zeros(self.n_parts, dtype=bool)
        (self.path / "embeddings").mkdir(parents=True, exist_ok=True)

    def part_rows(self, index: int) -> int:
        """Number of items in part ``index``."""
        return min(self.shard_rows, self.n - index * self.shard_rows)

    def add(self, item_ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Store the embeddings of ``item_ids``.

        Parameters
        ----------
        item_ids : numpy.ndarray
            (M,) int item ids, each in 0..N-1 and given once over all calls.
        embeddings : numpy.ndarray
            (M, D) their embeddings (normalised here).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise RunError(f"got {len(ids)} item ids but embeddings of shape {emb.shape}")
        if len(ids) == 0:
            return
        if ids.min() < 0 or ids.max() >= self.n:
            raise RunError(f"item ids must lie in 0..{self.n - 1}")
        if self.dim is None:
            self.dim = int(emb.shape[1])
        elif emb.shape[1] != self.dim:
            raise RunError(f"got {emb.shape[1]}-dim embeddings after {self.dim}-dim ones")
        parts = ids // self.shard_rows
        for index in np.unique(parts):
            index = int(index)
            if self._written[index]:
                raise RunError(f"rows of shard {index} arrived after it was complete")
            mask = parts == index
            local = ids[mask] - index * self.shard_rows
            block = normalised_rows(emb[mask], first_item=int(ids[mask][0]))
            if index not in self._pending:
                rows = self.part_rows(index)
                self._pending[index] = (np.empty((rows, self.dim), dtype=np.float32), np.zeros(rows, dtype=bool))
            array, filled = self._pending[index]
            if filled[local].any():
                raise RunError(f"item {int(ids[mask][np.flatnonzero(filled[local])[0]])} was given twice")
            array[local] = block
            filled[local] = True
            if filled.all():
                np.save(self.path / part_name("embeddings", index), array)
                self._written[index] = True
                del self._pending[index]

    @property
    def done(self) -> int:
        """Number of items whose part has been written."""
        return int(sum(self.part_rows(i) for i in np.flatnonzero(self._written)))

    def finish(
        self, *, manifest: dict[str, Any], items: pd.DataFrame, pairs: pd.DataFrame, negatives: pd.DataFrame
    ) -> Path:
        """Write the table parts, then ``manifest.json`` (with ``shards``, ``dim``, ``n_items``) last.

        Returns
        -------
        Path
            The run folder.

        Raises
        ------
        RunError
            When some item's embedding never arrived.
        """
        if not self._written.all():
            missing = int(np.flatnonzero(~self._written)[0])
            raise RunError(f"shard {missing} is incomplete: some items were never embedded")
        if len(items) != self.n:
            raise RunError(f"the items table has {len(items)} rows but {self.n} were embedded")
        items = items.copy()
        if "key" not in items.columns:
            items["key"] = items["modality"].astype(str) + ":" + items["content"].astype(str)
        shards: dict[str, Any] = {
            "rows": [self.part_rows(i) for i in range(self.n_parts)],
            "embeddings": [part_name("embeddings", i) for i in range(self.n_parts)],
        }
        for kind, table in (("items", items), ("pairs", pairs), ("negatives", negatives)):
            (self.path / kind).mkdir(exist_ok=True)
            names = []
            n_parts = self.n_parts if kind == "items" else max(1, math.ceil(len(table) / self.shard_rows))
            for i in range(n_parts):
                piece = table.iloc[i * self.shard_rows : (i + 1) * self.shard_rows]
                piece.to_parquet(self.path / part_name(kind, i), index=False)
                names.append(part_name(kind, i))
            shards[kind] = names
        manifest = {**manifest, "dim": int(self.dim or 0), "n_items": self.n, "shards": shards}
        try:
            text = json.dumps(manifest, indent=2, default=str, allow_nan=False)
        except ValueError as exc:
            raise RunError(f"the run manifest holds a value JSON cannot store (NaN or infinity): {exc}") from None
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode())
            os.replace(tmp, self.path / "manifest.json")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path


def write_sharded_run(
    path: Path,
    *,
    manifest: dict[str, Any],
    items: pd.DataFrame,
    embeddings: np.ndarray,
    pairs: pd.DataFrame,
    negatives: pd.DataFrame,
    shard_rows: int = SHARD_ROWS,
) -> Path:
    """Write a whole (N, D) array as a sharded run folder (the sharded twin of ``write_run``).

    Parameters
    ----------
    path : Path
        Folder to create.
    manifest : dict
        JSON-serialisable metadata; ``dim``, ``n_items`` and ``shards`` are filled in.
    items, pairs, negatives : pandas.DataFrame
        The run's tables.
    embeddings : numpy.ndarray
        (N, D), row ``i`` = item ``i``.
    shard_rows : int
        Items per part.

    Returns
    -------
    Path
        The run folder.
    """
    writer = ShardWriter(Path(path), n_items=len(items), shard_rows=shard_rows)
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(items):
        raise RunError(f"embeddings have shape {emb.shape}, expected ({len(items)}, D)")
    for start in range(0, len(items), writer.shard_rows):
        stop = min(len(items), start + writer.shard_rows)
        writer.add(np.arange(start, stop), emb[start:stop])
    return writer.finish(manifest=manifest, items=items, pairs=pairs, negatives=negatives)


# ---------------------------------------------------------------------------------------------------------------------
# Reading


def _part_paths(path: Path, shards: Any, kind: str) -> list[Path]:
    where = path / "manifest.json"
    names = shards.get(kind)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RunError(f"{where}: 'shards.{kind}' must be a non-empty list of file names")
    root = path.resolve()
    out = []
    for name in names:
        file = (path / name).resolve()
        if not file.is_relative_to(root) or file == root:
            raise RunError(f"{where}: shard file {name[:80]!r} leaves the run folder; it is refused")
        out.append(file)
    return out


def _read_tables(files: list[Path], kind: str) -> pd.DataFrame:
    try:
        parts = [pd.read_parquet(f) for f in files]
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt or missing file
        text = " ".join(str(exc).split())[:300]
        raise RunError(f"cannot read the {kind} shards: {text}") from None
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def open_shards(path: Path, manifest: dict[str, Any]) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame, pd.DataFrame]:
    """Read a sharded run's tables and memory-map its embedding parts.

    Parameters
    ----------
    path : Path
        The run folder.
    manifest : dict
        Its manifest, holding ``shards``.

    Returns
    -------
    items, parts, pairs, negatives
        The joined tables, and the embedding parts (memory-mapped float arrays, (rows_k, D) each, in order).

    Raises
    ------
    RunError
        When ``shards`` is malformed, names a file outside the folder, or a part's rows disagree with it.
    """
    shards = manifest.get("shards")
    where = path / "manifest.json"
    if not isinstance(shards, dict):
        raise RunError(f"{where}: 'shards' must be a JSON object")
    emb_files = _part_paths(path, shards, "embeddings")
    rows = shards.get("rows")
    if rows is not None and (
        not isinstance(rows, list)
        or len(rows) != len(emb_files)
        or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rows)
    ):
        raise RunError(f"{where}: 'shards.rows' must list one positive row count per embedding part")
    parts = []
    dim = None
    for k, file in enumerate(emb_files):
        try:
            array = np.load(file, allow_pickle=False, mmap_mode="r")
        except Exception as exc:  # noqa: BLE001 - numpy raises many types for a corrupt file
            raise RunError(f"cannot read {file}: {' '.join(str(exc).split())[:300]}") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.dtype.itemsize > 8 or array.ndim != 2:
            raise RunError(f"{file} must hold a 2-D float array (float32)")
        if rows is not None and array.shape[0] != rows[k]:
            raise RunError(f"{file} has {array.shape[0]} rows but the manifest lists {rows[k]}")
        if dim is not None and array.shape[1] != dim:
            raise RunError(f"{file} has {array.shape[1]} columns but the parts before it have {dim}")
        dim = array.shape[1]
        parts.append(array)
    tables = [_read_tables(_part_paths(path, shards, kind), kind) for kind in TABLES]
    return tables[0], parts, tables[1], tables[2]


def join_embedding_parts(path: Path, parts: list[np.ndarray]) -> np.ndarray:
    """The (N, D) embeddings of a sharded run as one array.

    One part is returned as it is (memory-mapped). Several parts of at most :data:`JOIN_IN_MEMORY_BYTES`
    together are concatenated in memory; larger ones are copied once into ``embeddings/joined.npy`` (reused by
    later loads while it is newer than every part) and memory-mapped from there. Analyses that can stream
    should use :meth:`analysis.runs.folder.Run.embedding_parts` instead.

    Returns
    -------
    numpy.ndarray
        float (N, D).
    """
    if len(parts) == 1:
        return parts[0]
    n = sum(p.shape[0] for p in parts)
    dim = parts[0].shape[1]
    if n * dim * 4 <= JOIN_IN_MEMORY_BYTES:
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
    joined = path / "embeddings" / "joined.npy"
    newest = max(Path(p.filename).stat().st_mtime_ns for p in parts if isinstance(p, np.memmap) and p.filename)
    if joined.is_file() and joined.stat().st_mtime_ns >= newest:
        array = np.load(joined, allow_pickle=False, mmap_mode="r")
        if array.shape == (n, dim):
            return array
    tmp = joined.with_name(f".tmp-joined-{os.getpid()}.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        start = 0
        for p in parts:
            out[start : start + p.shape[0]] = p
            start += p.shape[0]
        out.flush()
        del out
        os.replace(tmp, joined)
    except OSError as exc:
        raise RunError(f"cannot join the embedding parts of {path} into {joined}: {exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.load(joined, allow_pickle=False, mmap_mode="r")
