"""The embedding engine: dataset + checkpoint -> run folder (cached by content hash).

:func:`embed_to_run` reads a dataset (:func:`analysis.data.load.load_dataset`), loads a checkpoint
(:func:`analysis.embedding.checkpoints.load_checkpoint`), embeds every item and writes a run folder
(:func:`analysis.runs.folder.write_run`). :func:`embed_items` is the batched core:

- everything runs under ``torch.inference_mode()`` on the chosen device, with fp16/bf16 autocast on CUDA;
- texts are sorted by length (longest first) before batching, so a batch pads little; each batch's rows are
  written straight to their item rows of the output, which restores the order;
- images are opened and decoded one batch at a time: at most one batch of decoded images is in memory;
- the output is one preallocated float32 (N, D) array (a memory map on disk for large N), rows L2-normalised.

The run folder is named after a hash of (dataset content hash, checkpoint content hash, options that change
the result); when a complete run with that key exists it is returned at once, without loading the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

import analysis
from analysis.data.images import image_size_problem
from analysis.embedding.checkpoints import CheckpointInfo, build_encoder, inspect_checkpoint
from analysis.embedding.encoders import Encoder, dtype_name, one_line, resolve_device, resolve_precision
from analysis.errors import CheckpointError, DatasetError, NegScopeError, RunError
from analysis.runs.folder import write_run
from analysis.runs.workspace import runs_dir

#: Bumped when the engine changes what it writes, so older cached runs are not reused.
ENGINE_VERSION = 1
#: Output arrays larger than this many bytes are memory-mapped into the run folder while they fill up.
MEMMAP_BYTES = 256 << 20
RUN_FILES = ("manifest.json", "items.parquet", "embeddings.npy", "pairs.parquet", "negatives.parquet")

Progress = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, message: str) -> None:
    return None


def run_key(
    dataset_hash: str,
    checkpoint_hash: str,
    *,
    dtype: str,
    dataset_batch_size: int,
    modality: dict[str, str] | None,
) -> str:
    """Cache key of a run: sha256 over the content hashes and the options that change the result.

    Device and embedding batch size are left out (they change nothing but rounding); the compute precision,
    the dataset's in-batch size (it decides the ``in_batch`` negatives) and a modality override are in.

    Returns
    -------
    str
        64 hex characters; the run folder is named ``run-`` + the first 16.
    """
    payload = {
        "dataset_hash": dataset_hash,
        "checkpoint_hash": checkpoint_hash,
        "dtype": dtype,
        "dataset_batch_size": int(dataset_batch_size),
        "modality": modality,
        "engine_version": ENGINE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run_folder_name(key: str) -> str:
    """Name of the cached run folder for a :func:`run_key`."""
    return f"run-{key[:16]}"


# ---------------------------------------------------------------------------------------------------------------------
# The batched core


def _open_image(root: Path | None, content: str) -> Image.Image:
    """Open and decode one image of the dataset (the file is closed once decoded)."""
    if root is None:
        raise DatasetError(f"cannot open the image {content[:120]!r}: the dataset folder is unknown")
    root = Path(root).resolve()
    path = (root / content).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"the image path {content[:120]!r} leaves the dataset folder {root}; it is refused")
    try:
        with Image.open(path) as image:
            too_big = image_size_problem(image.size, content)  # from the header, before decoding
            if too_big is not None:
                raise DatasetError(too_big, file=path)
            image.load()  # decode now; leaving the block closes the file but keeps the pixels
        if image.mode in ("RGB", "L"):
            return image
        rgb = image.convert("RGB")
        image.close()
        return rgb
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read the image {content[:120]!r}: {exc}", file=path) from exc


def length_batches(
    lengths: np.ndarray, *, batch_size: int, token_budget: int | None = None
) -> Iterator[tuple[int, int]]:
    """Cut length-sorted texts into batches.

    Parameters
    ----------
    lengths : numpy.ndarray
        (N,) lengths, sorted longest first.
    batch_size : int
        Most texts per batch.
    token_budget : int, optional
        Most padded tokens (texts x longest length) per batch; on CPU, long batches of long texts run slower
        per token than several short ones, so the engine caps them there.

    Returns
    -------
    iterator of (start, stop)
        Consecutive slices covering 0..N.
    """
    n = len(lengths)
    start = 0
    while start < n:
        size = batch_size
        if token_budget is not None:
            size = max(1, min(batch_size, token_budget // max(1, int(lengths[start]))))
        stop = min(n, start + size)
        yield start, stop
        start = stop


class _Output:
    """The (N, D) float32 output, allocated when the first batch tells D."""

    def __init__(self, n: int, *, memmap_path: Path | None) -> None:
        self.n = n
        self.memmap_path = memmap_path
        self.array: np.ndarray | None = None

    def store(self, rows: np.ndarray, emb: torch.Tensor, *, what: str) -> None:
        if emb.ndim != 2 or emb.shape[0] != len(rows):
            raise CheckpointError(f"the model returned shape {tuple(emb.shape)} for a batch of {len(rows)} {what}")
        emb = torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy()
        if not np.isfinite(emb).all():
            raise CheckpointError(
                f"the model produced NaN or infinite embeddings for {what}; try --precision fp32 (in the app: fp32)"
            )
        if self.array is None:
            shape = (self.n, int(emb.shape[1]))
            if self.memmap_path is not None and self.n * shape[1] * 4 > MEMMAP_BYTES:
                self.array = np.lib.format.open_memmap(self.memmap_path, mode="w+", dtype=np.float32, shape=shape)
            else:
                self.array = np.empty(shape, dtype=np.float32)
        elif emb.shape[1] != self.array.shape[1]:
            raise CheckpointError(
                f"the model returned {emb.shape[1]}-dim embeddings for {what} but {self.array.shape[1]}-dim before; "
                "text and image embeddings must share one space"
            )
        self.array[rows] = emb


def embed_items(
    encoder: Encoder,
    items: pd.DataFrame,
    *,
    root: Path | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
    memmap_path: Path | None = None,
) -> np.ndarray:
    """Embed every item with ``encoder``, in batches.

    Parameters
    ----------
    encoder : Encoder
        From :func:`analysis.embedding.checkpoints.load_checkpoint`.
    items : pandas.DataFrame
        (N rows) ``modality`` ('text' | 'image') and ``content`` (text, or image path relative to ``root``),
        row ``i`` = item ``i``. Precomputed encoders also use ``item_id`` / ``key``.
    root : Path, optional
        Folder that image paths are relative to.
    batch_size : int
        Items per forward pass.
    progress : callable, optional
        ``progress(done, total, message)`` after every batch.
    memmap_path : Path, optional
        Where to memory-map the output when it is larger than :data:`MEMMAP_BYTES`.

    Returns
    -------
    numpy.ndarray
        float32 (N, D), rows L2-normalised, row ``i`` = item ``i``.

    Raises
    ------
    CheckpointError
        When the encoder cannot embed a modality present, or returns bad shapes or NaN.
    DatasetError
        When an image cannot be read.
    """
    if int(batch_size) < 1:
        raise NegScopeError(f"the batch size must be a positive integer, got {batch_size}")
    batch_size = int(batch_size)
    report = progress or _no_progress
    n = len(items)
    if encoder.kind == "precomputed":
        report(0, n, "aligning precomputed embeddings")
        emb = encoder.aligned(items)  # type: ignore[attr-defined]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        np.divide(emb, np.maximum(norms, 1e-12), out=emb)
        report(n, n, "aligned precomputed embeddings")
        return emb
    modality = items["modality"].to_numpy()
    contents = items["content"].to_numpy(dtype=object)
    text_rows = np.flatnonzero(modality == "text")
    image_rows = np.flatnonzero(modality == "image")
    if len(text_rows) + len(image_rows) != n:
        bad = sorted(set(map(str, modality)) - {"text", "image"})
        raise NegScopeError(f"items have unknown modalities {bad}")
    out = _Output(n, memmap_path=memmap_path)
    done = 0
    report(0, n, "embedding")
    with torch.inference_mode():
        if len(text_rows):
            lengths = np.asarray(encoder.text_lengths(contents[text_rows].tolist()), dtype=np.int64)
            by_length = np.argsort(-lengths, kind="stable")
            order, lengths = text_rows[by_length], lengths[by_length]
            budget = encoder.cpu_token_budget if encoder.device.type == "cpu" else None
            for start, stop in length_batches(lengths, batch_size=batch_size, token_budget=budget):
                rows = order[start:stop]
                out.store(rows, encoder.encode_texts(contents[rows].tolist()), what="texts")
                done += len(rows)
                report(done, n, "embedding texts")
        for start in range(0, len(image_rows), batch_size):
            rows = image_rows[start : start + batch_size]
            images = [_open_image(root, contents[i]) for i in rows]
            try:
                emb = encoder.encode_images(images)
            finally:
                while images:  # release the decoded pixels before the next batch is opened
                    images.pop().close()
            out.store(rows, emb, what="images")
            done += len(rows)
            report(done, n, "embedding images")
    if out.array is None:
        raise NegScopeError("the dataset has no items to embed")
    return out.array


# ---------------------------------------------------------------------------------------------------------------------
# Run folders


def _finite_or_none(value: float | None) -> float | None:
    """``value`` as a float when it is a finite positive number, else None (never NaN in a manifest)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _column_modalities(dataset: Any) -> dict[str, str]:
    """Modality of each dataset column (anchor, positive, negative columns)."""
    columns = getattr(dataset, "columns", None)
    if isinstance(columns, dict) and columns:
        return {str(k): str(v) for k, v in columns.items()}
    items, pairs, negatives = dataset.items, dataset.pairs, dataset.negatives
    modality = items["modality"].to_numpy()
    found: dict[str, str] = {}
    if len(pairs):
        for column, ids in (("anchor", pairs["anchor_id"]), ("positive", pairs["positive_id"])):
            for value in pd.unique(modality[ids.to_numpy(dtype=np.int64)]):
                found.setdefault(column, str(value))
    if len(negatives) and "column" in negatives.columns:
        given = negatives.dropna(subset=["column"]).drop_duplicates("column")
        for column, neg_id in zip(given["column"], given["negative_id"], strict=True):
            found.setdefault(str(column), str(modality[int(neg_id)]))
    return found


