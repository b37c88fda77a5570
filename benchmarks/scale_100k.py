"""A 100k-pair run analysed end to end by the CLI: wall time and peak memory of every command.

Usage::

    python benchmarks/scale_100k.py                      # 100k pairs, 200k items, 384 dims (goal: < 120 s, < 6 GB)
    python benchmarks/scale_100k.py --pairs 10000        # a smaller run (seconds)
    python benchmarks/scale_100k.py --exact-reference    # also the metrics of exact search on the same run (slow)
    python benchmarks/scale_100k.py --commands scores,label-noise --keep
    python benchmarks/scale_100k.py --commands "" --keep --mining-ratio   # mining search: auto vs exact

The run is generated, seeded, as a precomputed-embeddings run folder: ``--pairs`` text anchors and their text
positives (``2 x pairs`` items) in ``--dim`` dims, clustered like real embeddings (``--clusters`` random unit
centres; an anchor is its centre plus noise, its positive the anchor plus smaller noise), 4 given negatives per
pair (half from the anchor's cluster, half anywhere), a class label on every item (its cluster; 2% flipped) and
2% of the positives swapped for another cluster's (mismatched pairs).

Each command (summary, scores, temperature, gap, false-negatives, label-noise, map) runs as its own process,
``python -m analysis ...``, in order; the first to need the run's shared neighbour graph computes it and caches it
in the run folder (``RUN/cache/``), the later ones read it. Printed per command: wall time, the process's peak
RSS (``wait4``), and the approximate searches it reports (kind and measured recall); then the totals, the load
average before and after, and which exact-search kernel this machine runs (``analysis.search.blas``).

``--mining-ratio`` times false-negative mining's neighbour search (every anchor's top 100 among the text items)
with the work-based rule (``auto``) and with exact search (the rule before it), back to back in this process, and
prints the speed-up and the recall@10 of the ``auto`` neighbours over every anchor (issue #17).

``--exact-reference`` recomputes, in this process, the retrieval metrics (recall@1/5/10, MRR@10) with exact
ranks and the mismatch flags with exact search, and prints their difference from what the CLI reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import analysis  # noqa: E402,F401  (chooses the OpenBLAS core type before faiss loads)
from analysis.runs.folder import write_run  # noqa: E402

COMMANDS = ("summary", "scores", "temperature", "gap", "false-negatives", "label-noise", "map")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_run(path: Path, *, pairs: int, dim: int, clusters: int, seed: int) -> dict:
    """Write the benchmark's run folder; returns its planted truth (mismatched pairs, flipped labels)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    cls = rng.integers(0, clusters, pairs)
    anchors = np.empty((pairs, dim), dtype=np.float32)
    positives = np.empty((pairs, dim), dtype=np.float32)
    for start in range(0, pairs, 20000):
        stop = min(start + 20000, pairs)
        a = _unit(centres[cls[start:stop]] + 0.045 * rng.standard_normal((stop - start, dim), dtype=np.float32))
        anchors[start:stop] = a
        positives[start:stop] = _unit(a + 0.03 * rng.standard_normal((stop - start, dim), dtype=np.float32))
    mismatched = rng.random(pairs) < 0.02
    swap = np.flatnonzero(mismatched)
    other = (cls[swap] + rng.integers(1, clusters, len(swap))) % clusters
    positives[swap] = _unit(centres[other] + 0.045 * rng.standard_normal((len(swap), dim), dtype=np.float32))
    labels = np.concatenate([cls, cls]).astype(np.int64)
    pos_cls = cls.copy()
    pos_cls[swap] = other
    labels[pairs:] = pos_cls
    flipped = rng.random(2 * pairs) < 0.02
    labels[flipped] = (labels[flipped] + rng.integers(1, clusters, int(flipped.sum()))) % clusters
    items = pd.DataFrame(
        {
            "item_id": np.arange(2 * pairs),
            "modality": "text",
            "content": [f"query {i}" for i in range(pairs)] + [f"passage {i}" for i in range(pairs)],
            "label": [f"c{c}" for c in labels],
        }
    )
    items["key"] = "text:" + items["content"]
    pair_table = pd.DataFrame(
        {"pair_id": np.arange(pairs), "anchor_id": np.arange(pairs), "positive_id": pairs + np.arange(pairs)}
    )
    # 4 given negatives per pair: 2 positives of pairs of the same cluster (hard), 2 of random pairs
    order = np.argsort(cls, kind="stable")
    starts = np.searchsorted(cls[order], cls)
    sizes = np.bincount(cls, minlength=clusters)[cls]
    hard = order[starts[:, None] + (rng.random((pairs, 2)) * sizes[:, None]).astype(np.int64)]
    easy = rng.integers(0, pairs, (pairs, 2))
    neg = np.concatenate([hard, easy], axis=1)
    neg = np.where(neg == np.arange(pairs)[:, None], (neg + 1) % pairs, neg)
    negatives = pd.DataFrame(
        {"pair_id": np.repeat(np.arange(pairs), 4), "negative_id": pairs + neg.ravel(), "source": "given"}
    ).drop_duplicates(["pair_id", "negative_id"])
    write_run(
        path,
        manifest={
            "dataset_hash": f"scale-{pairs}-{dim}-{seed}",
            "model_kind": "precomputed",
            "logit_scale": 1 / 0.05,
            "device": "cpu",
            "dtype": "float32",
        },
        items=items,
        embeddings=np.vstack([anchors, positives]),
        pairs=pair_table,
        negatives=negatives,
    )
    return {"mismatched": mismatched, "flipped": flipped}


