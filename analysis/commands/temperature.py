"""``python -m analysis temperature RUN --tau 0.02 0.07 0.2 --json``: InfoNCE loss and gradient shares against tau.

Example::

    python -m analysis temperature ~/.negscope/runs/run-3f2a9c0d --tau 0.02 0.07 0.2 --json
    [{"tau": 0.02, "loss": 0.406, "effective_negatives": 2.30, "top1_weight": 0.744}, ...]

With ``--json`` the output is a list with one object per tau, in the order given, with exactly the keys
``tau``, ``loss`` (mean InfoNCE over pairs), ``effective_negatives`` (mean ``exp(entropy)`` of the negatives'
gradient shares) and ``top1_weight`` (mean share of the hardest negative). Without it, a table with more
columns (positive gradient, top-5 share, share on known or decided false negatives) is printed.
"""

from __future__ import annotations

import argparse

from analysis.choices import DIRECTIONS
from analysis.commands._json import write_json

NAME = "temperature"
HELP = "InfoNCE loss, effective negatives and the hardest negative's gradient share of a run, for given taus."

JSON_KEYS = ("tau", "loss", "effective_negatives", "top1_weight")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``temperature`` options to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument(
        "--tau",
        type=float,
        nargs="+",
        default=None,
        metavar="TAU",
        help="temperatures (default: the checkpoint's learned tau and 0.01 0.02 0.05 0.1 0.2 0.5 1)",
    )
    parser.add_argument(
        "--direction",
        choices=DIRECTIONS,
        default="forward",
        help="forward: anchors query their candidates; reverse / symmetric: two-modality runs only (forward)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (a list, one object per tau)")


def _clean(value: float) -> float | None:
    import math

    value = float(value)
    return value if math.isfinite(value) else None


def run(args: argparse.Namespace) -> int:
    """Compute the sweep (``direction_sweep`` checks tau and the direction) and print it."""

    import numpy as np

    from analysis.metrics.temperature import default_taus, direction_sweep, false_negative_table
    from analysis.review.decisions import workspace_decisions
    from analysis.runs.folder import load_run

    run_ = load_run(args.run)
    taus = [float(t) for t in args.tau] if args.tau is not None else default_taus(run_)
    table = direction_sweep(
        run_,
        taus,
        directions=(args.direction,),
        fn_table=false_negative_table(run_, decisions=workspace_decisions(run_)),
        require_negatives=True,
    )
    if args.json:
        rows = [{key: _clean(row[key]) for key in JSON_KEYS} for _, row in table.iterrows()]
        write_json(rows)
        return 0
    tau_learned = run_.tau
    print(f"run {run_.run_id}: {int(table['n_pairs'].iloc[0])} pairs, direction {args.direction}", end="")
    print(f", learned tau {tau_learned:.4g}" if tau_learned else ", no learned tau")
    cols = ["tau", "loss", "positive_gradient", "effective_negatives", "top1_weight", "top5_weight"]
    if table["false_negative_weight"].notna().any():
        cols.append("false_negative_weight")
    print("  ".join(f"{c:>21}" for c in cols))
    for _, row in table.iterrows():
        print("  ".join(f"{row[c]:>21.6g}" if np.isfinite(row[c]) else f"{'nan':>21}" for c in cols))
    return 0
