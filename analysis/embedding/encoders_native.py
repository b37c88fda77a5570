"""Encoders that need no optional package: NegScope's own dual encoder and precomputed embeddings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from analysis.embedding.encoders import Encoder, one_line
from analysis.errors import CheckpointError

if TYPE_CHECKING:
    from analysis.embedding.dual_encoder import DualEncoder

# ---------------------------------------------------------------------------------------------------------------------
# NegScope dual encoder


class DualEncoderEncoder(Encoder):
    """NegScope's CLIP-style dual encoder (:class:`analysis.embedding.dual_encoder.DualEncoder`): text and images.

    Parameters
    ----------
    model : DualEncoder
        The loaded model (moved to ``device`` and put in eval mode here).
    path, content_hash, device, dtype
        See :class:`analysis.embedding.encoders.Encoder`.
    """

    kind = "negscope-dual-encoder"

    def __init__(
        self, model: DualEncoder, *, path: Path, content_hash: str, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.model = model.to(device).eval()
        super().__init__(
            path=path,
            content_hash=content_hash,
            modalities=frozenset({"text", "image"}),
            device=device,
            dtype=dtype,
            logit_scale=float(model.logit_scale_value),
        )

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """(B, D) raw text embeddings; see :meth:`Encoder.encode_texts`."""
        token_ids = self.model.tokenize(list(texts)).to(self.device, non_blocking=True)
        with self.autocast():
            return self.model.encode_text(token_ids)

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """(B, D) raw image embeddings; see :meth:`Encoder.encode_images`."""
        pixels = self.model.preprocess_images(list(images)).to(self.device, non_blocking=True)
        with self.autocast():
            return self.model.encode_image(pixels)


def load_dual_encoder_folder(folder: Path, *, content_hash: str, device: torch.device, dtype: torch.dtype) -> Encoder:
    """Load a NegScope dual-encoder folder (``config.json`` + ``model.safetensors``)."""
    from analysis.embedding.dual_encoder import DualEncoder

    model = DualEncoder.from_folder(folder, device="cpu")
    return DualEncoderEncoder(model, path=folder, content_hash=content_hash, device=device, dtype=dtype)


def load_dual_encoder_state_dict(
    state: dict[str, Tensor],
    config_path: Path,
    *,
    path: Path,
    content_hash: str,
    device: torch.device,
    dtype: torch.dtype,
) -> Encoder:
    """Build a NegScope dual encoder from a state dict (read with ``weights_only=True``) and its ``config.json``.

    Raises
    ------
    CheckpointError
        When the config is not a NegScope dual-encoder config or the tensors do not match it.
    """
    from analysis.embedding.dual_encoder import DualEncoder, DualEncoderConfig, check_state_dict_shapes

    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        config = DualEncoderConfig.from_dict(data)
    except RecursionError:
        raise CheckpointError(f"{path} holds a state dict, but {config_path} is nested too deeply") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path} holds a state dict, but {config_path} is not a NegScope dual-encoder config: {one_line(exc)}"
        ) from exc
    check_state_dict_shapes(config, state, path)
    model = DualEncoder(config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} does not match {config_path}: {one_line(exc)}") from exc
    return DualEncoderEncoder(model.eval(), path=path, content_hash=content_hash, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Precomputed embeddings

ALIGN_COLUMNS = ("item_id", "key", "content")
_NON_VECTOR_COLUMNS = {"item_id", "key", "content", "modality", "label"}


class PrecomputedEmbeddings(Encoder):
    """Embeddings computed elsewhere (a model NegScope cannot run), aligned to a dataset's items.

    Alignment rules (``items`` is the dataset's items table, row ``i`` = ``item_id`` ``i``):

    - ``.npy``: a 2-D float array (N, D), row ``i`` = item ``i`` (items order).
    - ``.npz``: the same array under the key ``embeddings`` (optionally a scalar ``logit_scale``).
    - ``.parquet``: either rows in items order with one list column ``embedding`` or one numeric column per
      dimension; or an alignment column, checked in this order: ``item_id`` (a permutation of 0..N-1),
      ``key`` (the items' content hash, as in ``items.parquet``) or ``content`` (the text itself, or the
      image path as the dataset wrote it, with an optional ``modality`` column). With an alignment column,
      rows for other items are ignored and a missing item is an error.

    Parameters
    ----------
    path : Path
        The file.
    content_hash : str
        sha256 of the file.
    vectors : numpy.ndarray
        (M, D) float array as read.
    align : pandas.DataFrame or None
        (M rows) the alignment columns, or None when rows are in items order.
    logit_scale : float or None
        A logit scale stored with the embeddings (npz key ``logit_scale``), if any.
    """

    kind = "precomputed"

    def __init__(
        self,
        *,
        path: Path,
        content_hash: str,
        vectors: np.ndarray,
        align: pd.DataFrame | None = None,
        logit_scale: float | None = None,
    ) -> None:
        super().__init__(
            path=path,
            content_hash=content_hash,
            modalities=frozenset(),
            device=torch.device("cpu"),
            dtype=torch.float32,
            logit_scale=logit_scale,
        )
        self.vectors = vectors
        self.align = align

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.vectors.shape[1])

    def aligned(self, items: pd.DataFrame) -> np.ndarray:
        """Return the embeddings in items order.

        Parameters
        ----------
        items : pandas.DataFrame
            (N rows) the dataset's items (``item_id``, ``modality``, ``content``, ``key``), in item_id order.

        Returns
        -------
        numpy.ndarray
            float32 (N, D), not yet normalised.

        Raises
        ------
        CheckpointError
            When the row count or the alignment column does not match the items.
        """
        n = len(items)
        if self.align is None:
            if self.vectors.shape[0] != n:
                raise CheckpointError(
                    f"{self.path} has {self.vectors.shape[0]} rows but the dataset has {n} items; rows must be in "
                    "items order (item_id 0..N-1), one per item"
                )
            rows = np.arange(n)
        else:
            rows = self._match_rows(items)
        out = np.asarray(self.vectors[rows], dtype=np.float32)
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise CheckpointError(f"{self.path}: the embedding of item {bad} holds NaN or infinite values")
        zero = ~out.any(axis=1)
        if zero.any():
            bad = int(np.flatnonzero(zero)[0])
            raise CheckpointError(
                f"{self.path}: the embedding of item {bad} is all zeros ({int(zero.sum())} such rows); "
                "a zero vector has no direction to compare"
            )
        return out

    def _match_rows(self, items: pd.DataFrame) -> np.ndarray:
        align = self.align
        assert align is not None
        n = len(items)
        if "item_id" in align.columns:
            ids = pd.to_numeric(align["item_id"], errors="coerce")
            if ids.isna().any() or (ids % 1 != 0).any():
                raise CheckpointError(f"{self.path}: column 'item_id' must hold integers")
            ids = ids.to_numpy(dtype=np.int64)
            if len(ids) != n or not np.array_equal(np.sort(ids), np.arange(n)):
                raise CheckpointError(
                    f"{self.path} has {len(ids)} rows with item_id values that are not 0..{n - 1}: the dataset has "
                    f"{n} items, one row each"
                )
            rows = np.empty(n, dtype=np.int64)
            rows[ids] = np.arange(n)
            return rows
        if "key" in align.columns:
            column, wanted, have = "key", items["key"].astype(str), align["key"].astype(str)
        else:
            column = "content"
            if "modality" in align.columns:
                wanted = items["modality"].astype(str) + "\x00" + items["content"].astype(str)
                have = align["modality"].astype(str) + "\x00" + align["content"].astype(str)
            else:
                wanted, have = items["content"].astype(str), align["content"].astype(str)
        index = pd.Index(have)
        if index.has_duplicates:
            dup = str(index[index.duplicated()][0]).replace("\x00", " ")
            raise CheckpointError(f"{self.path}: column '{column}' repeats the value {dup!r}")
        rows = index.get_indexer(wanted)
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            first = str(wanted.iloc[int(missing[0])]).replace("\x00", " ")
            raise CheckpointError(
                f"{self.path} has no embedding for {len(missing)} of the dataset's {n} items (matched on column "
                f"'{column}'; first missing: {first[:80]!r})"
            )
        return rows


def _check_vectors(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape[1] < 1:
        raise CheckpointError(
            f"{path} must hold a 2-D numeric array (N items, D dims), got dtype {array.dtype} and shape {array.shape}"
        )
    return array


def load_precomputed(path: Path, *, content_hash: str) -> PrecomputedEmbeddings:
    """Read precomputed embeddings from ``.npy``, ``.npz`` or ``.parquet`` (never unpickling anything).

    Raises
    ------
    CheckpointError
        When the file cannot be read or does not hold a 2-D numeric array.
    """
    suffix = path.suffix.lower()
    logit_scale = None
    align = None
    try:
        if suffix == ".npy":
            vectors = np.load(path, allow_pickle=False, mmap_mode="r")
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if "embeddings" in names:
                    vectors = archive["embeddings"]
                elif len(names) == 1:
                    vectors = archive[names[0]]
                else:
                    raise CheckpointError(f"{path} has no array named 'embeddings' (it holds {names[:5]})")
                if "logit_scale" in names:
                    scale = np.asarray(archive["logit_scale"], dtype=np.float64).reshape(-1)
                    if scale.size != 1 or not np.isfinite(scale[0]) or scale[0] <= 0:
                        raise CheckpointError(f"{path}: 'logit_scale' must be one positive number")
                    logit_scale = float(scale[0])
        elif suffix == ".parquet":
            table = pd.read_parquet(path)
            vectors, align = _parquet_vectors(path, table)
        else:
            raise CheckpointError(f"{path}: precomputed embeddings must be .npy, .npz or .parquet")
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy / zipfile / pyarrow raise many types for a hostile file
        raise CheckpointError(f"cannot read precomputed embeddings {path}: {one_line(exc)}") from None
    return PrecomputedEmbeddings(
        path=path,
        content_hash=content_hash,
        vectors=_check_vectors(path, vectors),
        align=align,
        logit_scale=logit_scale,
    )


def _parquet_vectors(path: Path, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame | None]:
    align_cols = [c for c in ALIGN_COLUMNS if c in table.columns]
    align = table[[*align_cols, *(["modality"] if "modality" in table.columns else [])]] if align_cols else None
    if "embedding" in table.columns:
        cells = table["embedding"].to_numpy()
        if len(cells) == 0:
            raise CheckpointError(f"{path} has no rows")
        lengths = {len(c) if c is not None and hasattr(c, "__len__") else -1 for c in cells}
        if len(lengths) != 1 or -1 in lengths:
            raise CheckpointError(f"{path}: every cell of column 'embedding' must be a list of the same length")
        vectors = np.stack([np.asarray(c) for c in cells])
    else:
        numeric = [c for c in table.columns if c not in _NON_VECTOR_COLUMNS and pd.api.types.is_numeric_dtype(table[c])]
        if not numeric:
            raise CheckpointError(
                f"{path} needs a list column 'embedding' or one numeric column per dimension (found {list(table.columns)[:8]})"
            )
        vectors = table[numeric].to_numpy()
    return vectors, align
