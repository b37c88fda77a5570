"""False-negative mining: corpus-wide kNN throughput against torch matmul, and approximate-index recall at 1M.

Usage::

    python benchmarks/mining.py                  # full size: 100k x 384 mining, 1M x 384 approximate index
    python benchmarks/mining.py --quick          # small sizes (seconds)
    python benchmarks/mining.py --n 1000000 --queries 100000 --ann-n 1000000 --ann-kind ivf --ann-data clustered
    python benchmarks/mining.py --quality        # detector quality on the digits sample's planted truth

Part 1 (throughput). ``--n`` random unit vectors of ``--dim`` dims form the corpus; ``--queries`` of them
mine their ``k`` nearest neighbours through NegScope's path (``analysis.search.index.build_index`` exact ->
faiss ``IndexFlatIP`` searched in blocks, as ``analysis.detectors.false_negatives`` does). The work is ``2 Q N D``
flops; the baseline is torch's float32 matmul of the same (block, D) x (D, N) shapes, timed block by block
interleaved with the search so that the machine's noise hits both alike. Printed: both GFLOP/s and the
ratio (goal >= 0.8).

Part 2 (approximate index). ``--ann-n`` vectors (clustered like real embeddings by default: a random unit
centre per cluster plus noise; ``--ann-data random`` for uniform random unit vectors), an IVF (or HNSW)
index built by ``build_index`` with its search depth tuned on 500 separate tuning queries, then recall@10
against exact search on 1,000 fresh queries, with build / search times and the process's peak memory
(goal: recall >= 0.95).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.search.index import build_index, exact_knn, recall_at_k  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def unit_random(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 131072):
        stop = min(start + 131072, n)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        x[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def clustered(n: int, dim: int, seed: int, *, n_clusters: int = 2000, noise: float = 0.04) -> np.ndarray:
    """Unit vectors around random unit centres, per-coordinate noise ``noise`` (noise norm ``noise * sqrt(dim)``
    = 0.78 at 384 dims: cos to the centre ~0.79, to a cluster mate ~0.62, to a random item ~0)."""
    rng = np.random.default_rng(seed)
    centres = unit_random(n_clusters, dim, 1000)  # the same clusters whatever the sample's seed
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 131072):
        stop = min(start + 131072, n)
        block = centres[rng.integers(0, n_clusters, stop - start)]
        block = block + noise * rng.standard_normal(block.shape, dtype=np.float32)
        x[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def throughput(n: int, n_queries: int, dim: int, k: int, block: int, repeat: int) -> float:
    """Part 1; returns the median over ``repeat`` passes of the ratio ours / torch."""
    corpus = unit_random(n, dim, 0)
    queries = corpus[:n_queries]
    index = build_index(corpus, kind="exact")
    tc = torch.from_numpy(corpus)
    torch.matmul(torch.from_numpy(queries[:256]), tc.T)  # warm-up
    index.search(queries[:256], k)
    flops = 2.0 * n_queries * n * dim
    ratios = []
    for r in range(repeat):
        t_ours = t_torch = 0.0
        for start in range(0, n_queries, block):
            q = queries[start : start + block]
            tq = torch.from_numpy(q)
            t0 = time.perf_counter()
            torch.matmul(tq, tc.T)
            t_torch += time.perf_counter() - t0
            t0 = time.perf_counter()
            index.search(q, k, block_size=block)
            t_ours += time.perf_counter() - t0
        ours, base = flops / t_ours / 1e9, flops / t_torch / 1e9
        ratios.append(ours / base)
        print(
            f"pass {r + 1}: mining {n_queries:,} queries x {n:,} corpus x {dim} dims, k={k}: ours {t_ours:.1f} s "
            f"= {ours:.1f} GFLOP/s; torch float32 matmul {t_torch:.1f} s = {base:.1f} GFLOP/s; ratio {ours / base:.2f}"
        )
    ratio = float(np.median(ratios))
    print(f"ratio ours / torch matmul = {ratio:.2f} (median of {repeat} passes; goal >= 0.8)")
    return ratio


def ann(n: int, dim: int, kind: str, data: str, n_queries: int = 1000) -> float:
    """Part 2; returns the recall@10."""
    rss0 = peak_rss_gb()
    t0 = time.perf_counter()
    make = clustered if data == "clustered" else unit_random
    corpus = make(n, dim, 7)
    fresh = make(n_queries + 500, dim, 8)  # queries drawn like the corpus, not members of it
    tune, queries = fresh[:500], fresh[500:]
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    approx = build_index(corpus, kind=kind, sample_queries=tune, target_recall=0.95, recall_k=10)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, got = approx.search(queries, 10)
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, ref = exact_knn(queries, corpus, 10)
    t_exact = time.perf_counter() - t0
    recall = recall_at_k(got, ref)
    print(
        f"approximate index on {n:,} x {dim} ({data}) : {approx.describe()} on the 500 tuning queries; "
        f"recall@10 on {n_queries:,} fresh queries = {recall:.4f} (goal >= 0.95)"
    )
    print(
        f"  data {t_data:.1f} s, build + tune {t_build:.1f} s, search {t_search:.2f} s "
        f"({n_queries / max(t_search, 1e-9):,.0f} q/s) vs exact {t_exact:.2f} s "
        f"({t_exact / max(t_search, 1e-9):.1f}x faster); peak memory {peak_rss_gb():.2f} GB "
        f"(data alone {n * dim * 4 / 2**30:.2f} GB; process before {rss0:.2f} GB)"
    )
    return recall


def quality(run_path: str | None) -> None:
    """Detector quality on the digits sample's planted truth: ours vs the margin baseline, per evidence."""
    from sklearn.metrics import average_precision_score

    from analysis.data.truth import negative_truth
    from analysis.detectors.false_negatives import Settings, find_false_negatives, quality_on_truth
    from analysis.embedding.engine import embed_to_run
    from analysis.runs.folder import load_run
    from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA

    run = load_run(run_path or embed_to_run(SAMPLE_DATA, SAMPLE_CHECKPOINT, device="cpu"))
    truth = negative_truth(run)
    if truth is None:
        print(f"no negatives_truth.csv beside the dataset of {run.path}; skipping quality")
        return
    for name, settings in (("with labels", Settings()), ("without labels", Settings(use_labels=False))):
        t0 = time.perf_counter()
        table = find_false_negatives(run, settings=settings)
        elapsed = time.perf_counter() - t0
        q = quality_on_truth(table, truth)
        print(
            f"{name}: {len(table):,} candidates in {elapsed:.1f} s; over {q['n']:,} listed negatives "
            f"({q['prevalence']:.1%} false): AUPRC {q['auprc']:.3f} vs baseline neg_sim - pos_sim "
            f"{q['auprc_baseline']:.3f} (ratio {q['auprc'] / q['auprc_baseline']:.2f}); precision@100 "
            f"{q['precision_at_k']:.2f} vs {q['precision_at_k_baseline']:.2f}"
        )
        t = truth.rename(columns={"negative_id": "candidate_id"})[["pair_id", "candidate_id", "is_false_negative"]]
        merged = t.merge(table, on=["pair_id", "candidate_id"])
        y = merged["is_false_negative"].to_numpy(bool)
        flagged = merged["flagged"].to_numpy(bool)
        print(
            f"  flagged at score >= 0.5: {int(flagged.sum()):,} listed negatives, precision "
            f"{y[flagged].mean():.3f}, recall {flagged[y].mean():.3f}"
        )
        if name == "with labels":
            parts = []
            for col, sign in (("sim_diff", 1), ("sim_to_positive", 1), ("anchor_side_sim", 1), ("rank", -1),
                              ("mutual", 1), ("same_cluster", 1), ("label_agree", 1)):  # fmt: skip
                x = sign * merged[col].to_numpy(np.float64)
                x = np.where(np.isfinite(x), x, np.nanmedian(x))
                parts.append(f"{col} {average_precision_score(y, x):.3f}")
            print("  AUPRC of each evidence alone: " + ", ".join(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--n", type=int, default=100_000, help="corpus rows for the throughput part (100000)")
    parser.add_argument("--queries", type=int, default=12_288, help="queries mined in the throughput part (12288)")
    parser.add_argument("--dim", type=int, default=384, help="dimensions (384)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (10)")
    parser.add_argument("--block", type=int, default=4096, help="queries per block (4096)")
    parser.add_argument("--repeat", type=int, default=3, help="passes of the throughput part (3)")
    parser.add_argument("--ann-n", type=int, default=1_000_000, help="rows of the approximate index (1000000)")
    parser.add_argument("--ann-kind", choices=("ivf", "hnsw"), default="ivf", help="approximate index (ivf)")
    parser.add_argument("--ann-data", choices=("clustered", "random"), default="clustered", help="(clustered)")
    parser.add_argument("--skip-ann", action="store_true", help="only the throughput part")
    parser.add_argument(
        "--quality", action="store_true", help="only the detector's quality on the digits sample's planted truth"
    )
    parser.add_argument("--run", default=None, help="--quality: an existing run folder (default: embed the sample)")
    args = parser.parse_args(argv)
    if args.quality:
        quality(args.run)
        return 0
    if args.quick:
        args.n, args.queries, args.ann_n = 20_000, 4096, 50_000
    from analysis.search.blas import describe_kernel

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(describe_kernel())
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")
    if not args.skip_ann:
        ann(args.ann_n, args.dim, args.ann_kind, args.ann_data)
    throughput(args.n, args.queries, args.dim, args.k, args.block, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
