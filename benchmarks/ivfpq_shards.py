"""Benchmark: a faiss IVF-PQ index over a corpus held in shards, with exact re-ranking from the shards.

The plan of ``docs/scale.md`` in miniature. N clustered unit vectors (``--centres`` random unit centres plus
Gaussian noise, like real embeddings) are generated and written as ``embeddings/part-NNNNN.npy`` shards of
``--shard-rows`` rows (never all in memory). Then, timed:

1. train: OPQ-free IVF-PQ (``IndexIVFPQ``, inner product, ``--nlist`` cells, ``--m`` one-byte sub-quantisers)
   on a ``--train`` row sample drawn from the shards;
2. fill: add the shards one at a time (each read, added, freed);
3. search ``--queries`` fresh vectors of the same distribution for their top ``--rerank`` candidates
   (``nprobe`` = ``--nprobe``), then re-rank them exactly against their rows gathered from the memory-mapped
   shards, keeping the top 10;
4. reference: exact top-10 by blocked inner products, shard by shard.

Printed: build time (train + fill), index bytes per vector, search time, recall@10 of the raw IVF-PQ result and
after re-ranking (goal >= 0.95), and peak RSS of the process (``ru_maxrss``; goal < 6 GB at 5M x 384).

``--engine module`` runs the same steps through the mining path's own code, :mod:`analysis.search.ivfpq`
(``PartedCorpus`` over the memory-mapped shards, ``build_ivfpq_index``: its depth loop raises ``nprobe`` and R
until recall@10 on ``--recall-queries`` sampled queries reaches 0.95), then measures recall@10 on the
``--queries`` fresh queries against ``exact_search`` (streamed over the shards).

    python benchmarks/ivfpq_shards.py                 # 5,000,000 x 384
    python benchmarks/ivfpq_shards.py --n 1000000 --nlist 1024 --train 50000   # the run in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import faiss  # noqa: E402
import numpy as np  # noqa: E402


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int, *, noise: float) -> np.ndarray:
    """(n, D) float32 unit vectors: a random centre each plus Gaussian noise."""
    which = rng.integers(0, len(centres), size=n)
    x = centres[which] + rng.standard_normal((n, centres.shape[1]), dtype=np.float32) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _module_run(args: argparse.Namespace, files: list[Path], offsets: np.ndarray, queries: np.ndarray,
                centres: np.ndarray) -> dict:
    """The build, depth loop, search and recall through :mod:`analysis.search.ivfpq`; timings and recall."""
    from analysis.search.index import recall_at_k
    from analysis.search.ivfpq import PartedCorpus, build_ivfpq_index, exact_search

    corpus = PartedCorpus.from_parts([(int(o), np.load(f, mmap_mode="r")) for f, o in zip(files, offsets, strict=True)])
    sample = clustered(np.random.default_rng(8), centres, args.recall_queries, noise=args.noise)
    steps: dict[str, float] = {}
    t = time.perf_counter()

    def progress(frac: float) -> None:
        if frac >= 0.3 and "train" not in steps:
            steps["train"] = time.perf_counter() - t
        if frac >= 0.8 and "fill" not in steps:
            steps["fill"] = time.perf_counter() - t - steps["train"]

    index = build_ivfpq_index(corpus, sample_queries=sample, nlist=args.nlist, m=args.m, train_size=args.train,
                              seed=0, progress=progress)
    t_build_and_tune = time.perf_counter() - t
    rss_index = _rss_gb()
    t = time.perf_counter()
    _, found = index.search(queries, 10)
    t_search = time.perf_counter() - t
    t = time.perf_counter()
    _, reference = exact_search(corpus, queries, 10)
    t_exact = time.perf_counter() - t
    return {
        "engine": "analysis.search.ivfpq",
        "n": corpus.n,
        "dim": corpus.dim,
        "shards": len(files),
        "description": index.describe(),
        "tried_nprobe_rerank_recall": index.tried,
        "seconds": {
            "train": round(steps.get("train", float("nan")), 1),
            "fill": round(steps.get("fill", float("nan")), 1),
            "depth_loop_incl_exact_reference": round(t_build_and_tune - sum(steps.values()), 1),
            "build_and_tune_total": round(t_build_and_tune, 1),
            f"search_{len(queries)}_and_rerank": round(t_search, 2),
            f"exact_reference_{len(queries)}": round(t_exact, 1),
        },
        "recall_at_10_on_sample": index.recall,
        f"recall_at_10_on_{len(queries)}_fresh_queries": round(recall_at_k(found, reference), 4),
        "peak_rss_gb_after_index": round(rss_index, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shard-rows", type=int, default=250_000)
    parser.add_argument("--centres", type=int, default=2_000)
    parser.add_argument("--noise", type=float, default=0.045, help="per-dimension noise sd (0.045: cos to its centre ~0.75)")
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--m", type=int, default=48, help="PQ sub-quantisers (bytes per code)")
    parser.add_argument("--train", type=int, default=150_000)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--rerank", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dir", default=None, help="where to write the shards (default: a temporary folder)")
    parser.add_argument("--engine", choices=("inline", "module"), default="inline",
                        help="inline: the steps written out here; module: analysis.search.ivfpq (the mining path)")
    parser.add_argument("--recall-queries", type=int, default=200, help="module: queries of the recall loop's sample")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    d = args.dim
    centres = rng.standard_normal((args.centres, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="negscope-ivfpq-", dir=args.dir) as tmp_name:
        folder = Path(tmp_name) / "embeddings"
        folder.mkdir()
        t = time.perf_counter()
        files = []
        for k, start in enumerate(range(0, args.n, args.shard_rows)):
            rows = min(args.shard_rows, args.n - start)
            file = folder / f"part-{k:05d}.npy"
            np.save(file, clustered(np.random.default_rng(1000 + k), centres, rows, noise=args.noise))
            files.append(file)
        offsets = np.cumsum([0] + [args.shard_rows] * len(files))[: len(files)]
        t_data = time.perf_counter() - t
        queries = clustered(np.random.default_rng(7), centres, args.queries, noise=args.noise)
        rss_data = _rss_gb()
        if args.engine == "module":
            result = _module_run(args, files, offsets, queries, centres)
            result.update(generate_shards_s=round(t_data, 1), loadavg_before=load_before, loadavg_after=_loadavg())
            result["peak_rss_gb"] = {"after_data": round(rss_data, 2), "end": round(_rss_gb(), 2)}
            print(json.dumps(result, indent=2))
            return

        # 1. train on a sample drawn from every shard
        t = time.perf_counter()
        per_shard = max(1, args.train // len(files))
        sample = np.concatenate(
            [np.load(f, mmap_mode="r")[np.sort(rng.choice(np.load(f, mmap_mode="r").shape[0], per_shard, replace=False))]
             for f in files]
        ).astype(np.float32)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, args.nlist, args.m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        del sample
        t_train = time.perf_counter() - t
        # 2. fill shard by shard
        t = time.perf_counter()
        for f, offset in zip(files, offsets, strict=True):
            block = np.load(f)
            index.add_with_ids(block, np.arange(offset, offset + len(block), dtype=np.int64))
            del block
        t_fill = time.perf_counter() - t
        rss_index = _rss_gb()
        # 3. search + exact re-rank from memory-mapped shards
        t = time.perf_counter()
        index.nprobe = args.nprobe
        _, cand = index.search(queries, args.rerank)
        raw_top10 = cand[:, :10]
        parts = [np.load(f, mmap_mode="r") for f in files]
        reranked = np.empty((args.queries, 10), dtype=np.int64)
        shard_of = np.searchsorted(offsets, cand, side="right") - 1
        for q in range(args.queries):
            ids = cand[q][cand[q] >= 0]
            s = shard_of[q][: len(ids)]
            vecs = np.stack([parts[si][i - offsets[si]] for si, i in zip(s, ids, strict=True)])
            scores = vecs @ queries[q]
            order = np.lexsort((ids, -scores))[:10]  # ties broken by id
            reranked[q] = ids[order]
        t_search = time.perf_counter() - t
        del parts
        # 4. exact reference, shard by shard
        t = time.perf_counter()
        best_s = np.full((args.queries, 10), -np.inf, dtype=np.float32)
        best_i = np.full((args.queries, 10), -1, dtype=np.int64)
        for f, offset in zip(files, offsets, strict=True):
            block = np.load(f)
            s, i = faiss.knn(queries, block, 10, metric=faiss.METRIC_INNER_PRODUCT)
            all_s = np.concatenate([best_s, s], axis=1)
            all_i = np.concatenate([best_i, i + offset], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
            best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
            del block
        t_exact = time.perf_counter() - t

        def recall(found: np.ndarray) -> float:
            return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, best_i, strict=True)]))

        print(
            json.dumps(
                {
                    "n": args.n,
                    "dim": d,
                    "shards": len(files),
                    "index": f"IVF{args.nlist},PQ{args.m}x8 (inner product), trained on {per_shard * len(files):,} rows",
                    "nprobe": args.nprobe,
                    "rerank_top": args.rerank,
                    "seconds": {
                        "generate_shards": round(t_data, 1),
                        "train": round(t_train, 1),
                        "fill": round(t_fill, 1),
                        "build_total": round(t_train + t_fill, 1),
                        f"search_{args.queries}_and_rerank": round(t_search, 2),
                        "exact_reference": round(t_exact, 1),
                    },
                    "index_bytes_per_vector": args.m + 8,  # PQ code + int64 id (plus fixed centroids)
                    "recall_at_10_raw": round(recall(raw_top10), 4),
                    "recall_at_10_reranked": round(recall(reranked), 4),
                    "peak_rss_gb": {"after_data": round(rss_data, 2), "after_index": round(rss_index, 2), "end": round(_rss_gb(), 2)},
                    "loadavg_before": load_before,
                    "loadavg_after": _loadavg(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
