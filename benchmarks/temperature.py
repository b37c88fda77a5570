"""Benchmark: the temperature sweep (InfoNCE and gradient statistics for every tau) against one torch.exp.

The target: 10k pairs x 64 candidates (1 positive + 63 negatives) x 64 tau values in under 0.3 s on a 2-core
machine, so that the page's slider feels live. The baseline is one plain ``torch.exp`` over a float32 tensor of
the same size (P * C * T elements), timed in the same process; the ratio is what to compare across machines.

Usage::

    python benchmarks/temperature.py [--pairs 10000] [--candidates 64] [--taus 64] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from analysis.metrics.temperature import sweep, tau_grid


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=64, help="positive + negatives per pair")
    parser.add_argument("--taus", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    p, k = args.pairs, args.candidates - 1
    pos = rng.uniform(0.2, 0.9, size=p).astype(np.float32)
    neg = rng.uniform(-0.5, 0.8, size=(p, k)).astype(np.float32)
    taus = tau_grid(0.005, 1.0, args.taus)
    fn = rng.random((p, k)) < 0.02

    sweep(pos, neg, taus)  # warm-up
    t_sweep = _best(lambda: sweep(pos, neg, taus), args.repeats)
    t_sweep_fn = _best(lambda: sweep(pos, neg, taus, false_negative=fn), args.repeats)
    base = torch.rand(args.taus, p, args.candidates)
    torch.exp(base)
    t_exp = _best(lambda: torch.exp(base), args.repeats)

    n = p * args.candidates * args.taus
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; P={p}, C={args.candidates}, T={args.taus}")
    print(f"baseline torch.exp over {n:,} float32 elements: {t_exp * 1e3:8.1f} ms")
    print(f"sweep (loss, N_eff, top-1/5 shares):            {t_sweep * 1e3:8.1f} ms  ratio {t_sweep / t_exp:5.2f}")
    print(
        f"sweep + false-negative share:                   {t_sweep_fn * 1e3:8.1f} ms  ratio {t_sweep_fn / t_exp:5.2f}"
    )
    print(f"target < 300 ms: {'met' if t_sweep < 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
