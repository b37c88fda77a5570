"""The Ray engine: embed a dataset on a Ray cluster (local or existing) into a sharded run folder.

The driver reads the dataset with NegScope's own reader (:func:`analysis.data.load.load_dataset`: formats,
deduplication, hashes, in-batch negatives) and hashes the checkpoint, exactly as :func:`embed_to_run` does.
Ray Data then carries the items table in blocks to a pool of actors (:class:`EncodeBatches`), each of which
loads the checkpoint once and runs the single-process engine's batched core
(:func:`analysis.embedding.engine.embed_items`: length sorting, inference mode, autocast, image decoding one
batch at a time) over every batch it is given, in ``Dataset.map_batches``. One GPU per actor when the cluster
has GPUs, CPUs otherwise. The driver gathers the rows by item id into the parts of a sharded run folder
(:class:`analysis.runs.shards.ShardWriter`), writing each part as soon as it is complete.

Ray is optional: it is imported only inside :func:`embed_to_run_ray`, and a missing install raises a
:class:`~analysis.errors.NegScopeError` saying ``pip install "ray[data]"``. See ``docs/scale.md`` for
pointing it at an existing cluster (``address="ray://head:10001"`` or ``"auto"``).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError, RunError

#: Items per Ray Data block handed to an actor (a block is cut into ``batch_size`` forward passes by the engine).
BLOCK_ROWS = 8192
_ITEM_FIELDS = ["item_id", "modality", "content", "key"]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra
    except ImportError as exc:
        raise NegScopeError(
            f"the Ray engine needs Ray Data, which is not installed ({exc}); install it with "
            "pip install \"ray[data]\", or leave out --engine ray to embed in this process"
        ) from None
    return ray


class EncodeBatches:
    """Ray Data actor: loads the checkpoint once, then embeds each batch of items with the engine's core.

    Parameters
    ----------
    info : CheckpointInfo
        The checkpoint found by the driver (path and content hash; the actor does not re-hash it).
    device : str
        Torch device inside the actor (``"cuda"`` on a GPU actor: Ray sets ``CUDA_VISIBLE_DEVICES``).
    precision : str
        As for :func:`analysis.embedding.engine.embed_to_run`.
    batch_size : int
        Items per forward pass.
    root : str or None
        Folder that image paths are relative to (must be readable from the actor's node).
    threads : int or None
        Torch CPU threads in this actor (its share of the node's CPUs).
    """

    def __init__(
        self, info: Any, *, device: str, precision: str, batch_size: int, root: str | None, threads: int | None
    ) -> None:
        import torch

        from analysis.embedding.checkpoints import build_encoder

        if threads:
            torch.set_num_threads(int(threads))
        self.encoder = build_encoder(info, device=device, precision=precision)
        self.batch_size = int(batch_size)
        self.root = Path(root) if root else None

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        """Embed one batch.

        Parameters
        ----------
        batch : pandas.DataFrame
            (M rows) ``item_id``, ``modality``, ``content``, ``key``.

        Returns
        -------
        dict
            ``item_id`` int64 (M,) and ``embedding`` float32 (M, D), rows L2-normalised.
        """
        from analysis.embedding.engine import embed_items

        items = batch.reset_index(drop=True)
        emb = embed_items(self.encoder, items, root=self.root, batch_size=self.batch_size)
        return {"item_id": items["item_id"].to_numpy(dtype=np.int64), "embedding": np.asarray(emb, dtype=np.float32)}


def _pool(ray: Any, *, actors: int | None, device: str) -> tuple[int, float, float]:
    """(number of actors, GPUs per actor, CPUs per actor) for the connected cluster."""
    if actors is not None and int(actors) < 1:
        raise NegScopeError(f"the number of actors must be a positive integer, got {actors}")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if (gpus and device == "auto") or device.startswith("cuda"):
        if not gpus:
            raise NegScopeError(f"--device {device} asks for GPUs but the Ray cluster has none")
        return (min(int(actors), gpus) if actors else gpus), 1.0, 1.0
    n = int(actors) if actors else cpus
    return n, 0.0, float(cpus) / n  # a fractional share when there are more actors than CPUs: all can start


def embed_to_run_ray(
    data: str | Path,
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    address: str | None = None,
    actors: int | None = None,
    shard_rows: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    precision: str = "auto",
    dataset_batch_size: int = 32,
    modality: dict[str, str] | None = None,
    progress: Any = None,
) -> Path:
    """Embed a dataset on a Ray cluster and write (or reuse) a sharded run folder.

    Parameters
    ----------
    data, checkpoint, out, device, batch_size, precision, dataset_batch_size, modality, progress
        As for :func:`analysis.embedding.engine.embed_to_run` (the cache key is the same: a run of the same
        dataset, checkpoint and options is reused whichever engine wrote it).
    address : str, optional
        Ray cluster to join (``ray.init(address=...)``: ``"auto"``, ``"ray://head:10001"``, ``"10.0.0.5:6379"``).
        None starts a local Ray with this machine's CPUs (and GPUs), shut down again afterwards; when Ray is
        already initialised in this process, that instance is used as it is.
    actors : int, optional
        Encoder actors. Default: one per GPU when the cluster has GPUs, else one per CPU.
    shard_rows : int, optional
        Items per part of the run folder (default :data:`analysis.runs.shards.SHARD_ROWS`).

    Returns
    -------
    Path
        The run folder (sharded: ``manifest.json`` lists ``shards``).

    Raises
    ------
    NegScopeError
        Ray Data not installed; the cluster cannot be reached; as :func:`embed_to_run` otherwise.
    """
    import torch

    from analysis.embedding.checkpoints import build_encoder
    from analysis.embedding.encoders import dtype_name, one_line, resolve_precision
    from analysis.embedding.engine import (
        _check_batch_size,
        _claim_run,
        _finite_or_none,
        _make_tmp,
        _no_progress,
        _publish,
        _read_inputs,
        _run_manifest,
        check_modalities,
    )
    from analysis.runs.shards import SHARD_ROWS, ShardWriter

    ray = _import_ray()
    report = progress or _no_progress
    _check_batch_size(batch_size)
    shard_rows = int(shard_rows) if shard_rows is not None else SHARD_ROWS
    if shard_rows < 1:
        raise NegScopeError(f"rows per shard must be a positive integer, got {shard_rows}")
    started = time.perf_counter()
    data_path, dataset, info = _read_inputs(
        data, checkpoint, dataset_batch_size=dataset_batch_size, modality=modality, report=report
    )
    # The precision the actors will use decides the cache key; on CPU actors "auto" is fp32, on GPU actors it
    # is the autocast dtype of CUDA. Known after connecting, below.
    n = len(dataset.items)

    own_ray = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError ...
            where = address or "a local Ray instance"
            raise NegScopeError(f"cannot start or reach {where}: {one_line(exc)}") from None
        own_ray = True
    try:
        n_actors, gpus_per_actor, cpus_per_actor = _pool(ray, actors=actors, device=device)
        actor_device = "cuda" if gpus_per_actor else "cpu"
        if info.kind == "precomputed":
            actor_device = "cpu"
        dtype = _cuda_dtype(precision) if actor_device == "cuda" else resolve_precision(precision, torch.device("cpu"))
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
        encoder = build_encoder(info, device="cpu", precision=precision if actor_device == "cpu" else "fp32")
        check_modalities(encoder, dataset, data=data_path)  # on the driver, before any actor starts
        logit_scale = _finite_or_none(encoder.logit_scale)
        tmp = _make_tmp(target)
        try:
            writer = ShardWriter(tmp, n_items=n, shard_rows=shard_rows)
            if info.kind == "precomputed":  # nothing to compute: align on the driver
                from analysis.embedding.engine import embed_items

                writer.add(np.arange(n), embed_items(encoder, dataset.items))
            else:
                del encoder
                _run_pool(
                    ray,
                    dataset.items,
                    writer,
                    info=info,
                    root=dataset.root,
                    device=actor_device,
                    precision=precision,
                    batch_size=int(batch_size),
                    n_actors=n_actors,
                    gpus_per_actor=gpus_per_actor,
                    cpus_per_actor=cpus_per_actor,
                    report=report,
                )
            report(n, n, "writing the run folder")
            manifest = _run_manifest(
                data_path,
                dataset,
                info,
                model={
                    "model_kind": info.kind,
                    "device": actor_device,
                    "dtype": dtype_name(dtype),
                    "logit_scale": logit_scale,
                },
                batch_size=batch_size,
                precision=precision,
                dtype=dtype,
                dataset_batch_size=dataset_batch_size,
                modality=modality,
                key=key,
                started=started,
                engine={
                    "name": "ray",
                    "ray_version": str(ray.__version__),
                    "address": address,
                    "actors": n_actors,
                    "gpus_per_actor": gpus_per_actor,
                    "cpus_per_actor": cpus_per_actor,
                    "shard_rows": shard_rows,
                },
            )
            try:
                writer.finish(manifest=manifest, items=dataset.items, pairs=dataset.pairs, negatives=dataset.negatives)
                return _publish(tmp, target, key)
            except OSError as exc:
                raise RunError(f"cannot write the run folder {target}: {one_line(exc)}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if own_ray:
            ray.shutdown()


def _cuda_dtype(precision: str) -> Any:
    import torch

    from analysis.embedding.encoders import resolve_precision

    if not torch.cuda.is_available():  # the driver has no GPU: the actors' autocast choice on CUDA
        return {"auto": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(
            precision, torch.float32
        )
    return resolve_precision(precision, torch.device("cuda"))


def _run_pool(
    ray: Any,
    items: pd.DataFrame,
    writer: Any,
    *,
    info: Any,
    root: Path | None,
    device: str,
    precision: str,
    batch_size: int,
    n_actors: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
    report: Any,
) -> None:
    """Run the actor pool over the items in blocks and hand every result batch to ``writer``."""
    n = len(items)
    table = items[_ITEM_FIELDS].copy()
    table["item_id"] = table["item_id"].astype(np.int64)
    table["modality"] = table["modality"].astype(str)
    table["content"] = table["content"].astype(str)
    table["key"] = table["key"].astype(str)
    block = max(1, min(BLOCK_ROWS, math.ceil(n / (4 * n_actors))))
    blocks = [table.iloc[s : s + block].reset_index(drop=True) for s in range(0, n, block)]
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # parts complete in order, so few are held at once
    context.enable_progress_bars = False
    ds = ray.data.from_pandas(blocks)
    ds = ds.map_batches(
        EncodeBatches,
        fn_constructor_kwargs={
            "info": info,
            "device": device,
            "precision": precision,
            "batch_size": batch_size,
            "root": str(root) if root is not None else None,
            "threads": None if gpus_per_actor else max(1, int(cpus_per_actor)),
        },
        batch_format="pandas",
        batch_size=block,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_gpus=gpus_per_actor,
        num_cpus=cpus_per_actor,
    )
    done = 0
    report(0, n, "embedding on Ray")
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids = np.asarray(batch["item_id"], dtype=np.int64)
        writer.add(ids, np.asarray(batch["embedding"], dtype=np.float32))
        done += len(ids)
        report(done, n, "embedding on Ray")
    if done != n:
        raise RunError(f"the Ray pipeline returned {done} embeddings for {n} items")