def command_line(name: str, run: Path, out: Path) -> list[str]:
    """The CLI call of one benchmarked command."""
    base = [sys.executable, "-m", "analysis", name]
    extra = {
        "summary": [],
        "scores": ["--json", "--pairs-out", str(out / "pairs.csv")],
        "temperature": ["--json"],
        "gap": ["--json"],
        "false-negatives": ["--out", str(out / "false_negatives.csv")],
        "label-noise": ["--out", str(out / "label_noise.csv")],
        "map": ["--out", str(out / "map.parquet"), "--quiet"],
    }[name]
    return [*base, str(run), *extra]


def run_command(argv: list[str], *, log: Path) -> tuple[float, float, int, float, float]:
    """Run one CLI process; returns (wall seconds, its own peak RSS in GB, exit status, its user and its system
    CPU seconds). System time is mostly page faults: on this VM, memory a process touches first is slow
    (``benchmarks/page_faults.py``)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 2**20, proc.returncode, usage.ru_utime, usage.ru_stime


def searches_reported(log: Path) -> list[str]:
    """Lines of a command's output that name an approximate search or its recall."""
    text = log.read_text(errors="replace")
    hits = []
    for line in text.splitlines():
        low = line.lower()
        if "recall" in low or "ivf" in low or "estimated" in low or "fitted on" in low:
            hits.append(line.strip()[:240])
    return hits[:6]


def exact_reference(run_path: Path, out: Path, *, mismatch: bool = True) -> dict:
    """Metrics of exact search on the same run, and their difference from the CLI's (slow: quadratic).

    ``mismatch``: also the exact mismatch detector (about 500 s at 100k pairs), when label-noise was timed.
    """
    from analysis.detectors.mismatch import mismatched_pairs
    from analysis.metrics.retrieval import MRR_K, mrr_at_k, recall_at_k, retrieval_ranks
    from analysis.runs.folder import load_run

    run = load_run(run_path)
    t0 = time.perf_counter()
    exact = retrieval_ranks(run, search="exact")
    t_ranks = time.perf_counter() - t0
    table = pd.read_csv(out / "pairs.csv") if (out / "pairs.csv").exists() else None
    diff: dict = {"exact_ranks_s": round(t_ranks, 1)}
    if table is not None and "rank" in table.columns:
        cli = table["rank"].to_numpy(np.int64)
        for k in (1, 5, 10):
            diff[f"recall@{k}"] = {"exact": recall_at_k(exact, k), "cli": recall_at_k(cli, k)}
        diff[f"mrr@{MRR_K}"] = {"exact": mrr_at_k(exact), "cli": mrr_at_k(cli)}
    if not mismatch:
        return diff
    t0 = time.perf_counter()
    ex_mm = mismatched_pairs(run, search="exact")
    diff["exact_mismatch_s"] = round(time.perf_counter() - t0, 1)
    if (out / "label_noise.csv").exists():
        ln = pd.read_csv(out / "label_noise.csv")
        mm = ln[ln["kind"] == "mismatched_pair"].set_index("pair_id")["flagged"].astype(bool)
        ref = ex_mm.set_index("pair_id")["flagged"].astype(bool)
        both = ref.index.intersection(mm.index)
        diff["mismatch_flag_agreement"] = float((ref[both] == mm[both]).mean())
    return diff


