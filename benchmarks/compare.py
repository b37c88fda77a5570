"""Benchmark: comparing two runs of 100k pairs (precomputed embeddings), time and peak memory.

Generates, seeded, two run folders of the same dataset: ``--pairs`` image anchors, as many distinct text
positives, and ``--k`` given negatives per pair (other pairs' positives). Run A's embeddings are clustered unit
vectors of ``--dim-a`` dims; run B ("another checkpoint") is a noisy random projection of them to ``--dim-b``
dims, written in a shuffled item order, so the comparison has to line the items up by content.

Times each step of ``python -m analysis compare`` (without the slow detectors): loading, aligning, every run's
metrics (exact retrieval ranks in both directions dominate), the per-pair table and the listed-negative
changes. The baseline, measured in the same process before and after, is ``torch.mm`` of one ranking block:
the useful work of the ranks is 2 P P D flops per direction and run, so ``matmul share`` = (that work at the
baseline's speed) / (the comparison's time) says how close the whole comparison comes to the matrix products
it cannot avoid. Peak memory is the process's maximum resident set (``ru_maxrss``).

    python benchmarks/compare.py                  # 100k pairs, dims 64 and 96
    python benchmarks/compare.py --pairs 20000    # quick
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.compare.align import align_runs  # noqa: E402
from analysis.compare.deltas import compare_runs  # noqa: E402
from analysis.compare.pairs import negative_changes, pair_comparison  # noqa: E402
from analysis.runs.folder import load_run, write_run  # noqa: E402
from analysis.search.exact import rank_block_size  # noqa: E402


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_runs(folder: Path, *, pairs: int, k: int, dim_a: int, dim_b: int, seed: int) -> tuple[Path, Path]:
    """Write run A and run B (same dataset, other embeddings, shuffled item order) into ``folder``."""
    rng = np.random.default_rng(seed)
    n_classes = max(10, pairs // 100)
    cls = rng.integers(0, n_classes, size=pairs)
    centres = unit(rng.standard_normal((n_classes, dim_a)))
    anchors = unit(centres[cls] + 0.6 * rng.standard_normal((pairs, dim_a)).astype(np.float32))
    positives = unit(centres[cls] + 0.6 * rng.standard_normal((pairs, dim_a)).astype(np.float32))
    emb_a = np.vstack([anchors, positives])
    n = 2 * pairs
    items = pd.DataFrame(
        {
            "item_id": np.arange(n),
            "modality": np.repeat(["image", "text"], pairs),
            "content": [f"images/{i:06d}.png" for i in range(pairs)] + [f"caption {i}" for i in range(pairs)],
            "label": pd.array([None] * n, dtype="string"),
        }
    )
    items["key"] = [f"key-{i}" for i in range(n)]
    pair_table = pd.DataFrame({"pair_id": np.arange(pairs), "anchor_id": np.arange(pairs), "positive_id": pairs + np.arange(pairs)})
    offsets = rng.integers(1, pairs, size=(pairs, k))
    neg = (np.arange(pairs)[:, None] + offsets) % pairs
    negatives = pd.DataFrame(
        {"pair_id": np.repeat(np.arange(pairs), k), "negative_id": pairs + neg.ravel(), "source": "given"}
    )
    manifest = {"dataset_hash": f"bench-{seed}", "model_kind": "precomputed", "logit_scale": 1 / 0.05}
    path_a = write_run(
        folder / "run-a", manifest=manifest, items=items, embeddings=emb_a, pairs=pair_table, negatives=negatives
    )
    projection = rng.standard_normal((dim_a, dim_b)).astype(np.float32) / np.sqrt(dim_a)
    emb_b = unit(emb_a @ projection + 0.3 * rng.standard_normal((n, dim_b)).astype(np.float32))
    perm = rng.permutation(n)  # new item id j is old item perm[j]
    new_of_old = np.empty(n, dtype=np.int64)
    new_of_old[perm] = np.arange(n)
    items_b = items.iloc[perm].reset_index(drop=True).assign(item_id=np.arange(n))
    pairs_b = pair_table.assign(
        anchor_id=new_of_old[pair_table["anchor_id"]], positive_id=new_of_old[pair_table["positive_id"]]
    )
    negatives_b = negatives.assign(negative_id=new_of_old[negatives["negative_id"]])
    path_b = write_run(
        folder / "run-b",
        manifest={**manifest, "logit_scale": 1 / 0.03},
        items=items_b,
        embeddings=emb_b[perm],
        pairs=pairs_b,
        negatives=negatives_b,
    )
    return Path(path_a), Path(path_b)


def matmul_gflops(pairs: int, dim: int, *, repeats: int = 3) -> float:
    """Median GFLOP/s of torch.mm for one ranking block (block x dim) x (dim x pairs)."""
    import torch

    block = min(rank_block_size(pairs), pairs)
    rng = np.random.default_rng(1)
    q = torch.from_numpy(unit(rng.standard_normal((block, dim))))
    c = torch.from_numpy(unit(rng.standard_normal((pairs, dim))))
    out = torch.empty((block, pairs), dtype=torch.float32)
    torch.mm(q, c.T, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(q, c.T, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * block * pairs * dim / float(np.median(times)) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000, help="pairs per run (default 100000)")
    parser.add_argument("--k", type=int, default=4, help="given negatives per pair (default 4)")
    parser.add_argument("--dim-a", type=int, default=64, help="run A's embedding dim (default 64)")
    parser.add_argument("--dim-b", type=int, default=96, help="run B's embedding dim (default 96)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    with open("/proc/loadavg") as fh:
        load_before = fh.read().strip()
    with tempfile.TemporaryDirectory(prefix="negscope-bench-compare-") as tmp:
        t0 = time.perf_counter()
        path_a, path_b = make_runs(
            Path(tmp), pairs=args.pairs, k=args.k, dim_a=args.dim_a, dim_b=args.dim_b, seed=args.seed
        )
        print(f"generated 2 runs of {args.pairs:,} pairs ({2 * args.pairs:,} items, K={args.k}) in {time.perf_counter() - t0:.1f} s")
        rss_inputs = peak_rss_gib()
        base_before = (matmul_gflops(args.pairs, args.dim_a) + matmul_gflops(args.pairs, args.dim_b)) / 2
        timings = {}
        t0 = time.perf_counter()
        runs = [load_run(path_a), load_run(path_b)]
        timings["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        al = align_runs(runs)
        timings["align"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        comp = compare_runs(al)
        timings["metrics (ranks, loss, gap, geometry)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = pair_comparison(comp)
        timings["per-pair table"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        changes = negative_changes(comp, "A", "B")
        timings["listed-negative changes"] = time.perf_counter() - t0
        peak = peak_rss_gib()
        base_after = (matmul_gflops(args.pairs, args.dim_a) + matmul_gflops(args.pairs, args.dim_b)) / 2
    with open("/proc/loadavg") as fh:
        load_after = fh.read().strip()
    total = sum(timings.values())
    baseline = (base_before + base_after) / 2
    flops = 2 * 2.0 * args.pairs * args.pairs * (args.dim_a + args.dim_b)  # 2 directions, both runs
    print(f"torch threads {torch.get_num_threads()}; /proc/loadavg before: {load_before}; after: {load_after}")
    for name, seconds in timings.items():
        print(f"  {name:40s} {seconds:8.1f} s")
    print(f"  {'total':40s} {total:8.1f} s   ({len(table):,} pair rows, {len(changes):,} negative rows)")
    print(f"torch.mm baseline {baseline:.1f} GFLOP/s (before {base_before:.1f}, after {base_after:.1f})")
    share = flops / (baseline * 1e9) / total
    print(f"matmul share: the ranks' {flops / 1e12:.2f} TFLOP at the baseline speed / total time = {share:.2f}")
    print(f"peak RSS {peak:.2f} GiB (after generating the inputs: {rss_inputs:.2f} GiB)")
    print("auroc A/B", comp.metrics.at["A", "auroc"], comp.metrics.at["B", "auroc"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
