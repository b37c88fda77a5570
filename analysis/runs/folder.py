"""The run folder: the on-disk contract between the embedding engine and every analysis.

Layout (a public interface, see ``DESIGN.md``)::

    RUN/manifest.json      dataset/checkpoint paths and hashes, model kind, dim, device, dtype, logit scale ...
    RUN/items.parquet      item_id, modality ('text' | 'image'), content, label (nullable), key (content hash)
    RUN/embeddings.npy     float32 (N, D), rows L2-normalised
    RUN/pairs.parquet      pair_id, anchor_id, positive_id
    RUN/negatives.parquet  pair_id, negative_id, source ('given' | 'in_batch' | 'mined')

``items.parquet`` also carries ``key``, a content hash of the item (modality + text, or modality + image
bytes), so that review decisions survive re-embedding with another checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import RunError

ITEM_COLUMNS = ("item_id", "modality", "content", "label", "key")
PAIR_COLUMNS = ("pair_id", "anchor_id", "positive_id")
NEGATIVE_COLUMNS = ("pair_id", "negative_id", "source")
NEGATIVE_SOURCES = ("given", "in_batch", "mined")


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
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norms, 1e-12)
    items = items.copy()
    if "key" not in items.columns:
        items["key"] = items["modality"].astype(str) + ":" + items["content"].astype(str)
    np.save(path / "embeddings.npy", emb.astype(np.float32))
    items.to_parquet(path / "items.parquet", index=False)
    pairs.to_parquet(path / "pairs.parquet", index=False)
    negatives.to_parquet(path / "negatives.parquet", index=False)
    manifest = {**manifest, "dim": int(emb.shape[1]), "n_items": int(emb.shape[0])}
    _atomic_write_bytes(path / "manifest.json", json.dumps(manifest, indent=2, default=str).encode())
    return path


def load_run(path: str | Path) -> Run:
    """Load a run folder written by :func:`write_run` (or by hand, following DESIGN.md).

    Raises
    ------
    RunError
        When a file is missing or the tables disagree with the embeddings.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise RunError(f"{path} is not a run folder (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        items = pd.read_parquet(path / "items.parquet")
        embeddings = np.load(path / "embeddings.npy", allow_pickle=False)
        pairs = pd.read_parquet(path / "pairs.parquet")
        negatives = pd.read_parquet(path / "negatives.parquet")
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read run folder {path}: {exc}") from exc
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
    if embeddings.ndim != 2 or embeddings.shape[0] != len(items):
        raise RunError(f"{path}: embeddings.npy has shape {embeddings.shape} but there are {len(items)} items")
    return Run(
        path=path,
        manifest=manifest,
        items=items,
        embeddings=embeddings.astype(np.float32, copy=False),
        pairs=pairs,
        negatives=negatives,
    )
