"""``python -m analysis embed``: embed a dataset with a checkpoint and print the run folder's path.

Example::

    python -m analysis embed --data sample_data/digits/pairs.csv --checkpoint sample_data/digits/model
    # ... progress bar on stderr ...
    /home/me/.negscope/runs/run-3f2a9c0d1e4b5a67

The same dataset + checkpoint + options again prints the cached run at once.
"""

from __future__ import annotations

import argparse
import sys

from analysis.choices import PRECISIONS
from analysis.errors import NegScopeError

NAME = "embed"
HELP = "Embed a dataset with a checkpoint and write a run folder; prints the run folder's path last."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``embed`` options to ``parser``."""
    parser.add_argument("--data", required=True, metavar="PATH", help="dataset table (CSV/JSONL/Parquet) or folder")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="NegScope model folder, sentence-transformers or CLIP/SigLIP folder, precomputed .npy/.npz/.parquet, "
        "or a state dict .pt (read with weights_only=True only)",
    )
    parser.add_argument(
        "--out", metavar="RUN", default=None, help="run folder to write (default: a cached folder in the workspace)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="items per forward pass (256)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: fp16/bf16 autocast on CUDA, fp32 elsewhere",
    )
    parser.add_argument(
        "--dataset-batch-size",
        type=int,
        default=32,
        metavar="N",
        help="pairs per batch for in-batch negatives (32)",
    )
    parser.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="COLUMN=MODALITY",
        help="override a column's detected modality, e.g. positive=text (repeatable)",
    )
    parser.add_argument(
        "--engine",
        default="local",
        choices=("local", "ray"),
        help="local: this process (default); ray: a Ray cluster, writing a sharded run folder (needs ray[data])",
    )
    parser.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="with --engine ray: the cluster to join (auto, ray://HEAD:10001, HOST:6379); default: a local Ray",
    )
    parser.add_argument("--actors", type=int, default=None, metavar="N", help="with --engine ray: encoder actors")
    parser.add_argument(
        "--shard-rows", type=int, default=None, metavar="N", help="with --engine ray: items per shard (1,000,000)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _parse_modality(values: list[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for value in values:
        column, sep, modality = value.partition("=")
        if not sep or not column.strip() or modality.strip() not in ("text", "image"):
            raise NegScopeError(f"--modality expects COLUMN=text or COLUMN=image, got {value!r}")
        out[column.strip()] = modality.strip()
    return out or None


class TqdmProgress:
    """``progress(done, total, message)`` callback drawing a tqdm bar on stderr (a new bar per phase)."""

    def __init__(self, *, disable: bool | None = None) -> None:
        self.disable = disable
        self.bar = None

    def __call__(self, done: int, total: int, message: str) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.total != total or done < self.bar.n:
            self.close()
            self.bar = tqdm(total=total, desc=message, file=sys.stderr, disable=self.disable, dynamic_ncols=True)
        self.bar.set_description_str(message, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Close the current bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    """Embed, then print the run folder (last stdout line). User errors raise ``NegScopeError`` (exit 2)."""
    modality = _parse_modality(args.modality)
    engine = getattr(args, "engine", "local")
    ray_options = {"address": getattr(args, "address", None), "actors": getattr(args, "actors", None)}
    ray_options["shard_rows"] = getattr(args, "shard_rows", None)
    if engine != "ray" and any(v is not None for v in ray_options.values()):
        raise NegScopeError("--address, --actors and --shard-rows apply only with --engine ray")
    if engine == "ray":
        from analysis.embedding.ray_engine import embed_to_run_ray as embed
    else:
        from analysis.embedding.engine import embed_to_run as embed

        ray_options = {}
    progress = TqdmProgress(disable=True if args.quiet else None)
    try:
        path = embed(
            args.data,
            args.checkpoint,
            out=args.out,
            device=args.device,
            batch_size=args.batch_size,
            precision=args.precision,
            dataset_batch_size=args.dataset_batch_size,
            modality=modality,
            progress=progress,
            **ray_options,
        )
    finally:
        progress.close()
    print(path)
    return 0