def check_modalities(encoder: Encoder, dataset: Any, *, data: Path | str) -> None:
    """Refuse a checkpoint that cannot embed one of the dataset's modalities, naming the column.

    Raises
    ------
    CheckpointError
        E.g. a text-only sentence-transformers model on a dataset whose ``anchor`` column holds images.
    """
    if encoder.kind == "precomputed":
        return
    present = set(map(str, pd.unique(dataset.items["modality"])))
    missing = present - set(encoder.modalities)
    if not missing:
        return
    wanted = sorted(missing)[0]
    columns = [c for c, m in _column_modalities(dataset).items() if m == wanted]
    where = f"column '{columns[0]}'" if columns else "some items"
    can = " and ".join(sorted(encoder.modalities)) or "nothing"
    hint = (
        "use an image-text checkpoint (a NegScope dual encoder or a CLIP/SigLIP folder) or precomputed embeddings"
        if wanted == "image"
        else "use a checkpoint with a text tower or precomputed embeddings"
    )
    raise CheckpointError(
        f"the {encoder.kind} checkpoint {encoder.path} embeds only {can}, but {where} of {data} holds {wanted}s; {hint}"
    )


def _claim_target(target: Path, key: str) -> Path | None:
    """Return ``target`` when it already holds the run ``key``; fail when it holds anything else."""
    manifest = _read_manifest(target)
    if manifest is not None:
        if manifest.get("run_key") == key:
            return target
        raise RunError(
            f"{target} already holds another run (a different dataset, checkpoint or options); "
            "choose another output folder or delete it"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RunError(f"{target} exists and is not an empty folder or a NegScope run; choose another output folder")
    return None


def _publish(tmp: Path, target: Path, key: str) -> Path:
    """Move a finished run folder into place atomically; a racing writer of the same run wins harmlessly."""
    try:
        os.rename(tmp, target)  # atomic; replaces an empty folder, fails on a non-empty one
    except OSError:
        done = _claim_target(target, key)
        if done is None:
            raise
        return done
    return target


def _check_batch_size(batch_size: int) -> None:
    """Raise :class:`~analysis.errors.NegScopeError` unless ``batch_size`` is a positive integer."""
    if int(batch_size) < 1:
        raise NegScopeError(f"the batch size must be a positive integer, got {batch_size}")


def _read_inputs(
    data: str | Path,
    checkpoint: str | Path,
    *,
    dataset_batch_size: int,
    modality: dict[str, str] | None,
    report: Progress,
) -> tuple[Path, Any, CheckpointInfo]:
    """Read the dataset (reporting progress) and hash the checkpoint: the first steps of every engine.

    Parameters
    ----------
    data, checkpoint : str or Path
        As for :func:`embed_to_run`.
    dataset_batch_size : int
        Batch size that decides the dataset's ``in_batch`` negatives.
    modality : dict, optional
        Per-column modality override for :func:`analysis.data.load.load_dataset`.
    report : callable
        ``report(done, total, message)``.

    Returns
    -------
    data_path : Path
        ``data`` with ``~`` expanded.
    dataset : Dataset
        The loaded dataset (items, pairs, negatives, hashes).
    info : CheckpointInfo
        The inspected (hashed) checkpoint; nothing is loaded yet.
    """
    from analysis.data.load import load_dataset

    data_path = Path(data).expanduser()
    report(0, 1000, "reading the dataset")
    dataset = load_dataset(
        data_path,
        batch_size=dataset_batch_size,
        modality=modality,
        progress=lambda fraction: report(int(round(1000 * fraction)), 1000, "reading the dataset"),
    )
    report(1000, 1000, "hashing the checkpoint")
    return data_path, dataset, inspect_checkpoint(checkpoint)


def _claim_run(
    dataset: Any,
    info: CheckpointInfo,
    *,
    dtype: torch.dtype,
    dataset_batch_size: int,
    modality: dict[str, str] | None,
    out: str | Path | None,
    report: Progress,
) -> tuple[str, Path, bool]:
    """Compute the run key and target folder, and reuse a complete cached run there if one exists.

    Parameters
    ----------
    dataset : Dataset
        The loaded dataset.
    info : CheckpointInfo
        The inspected checkpoint.
    dtype : torch.dtype
        The compute dtype (part of the run key).
    dataset_batch_size : int
        Batch size that decided the dataset's ``in_batch`` negatives (part of the run key).
    modality : dict, optional
        Per-column modality override (part of the run key).
    out : str or Path, optional
        The run folder to write; default ``<workspace>/runs/run-<key>``.
    report : callable
        ``report(done, total, message)``.

    Returns
    -------
    key : str
        The run key (:func:`run_key`).
    target : Path
        The run folder.
    reused : bool
        True when ``target`` already holds the complete run (reported as reused); False when it must be
        written (reported as loading the checkpoint).
    """
    key = run_key(
        dataset.dataset_hash,
        info.content_hash,
        dtype=dtype_name(dtype),
        dataset_batch_size=dataset_batch_size,
        modality=modality,
    )
    target = Path(out).expanduser().resolve() if out is not None else runs_dir() / run_folder_name(key)
    n = len(dataset.items)
    if _claim_target(target, key) is not None:
        report(n, n, "reused the cached run")
        return key, target, True
    report(0, n, "loading the checkpoint")
    return key, target, False


def _make_tmp(target: Path) -> Path:
    """Create a fresh temporary folder next to ``target``, to be published with :func:`_publish`."""
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise RunError(f"cannot create a run folder in {target.parent}: {one_line(exc)}") from exc
    return tmp


def _run_manifest(
    data_path: Path,
    dataset: Any,
    info: CheckpointInfo,
    *,
    model: dict[str, Any],
    batch_size: int,
    precision: str,
    dtype: torch.dtype,
    dataset_batch_size: int,
    modality: dict[str, str] | None,
    key: str,
    started: float,
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a run folder's ``manifest.json`` contents, shared by the engines.

    Parameters
    ----------
    data_path : Path
        The dataset path as given.
    dataset : Dataset
        The loaded dataset.
    info : CheckpointInfo
        The inspected checkpoint.
    model : dict
        The model fields, in order (``model_kind``, ``dim``, ``device``, ``dtype``, ``logit_scale``).
    batch_size : int
        Items per forward pass.
    precision : str
        The requested precision.
    dtype : torch.dtype
        The compute dtype.
    dataset_batch_size : int
        Batch size that decided the dataset's ``in_batch`` negatives.
    modality : dict, optional
        Per-column modality override.
    key : str
        The run key.
    started : float
        ``time.perf_counter()`` when the run started.
    engine : dict, optional
        An ``engine`` entry (which engine and its settings), placed after ``options``.

    Returns
    -------
    dict
        The manifest.
    """
    from analysis.data.tables import content_hash

    manifest: dict[str, Any] = {
        "dataset_path": str(data_path.resolve()),
        "dataset_root": str(dataset.root) if dataset.root is not None else None,
        "dataset_source": str(dataset.source) if getattr(dataset, "source", None) is not None else None,
        "dataset_format": getattr(dataset, "format", None),
        "dataset_hash": dataset.dataset_hash,
        "dataset_content_hash": content_hash(dataset.items, dataset.pairs, dataset.negatives),
        "checkpoint_path": str(info.path),
        "checkpoint_hash": info.content_hash,
        **model,
        "batch_size": int(batch_size),
        "options": {
            "precision": precision,
            "dtype": dtype_name(dtype),
            "dataset_batch_size": int(dataset_batch_size),
            "modality": modality,
            "engine_version": ENGINE_VERSION,
        },
    }
    if engine is not None:
        manifest["engine"] = engine
    manifest.update(
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "negscope_version": analysis.__version__,
            "run_key": key,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
    )
    return manifest


def embed_to_run(
    data: str | Path,
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
    precision: str = "auto",
    dataset_batch_size: int = 32,
    modality: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Embed a dataset with a checkpoint and write (or reuse) the run folder.

    Parameters
    ----------
    data : str or Path
        Dataset file or folder (see :func:`analysis.data.load.load_dataset`).
    checkpoint : str or Path
        Checkpoint folder or file (see :func:`analysis.embedding.checkpoints.load_checkpoint`).
    out : str or Path, optional
        The run folder to write. Default: ``<workspace>/runs/run-<key>``, where ``key`` hashes the dataset's
        and checkpoint's contents and the options that change the result (:func:`run_key`).
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"`` ...
    batch_size : int
        Items per forward pass.
    precision : {"auto", "fp32", "fp16", "bf16"}
        Compute precision (``"auto"``: autocast to bf16/fp16 on CUDA, fp32 elsewhere). Stored embeddings are
        always float32.
    dataset_batch_size : int
        Batch size that decides the dataset's ``in_batch`` negatives.
    modality : dict, optional
        Per-column modality override passed to :func:`analysis.data.load.load_dataset`, e.g.
        ``{"positive": "text"}``.
    progress : callable, optional
        ``progress(done, total, message)``: tqdm in the CLI, ``st.progress`` in the app.

    Returns
    -------
    Path
        The complete run folder (``manifest.json``, ``items.parquet``, ``embeddings.npy``, ``pairs.parquet``,
        ``negatives.parquet``).

    Raises
    ------
    DatasetError, CheckpointError, RunError
        Bad dataset, bad or unsafe checkpoint, a modality the checkpoint cannot embed (naming the column), an
        ``out`` folder that holds something else.
    """
    report = progress or _no_progress
    _check_batch_size(batch_size)
    started = time.perf_counter()
    data_path, dataset, info = _read_inputs(
        data, checkpoint, dataset_batch_size=dataset_batch_size, modality=modality, report=report
    )
    if info.kind == "precomputed":
        dev, dtype = torch.device("cpu"), torch.float32
        resolve_precision(precision, dev)
    else:
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
    key, target, reused = _claim_run(
        dataset,
        info,
        dtype=dtype,
        dataset_batch_size=dataset_batch_size,
        modality=modality,
        out=out,
        report=report,
    )
    if reused:
        return target
    n = len(dataset.items)
    encoder = build_encoder(info, device=dev, precision=precision)
    check_modalities(encoder, dataset, data=data_path)
    tmp = _make_tmp(target)
    partial = tmp / ".embeddings.partial.npy"
    try:
        embeddings = embed_items(
            encoder, dataset.items, root=dataset.root, batch_size=batch_size, progress=report, memmap_path=partial
        )
        report(n, n, "writing the run folder")
        manifest = _run_manifest(
            data_path,
            dataset,
            info,
            model={
                "model_kind": encoder.kind,
                "dim": int(embeddings.shape[1]),
                "device": str(encoder.device),
                "dtype": encoder.dtype_name,
                "logit_scale": _finite_or_none(encoder.logit_scale),
            },
            batch_size=batch_size,
            precision=precision,
            dtype=dtype,
            dataset_batch_size=dataset_batch_size,
            modality=modality,
            key=key,
            started=started,
        )
        try:
            write_run(
                tmp,
                manifest=manifest,
                items=dataset.items,
                embeddings=embeddings,
                pairs=dataset.pairs,
                negatives=dataset.negatives,
            )
            del embeddings
            partial.unlink(missing_ok=True)
            return _publish(tmp, target, key)
        except OSError as exc:
            raise RunError(f"cannot write the run folder {target}: {one_line(exc)}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
