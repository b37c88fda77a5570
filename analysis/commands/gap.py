"""``python -m analysis gap RUN --json``: the modality gap of a run and the shift experiment (Liang et al. 2022).

Example::

    python -m analysis gap ~/.negscope/runs/run-3f2a9c0d --json
    {"groups": ["image", "text"], "centroid_distance": 0.193, "centroid_cosine": 0.187, "separability": 0.896,
     "shift": [{"lambda": -1.0, "recall_at_1": 0.315, "loss": 0.48, ...}, ...], ...}

The object holds at least ``centroid_distance``, ``centroid_cosine``, ``separability`` and ``shift`` (a list of
``{lambda, recall_at_1, loss}``, plus the centroid distance after the shift), ``lambda_close`` (the shift that
closes the gap), each group's ``mean_cosine``, ``gap_variance_share`` and the ``tau`` used for the loss. For a
one-modality dataset the groups are the anchor side and the positive side (``note`` says so). On a large run the
shift experiment runs on seeded samples (``--max-pairs`` pairs, ``--max-items`` items; 0 = all), and
``shift_sample`` says what it ran on.
"""

from __future__ import annotations

import argparse

from analysis.choices import GAP_LAMBDAS
from analysis.choices import GAP_MAX_SHIFT_ITEMS as MAX_SHIFT_ITEMS
from analysis.choices import GAP_MAX_SHIFT_PAIRS as MAX_SHIFT_PAIRS
from analysis.commands._json import write_json
from analysis.errors import NegScopeError

NAME = "gap"
HELP = "Modality gap of a run: centroid distance and cosine, cone widths, separability, and the shift experiment."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``gap`` options to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument(
        "--lambdas",
        type=float,
        nargs="+",
        default=list(GAP_LAMBDAS),
        metavar="L",
        help="shift sizes (default -1 to 2 in steps of 0.25); the gap-closing lambda is always added",
    )
    parser.add_argument("--tau", type=float, default=None, help="temperature of the loss (default: the learned tau)")
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=MAX_SHIFT_PAIRS,
        metavar="N",
        help=f"shift experiment: recall@1 and loss on a seeded sample of at most N pairs (default {MAX_SHIFT_PAIRS:,}; 0: all)",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=MAX_SHIFT_ITEMS,
        metavar="N",
        help=f"shift experiment: closing lambda and centroid distances on at most N items (default {MAX_SHIFT_ITEMS:,}; 0: all)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Compute the gap report and print it (the library checks tau and the lambdas)."""
    from analysis.metrics.modality_gap import gap_report
    from analysis.runs.folder import load_run

    if args.max_pairs < 0 or args.max_items < 0:
        raise NegScopeError("--max-pairs and --max-items must be 0 (all) or positive")
    report = gap_report(
        load_run(args.run),
        tau=args.tau,
        lambdas=args.lambdas,
        max_pairs=args.max_pairs or None,
        max_items=args.max_items or None,
    )
    data = report.to_json()
    if args.json:
        write_json(data)
        return 0
    a, b = data["groups"]
    print(data["note"])

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    print(f"{a}: {data['n'][a]} items, {b}: {data['n'][b]} items")
    print(f"centroid distance  {fmt(data['centroid_distance'])}")
    print(f"centroid cosine    {fmt(data['centroid_cosine'])}")
    print(f"mean cosine        {a}: {fmt(data['mean_cosine'][a])}, {b}: {fmt(data['mean_cosine'][b])}")
    print(f"variance along gap {fmt(data['gap_variance_share'])}")
    print(f"separability       {fmt(data['separability'])} (logistic regression, 5-fold, balanced; 0.5 = chance)")
    for message in data["messages"]:
        print(f"note: {message}")
    if data["shift_sample"] and data["shift_sample"]["note"]:
        print(f"note: {data['shift_sample']['note']}")
    print(f"shift experiment at tau {data['tau']:.4g} ({'learned' if data['tau_is_learned'] else 'given or default'}):")
    print(f"{'lambda':>10} {'centroid_dist':>14} {'recall_at_1':>12} {'loss':>10}")
    for row in data["shift"]:
        mark = "  <- closes the gap" if row["closes_gap"] else ""
        print(
            f"{row['lambda']:>10.4f} {fmt(row['centroid_distance']):>14} {fmt(row['recall_at_1']):>12} "
            f"{fmt(row['loss']):>10}{mark}"
        )
    return 0
