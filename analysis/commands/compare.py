"""``python -m analysis compare RUN_A RUN_B [RUN_C ...] --json [--pairs-out FILE.csv]``: compare checkpoints.

The runs must hold the same dataset content (items, pairs and listed negatives, matched by content); the
first is the baseline of every delta and the per-pair table uses its ids. The JSON object (documented in
``docs/compare.md``)::

    {"baseline": "A", "common_tau": 0.07, "items": 3594, "pairs": 1797,
     "runs": [{"label": "A", "run_id": "...", "path": "...", "dim": 128, "checkpoint": "...",
               "auroc": 0.73, "recall_at_1": 0.02, ..., "loss_own_tau": 1.74, "gap": 0.79, ...}, ...],
     "deltas": [{"label": "B", "baseline": "A", "auroc": 0.24, ...}, ...]}

Heavy modules are imported inside :func:`run`, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.commands._json import write_json

NAME = "compare"
HELP = (
    "Compare two or more runs of the same dataset (checkpoints, epochs, a fine-tune and its base): metrics "
    "side by side with their deltas (JSON with --json) and optionally the per-pair table as CSV."
)
DEFAULT_COMMON_TAU = 0.07


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders; the first is the baseline")
    parser.add_argument("--json", action="store_true", help="print one JSON object: one entry per run plus deltas")
    parser.add_argument("--pairs-out", type=Path, metavar="FILE.csv", help="write the per-pair table to this CSV")
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="L",
        help="a short label per run, used in the CSV column names (default A B C ...)",
    )
    parser.add_argument(
        "--tau",
        type=float,
        default=DEFAULT_COMMON_TAU,
        help=f"the common temperature of loss_common_tau (default {DEFAULT_COMMON_TAU})",
    )
    parser.add_argument(
        "--detectors",
        action="store_true",
        help="also run the false-negative and label-noise detectors on every run and count their flags (slow)",
    )


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    """Align the runs, compute the metrics, print them, optionally write the per-pair CSV."""
    import math

    from analysis.errors import NegScopeError

    if len(args.runs) < 2:
        raise NegScopeError(f"compare needs at least two run folders, got {len(args.runs)}")
    if not (math.isfinite(args.tau) and args.tau > 0):
        raise NegScopeError(f"--tau must be a positive number, got {args.tau}")

    from analysis.compare.align import align_runs
    from analysis.compare.deltas import METRIC_KEYS, compare_runs, detector_flags
    from analysis.compare.pairs import pair_comparison
    from analysis.runs.folder import load_run

    runs = [load_run(path) for path in args.runs]
    alignment = align_runs(runs, labels=args.labels)
    flags = [detector_flags(r) for r in runs] if args.detectors else None
    comparison = compare_runs(alignment, common_tau=args.tau, flags=flags)
    if args.pairs_out is not None:
        try:
            args.pairs_out.parent.mkdir(parents=True, exist_ok=True)
            pair_comparison(comparison).to_csv(args.pairs_out, index=False)
        except OSError as exc:
            raise NegScopeError(f"cannot write {args.pairs_out}: {exc}") from exc
    data = comparison.to_json()
    if args.json:
        write_json(data)
        return 0
    labels = [r["label"] for r in data["runs"]]
    for entry in data["runs"]:
        print(f"{entry['label']}: {entry['run_id']} (dim {entry['dim']})")
    width = max(len(k) for k in METRIC_KEYS)
    print(f"{'metric':<{width}}  " + "  ".join(f"{x:>10}" for x in labels))
    deltas = {d["label"]: d for d in data["deltas"]}
    for key in METRIC_KEYS:
        values = [entry[key] for entry in data["runs"]]
        if all(v is None for v in values):
            continue
        cells = [f"{_fmt(v):>10}" for v in values]
        changes = [deltas[x].get(key) for x in labels[1:]]
        change = "  ".join(f"{x} {c:+.4f}" for x, c in zip(labels[1:], changes, strict=True) if c is not None)
        print(f"{key:<{width}}  " + "  ".join(cells) + (f"   change vs {labels[0]}: {change}" if change else ""))
    if args.pairs_out is not None:
        print(f"per-pair table: {args.pairs_out}")
    return 0
