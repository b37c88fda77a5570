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
import json
import math
import sys

import numpy as np

from analysis.errors import NegScopeError
from analysis.metrics.temperature import (
    DIRECTIONS,
    false_negative_table,
    has_two_modalities,
    learned_or_default_tau,
    loss_inputs,
    sweep_inputs,
)
from analysis.runs.folder import load_run

NAME = "temperature"
HELP = "InfoNCE loss, effective negatives and the hardest negative's gradient share of a run, for given taus."

JSON_KEYS = ("tau", "loss", "effective_negatives", "top1_weight")
DEFAULT_TAUS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


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
    value = float(value)
    return value if math.isfinite(value) else None


def run(args: argparse.Namespace) -> int:
    """Compute the sweep and print it."""
    run_ = load_run(args.run)
    if args.tau is not None:
        taus = [float(t) for t in args.tau]
        bad = [t for t in taus if not (math.isfinite(t) and t > 0)]
        if bad:
            raise NegScopeError(f"--tau values must be positive numbers, got {bad}")
    else:
        learned, _ = learned_or_default_tau(run_)
        taus = sorted({*DEFAULT_TAUS, round(learned, 6)})
    if args.direction != "forward" and not has_two_modalities(run_):
        raise NegScopeError(
            f"--direction {args.direction} needs a two-modality run; {run_.run_id} has "
            f"{run_.anchor_modality()} anchors and {run_.positive_modality()} positives"
        )
    fn_table = false_negative_table(run_)
    if args.direction == "symmetric":
        fwd = sweep_inputs(loss_inputs(run_, "forward", fn_table=fn_table), taus)
        rev = sweep_inputs(loss_inputs(run_, "reverse", fn_table=fn_table), taus)
        table = fwd.copy()
        for col in fwd.columns.drop(["tau", "n_pairs"]):
            table[col] = (fwd[col] + rev[col]) / 2
    else:
        table = sweep_inputs(loss_inputs(run_, args.direction, fn_table=fn_table), taus)
    if table["n_pairs"].iloc[0] == 0:
        raise NegScopeError(f"no pair of {run_.run_id} has a negative: the loss is not defined")
    if args.json:
        rows = [{key: _clean(row[key]) for key in JSON_KEYS} for _, row in table.iterrows()]
        json.dump(rows, sys.stdout)
        sys.stdout.write("\n")
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
