"""Benchmark: exact retrieval ranks (``analysis.search.exact.target_ranks``) against torch float32 matmul.

Random unit vectors: a corpus of ``--n`` items x ``--dim`` dims and ``--queries`` queries, each with one target
row and one excluded row (as the anchor's other known positives are). The ranking step is one blocked float32
matrix product plus a compare-and-count per block, so its useful work is 2 Q N D flops; the baseline is
``torch.mm`` on one block of the same shape, measured in the same process before and after the ranking (the
machine is shared and noisy). For reference it also times faiss's exhaustive top-10 search
(``IndexFlatIP.search``) over a subset of the queries: the same scan, which only yields ranks up to 10.

Prints the achieved GFLOP/s, the ratio to the matmul GFLOP/s (goal >= 0.7) and the process's peak memory.

    python benchmarks/scores.py                 # 100k items x 384, 20k queries
    python benchmarks/scores.py --n 20000       # quick
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.search.exact import SharedExclusions, flat_index, rank_block_size, target_ranks  # noqa: E402


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) float32 random unit vectors."""
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_gflops(queries: np.ndarray, corpus: np.ndarray, block: int, repeats: int) -> float:
    """Median GFLOP/s of torch.mm for one (block, D) x (D, N) product into a preallocated output."""
    import torch

    q = torch.from_numpy(queries[:block])
    c = torch.from_numpy(corpus)
    out = torch.empty((q.shape[0], c.shape[0]), dtype=torch.float32)
    torch.mm(q, c.T, out=out)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(q, c.T, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * q.shape[0] * c.shape[0] * c.shape[1] / float(np.median(times)) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="corpus items (default 100000)")
    parser.add_argument("--queries", type=int, default=20_000, help="queries ranked (default 20000)")
    parser.add_argument("--dim", type=int, default=384, help="embedding dim (default 384)")
    parser.add_argument("--block-mb", type=int, default=512, help="working memory of one block, MiB (default 512)")
    parser.add_argument("--repeats", type=int, default=5, help="matmul timings per baseline measurement")
    parser.add_argument("--faiss-queries", type=int, default=4096, help="queries for the faiss top-10 reference")
    args = parser.parse_args(argv)

    import torch

    rng = np.random.default_rng(0)
    corpus = unit_rows(rng, args.n, args.dim)
    queries = unit_rows(rng, args.queries, args.dim)
    targets = rng.integers(0, args.n, size=args.queries)
    excluded = rng.integers(0, args.n, size=args.queries)
    exclude = SharedExclusions.from_members(np.arange(args.queries), np.arange(args.queries), excluded)
    max_block_bytes = args.block_mb * 2**20
    block = min(rank_block_size(args.n, max_block_bytes=max_block_bytes), args.queries)
    flops = 2.0 * args.queries * args.n * args.dim
    print(
        f"corpus {args.n:,} x {args.dim}, {args.queries:,} queries, block {block} queries "
        f"({5 * block * args.n / 2**20:.0f} MiB scores+mask), torch threads {torch.get_num_threads()}"
    )

    base_before = matmul_gflops(queries, corpus, block, args.repeats)
    t0 = time.perf_counter()
    ranks = target_ranks(queries, corpus, targets, exclude=exclude, max_block_bytes=max_block_bytes)
    rank_s = time.perf_counter() - t0
    rank_peak = peak_rss_gib()
    base_after = matmul_gflops(queries, corpus, block, args.repeats)
    baseline = (base_before + base_after) / 2
    achieved = flops / rank_s / 1e9

    # spot check against a float64 reference
    for i in rng.choice(args.queries, size=5, replace=False):
        s = corpus.astype(np.float64) @ queries[i].astype(np.float64)
        beats = s > s[targets[i]]
        beats[excluded[i]] = False
        assert ranks[i] == 1 + int(beats.sum()), "rank differs from the float64 reference"

    nf = min(args.faiss_queries, args.queries)
    index = flat_index(corpus)
    t0 = time.perf_counter()
    index.search(queries[:nf], 10)
    faiss_s = time.perf_counter() - t0
    faiss_gflops = 2.0 * nf * args.n * args.dim / faiss_s / 1e9

    print(f"torch float32 matmul      {baseline:8.1f} GFLOP/s  (before {base_before:.1f}, after {base_after:.1f})")
    print(f"exact ranks (this code)   {achieved:8.1f} GFLOP/s  ({rank_s:.1f} s for {flops / 1e12:.2f} TFLOP)")
    print(f"faiss IndexFlatIP top-10  {faiss_gflops:8.1f} GFLOP/s  ({nf:,} queries; ranks only up to 10)")
    inputs = (corpus.nbytes + queries.nbytes) / 2**30
    print(f"peak RSS after ranking    {rank_peak:8.2f} GiB (whole process, with {inputs:.2f} GiB of inputs)")
    ratio = achieved / baseline
    print(f"ratio ranking / matmul    {ratio:8.2f}   (goal >= 0.7)")
    print(f"ratio ranking / faiss     {achieved / faiss_gflops:8.2f}")
    from analysis.search.blas import describe_kernel

    print(describe_kernel())
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