def mining_ratio(run_path: Path) -> dict:
    """False-negative mining's neighbour search on the run, the work-based rule (``auto``) against the old rule
    (exact search for every corpus up to 200k items), back to back in this process: wall times, their ratio,
    and the recall of the ``auto`` neighbours against the exact ones over every anchor (issue #17's benchmark).
    """
    from analysis.detectors.false_negatives import Settings, _neighbour_searches, _RunArrays
    from analysis.runs.folder import load_run
    from analysis.search.index import recall_at_k

    out: dict = {}
    found = {}
    for kind in ("auto", "exact"):
        run = load_run(run_path)  # a fresh run: nothing shared between the two
        t0 = time.perf_counter()
        searches = _neighbour_searches(run, _RunArrays.of(run), Settings(index_kind=kind), lambda _f: None)
        out[f"{kind}_s"] = round(time.perf_counter() - t0, 1)
        out[f"{kind}_search"] = "; ".join(f"{mod}: {sr.description}" for mod, sr in searches.items())
        found[kind] = searches
    out["speed-up"] = round(out["exact_s"] / out["auto_s"], 1)
    for mod, exact in found["exact"].items():
        approx = found["auto"][mod]
        # the first 10 mined neighbours (the anchor's own positives and itself left out) of every anchor
        def first(search, k: int = 10) -> np.ndarray:
            ranked = np.where((search.ranks >= 1) & (search.ranks <= k), search.neighbours, -1)
            return np.sort(ranked, axis=1)[:, -k:]
        out[f"{mod}_recall@10_all_anchors"] = round(recall_at_k(first(approx), first(exact)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/negscope_scale_100k"))
    parser.add_argument("--keep", action="store_true", help="reuse the run folder if it exists (and its cache)")
    parser.add_argument("--exact-reference", action="store_true", help="also compute exact metrics (slow)")
    parser.add_argument(
        "--mining-ratio", action="store_true", help="also time false-negative mining's search: auto vs exact (slow)"
    )
    args = parser.parse_args(argv)

    from analysis.search.blas import describe_kernel

    run_path, out = args.dir / "run", args.dir / "out"
    if not (args.keep and (run_path / "manifest.json").exists()):
        shutil.rmtree(args.dir, ignore_errors=True)
        t0 = time.perf_counter()
        make_run(run_path, pairs=args.pairs, dim=args.dim, clusters=args.clusters, seed=args.seed)
        print(f"generated {args.pairs} pairs x {args.dim} dims in {time.perf_counter() - t0:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    print(describe_kernel())
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    total, peak, rows = 0.0, 0.0, []
    for name in [c.strip() for c in args.commands.split(",") if c.strip()]:
        log = out / f"{name}.log"
        wall, rss, status, user, system = run_command(command_line(name, run_path, out), log=log)
        total += wall
        peak = max(peak, rss)
        rows.append({"command": name, "wall_s": round(wall, 1), "peak_rss_gb": round(rss, 2), "status": status})
        print(f"{name:16s} {wall:7.1f} s  {rss:5.2f} GB  exit {status}  (cpu: user {user:.1f} s, system {system:.1f} s)")
        for line in searches_reported(log):
            print(f"    {line}")
    print(f"total            {total:7.1f} s  peak {peak:.2f} GB   (goal: < 120 s, < 6 GB)")
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    cached = sorted(p.name for p in (run_path / "cache").glob("*.npz")) if (run_path / "cache").exists() else []
    print(f"shared neighbour graphs cached: {cached}")
    if args.exact_reference:
        timed = {c.strip() for c in args.commands.split(",")}
        print(json.dumps(exact_reference(run_path, out, mismatch="label-noise" in timed), indent=1, default=float))
    if args.mining_ratio:
        print(json.dumps(mining_ratio(run_path), indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
