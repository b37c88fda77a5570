"""Benchmark: the Ray engine on a local Ray against the single-process engine, same dataset, same checkpoint.

Nothing is downloaded: the checkpoint is a NegScope dual encoder generated here with random weights (text tower:
mean of word embeddings, then an MLP; ``--hidden`` wide, ``--dim``-dim output), and the dataset is N seeded,
distinct texts of 3 to 40 words (N / 2 pairs of text anchor and text positive) in a CSV. Both engines start from
that CSV and write a complete run folder, and the two runs are checked to agree (max abs difference per vector).

    python benchmarks/ray_embed.py              # N = 100,000 texts
    python benchmarks/ray_embed.py --n 20000    # quick
    python benchmarks/ray_embed.py --cpus 1 --actors 1 --threads 1   # like for like: one core each side

Timed, in this order: the single-process engine (``embed_to_run``), ``ray.init(num_cpus=C)`` (a local cluster's
start, paid once per session, not per run, on an existing cluster), the Ray engine (``embed_to_run_ray``, actors
on the running local Ray), the single-process engine again. Printed: items/second of each and the ratio Ray /
single-process by throughput (goal >= 0.8), with and without the cluster's start, and ``/proc/loadavg`` before
and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()
    except OSError:
        return "unknown"


def make_checkpoint(folder: Path, *, hidden: int, dim: int, words: list[str]) -> Path:
    """A random NegScope dual encoder whose text tower is ``hidden`` wide with ``dim``-dim output."""
    from analysis.embedding.dual_encoder import DualEncoder, DualEncoderConfig

    torch.manual_seed(0)
    config = DualEncoderConfig(
        image_size=(8, 8),
        channels=1,
        image_hidden=16,
        vocab=words,
        text_hidden=hidden,
        embed_dim=dim,
        logit_scale_init=20.0,
    )
    DualEncoder(config).eval().save(folder)
    return folder


def make_dataset(folder: Path, *, n_texts: int, words: list[str]) -> Path:
    """``n_texts // 2`` pairs of distinct texts (anchor, positive) in ``pairs.csv``."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)

    def text(i: int, tag: str) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) + f" {tag}{i}"

    rows = [{"anchor": text(i, "q"), "positive": text(i, "d")} for i in range(n_texts // 2)]
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="texts (100,000)")
    parser.add_argument("--hidden", type=int, default=1024, help="text tower width (1024)")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension (384)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (2)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the single-process engine")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-rows", type=int, default=25_000)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from analysis.embedding.engine import embed_to_run
    from analysis.embedding.ray_engine import embed_to_run_ray
    from analysis.runs.folder import load_run
    from tests.tiny_models import WORDS

    words = sorted(set(WORDS)) + [f"w{i}" for i in range(2000)]
    with tempfile.TemporaryDirectory(prefix="negscope-ray-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["NEGSCOPE_HOME"] = str(tmp / "home")
        model = make_checkpoint(tmp / "model", hidden=args.hidden, dim=args.dim, words=words)
        data = make_dataset(tmp / "data", n_texts=args.n, words=words)
        load_before = _loadavg()
        timings: dict[str, float] = {}

        t = time.perf_counter()
        local_path = embed_to_run(data, model, out=tmp / "local1", device="cpu", batch_size=args.batch_size)
        timings["single_1"] = time.perf_counter() - t

        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        timings["ray_init"] = time.perf_counter() - t
        try:
            t = time.perf_counter()
            ray_path = embed_to_run_ray(
                data,
                model,
                out=tmp / "ray",
                device="cpu",
                batch_size=args.batch_size,
                actors=args.actors,
                shard_rows=args.shard_rows,
            )
            timings["ray"] = time.perf_counter() - t
        finally:
            ray.shutdown()

        t = time.perf_counter()
        embed_to_run(data, model, out=tmp / "local2", device="cpu", batch_size=args.batch_size)
        timings["single_2"] = time.perf_counter() - t
        load_after = _loadavg()

        local, sharded = load_run(local_path), load_run(ray_path)
        n = len(local.items)
        assert local.items["item_id"].equals(sharded.items["item_id"])
        diff = float(np.abs(local.embeddings.astype(np.float64) - sharded.embeddings.astype(np.float64)).max())
        single = (timings["single_1"] + timings["single_2"]) / 2
        result = {
            "n_items": n,
            "model": f"dual encoder text tower, hidden {args.hidden}, dim {args.dim} (random weights)",
            "torch_threads": torch.get_num_threads(),
            "ray_cpus": args.cpus,
            "ray_actors": sharded.manifest["engine"]["actors"],
            "shards": len(sharded.manifest["shards"]["embeddings"]),
            "seconds": {k: round(v, 2) for k, v in timings.items()},
            "items_per_s_single": round(n / single, 1),
            "items_per_s_ray": round(n / timings["ray"], 1),
            "ratio_ray_over_single": round(single / timings["ray"], 3),
            "ratio_with_cluster_start": round(single / (timings["ray"] + timings["ray_init"]), 3),
            "max_abs_diff": diff,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
