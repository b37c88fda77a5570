"""``python -m analysis map RUN --method umap|pca --out map.parquet``: 2-D coordinates of every item.

Example::

    python -m analysis map .negscope/runs/run-3f2a9c0d --method umap --out map.parquet
    wrote 4800 points (umap, computed in 6.1 s) to map.parquet

The output has one row per item: ``item_id`` (the run's item ids), ``x``, ``y``. ``.csv`` output is written
as CSV, anything else as Parquet. The map is also cached in the run folder, so a second call (or the
Embedding map page) reads it back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from analysis.choices import INDEX_KINDS, INIT_METHODS, MAP_METHODS
from analysis.errors import NegScopeError

NAME = "map"
HELP = "Write 2-D map coordinates (item_id, x, y) of a run's items, by UMAP or PCA."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("run", help="run folder")
    parser.add_argument("--method", choices=MAP_METHODS, default="umap", help="projection (default: umap)")
    parser.add_argument("--out", metavar="FILE", required=True, help="output file: .parquet (default) or .csv")
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP neighbourhood size (default: 15)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP minimum distance (default: 0.1)")
    parser.add_argument("--epochs", type=int, default=None, help="UMAP epochs (default: chosen from N)")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="UMAP initial learning rate (default: chosen from N)"
    )
    parser.add_argument("--init", choices=INIT_METHODS, default="pca", help="UMAP start layout (default: pca)")
    parser.add_argument("--knn", choices=INDEX_KINDS, default="auto", help="neighbour search (default: auto, from the work to do)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0); -1: unseeded, parallel")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the run folder's cache")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    """Compute (or read back) the map and write it."""
    from analysis.maps.embedding_map import MapParams, compute_map
    from analysis.runs.folder import load_run

    params = MapParams(
        method=args.method,
        n_neighbors=args.n_neighbors,
        min_dist=args.min_dist,
        n_epochs=args.epochs,
        learning_rate=args.learning_rate,
        init=args.init,
        knn=args.knn,
        seed=None if args.seed is not None and args.seed < 0 else args.seed,
    )
    run_folder = load_run(args.run)
    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        if args.quiet or fraction - last[0] < 0.1 and fraction < 1.0:
            return
        last[0] = fraction
        print(f"{100 * fraction:5.1f}%  {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    table = compute_map(run_folder, params, use_cache=not args.no_cache, progress=progress)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            table.to_csv(out, index=False)
        else:
            table.to_parquet(out, index=False)
    except OSError as exc:
        raise NegScopeError(f"cannot write {out}: {exc}") from exc
    how = "read from the run folder's cache" if table.attrs.get("cached") else f"computed in {seconds:.1f} s"
    print(f"wrote {len(table)} points ({args.method}, {how}) to {out}")
    from analysis.maps.embedding_map import fit_note

    note = fit_note(int(table.attrs.get("fit_sample", len(table))), len(table))
    if note:
        print(note)
    return 0
