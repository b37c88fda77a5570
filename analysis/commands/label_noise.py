"""``python -m analysis label-noise RUN --out flags.csv``: mismatched pairs, wrong labels, near duplicates.

Example::

    python -m analysis label-noise ~/.negscope/runs/run-3f2a9c0d --out flags.csv
               kind  examined  flagged
    mismatched_pair      1797      107
              label      1797       42
          duplicate      1797       10
    wrote 5391 rows to flags.csv

The CSV has one row per examined pair or item, flagged or not: ``kind`` (mismatched_pair | label |
duplicate), ``pair_id``, ``item_id``, ``other_item_id``, ``score``, ``flagged``, ``reason``, ``given_label``,
``suggested_label``; each kind sorted by score, highest first. Without ``--out`` the CSV goes to stdout.

``--json`` (with ``--out``) prints one JSON object instead of the text lines: ``kinds`` (examined and flagged per
detector), ``rows_written``, ``out``, ``mismatch`` (how its ranks were computed and each gallery's search:
``kind`` exact | ivf | hnsw | ivfpq, measured ``recall``, ``description``), ``label_probes``, ``shared_graphs``
(each shared neighbour graph: ``kind``, ``k``, measured ``recall``) and, with ``--evaluate``, ``evaluation``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.choices import DUPLICATE_THRESHOLD as DEFAULT_THRESHOLD
from analysis.choices import INDEX_KINDS
from analysis.choices import LABEL_EXAMINE as EXAMINE
from analysis.choices import LABEL_METHODS as METHODS
from analysis.choices import LABEL_NOISE_KINDS as KINDS
from analysis.commands._json import write_json
from analysis.errors import NegScopeError

NAME = "label-noise"
HELP = "Flag mismatched pairs, wrong class labels (cleanlab) and near-duplicate anchors; write them as CSV."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``label-noise`` options to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--out", metavar="CSV", default=None, help="CSV file to write (default: stdout)")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated detectors to run (default: {','.join(KINDS)})",
    )
    parser.add_argument("--flagged-only", action="store_true", help="write only the flagged rows")
    parser.add_argument(
        "--flag-rank",
        type=float,
        default=None,
        metavar="R",
        help="mismatched pairs: flag when a mutual rank exceeds R (default: 5%% of the candidates, at least 10)",
    )
    parser.add_argument("--examine", choices=EXAMINE, default="anchors", help="labels: which items (anchors)")
    parser.add_argument("--method", choices=METHODS, default="logreg", help="labels: cross-validated probe (logreg)")
    parser.add_argument("--k", type=int, default=10, help="labels: nearest labelled neighbours shown as evidence (10)")
    parser.add_argument("--folds", type=int, default=5, help="labels: cross-validation folds (5)")
    parser.add_argument(
        "--duplicate-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="COS",
        help=f"duplicates: cosine at or above which two anchors are near duplicates ({DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="auto",
        help="neighbour search of all three detectors (auto: exact or IVF with measured recall, from the work)",
    )
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="also print AUROC/AUPRC against the planted truth (truth.csv beside the dataset), when there is one",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the counts, the output path and each search (kind, measured recall) as one JSON object "
        "(needs --out)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the detectors and write the flag table (the library checks the kinds and options)."""
    from analysis.detectors.label_noise import detect_label_noise, evaluate_on_truth
    from analysis.runs.folder import load_run

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.json and not args.out:
        raise NegScopeError("--json needs --out (the CSV cannot share stdout with the JSON)")
    run_ = load_run(args.run)
    result = detect_label_noise(
        run_,
        kinds=kinds,
        flag_rank=args.flag_rank,
        examine=args.examine,
        method=args.method,
        k=args.k,
        n_folds=args.folds,
        duplicate_threshold=args.duplicate_threshold,
        search=args.index,
        keep_indexes=False,  # the process ends with the command: later steps reuse the indexes' memory
    )
    table = result.table()
    if args.flagged_only:
        table = table[table["flagged"]]
    # Summaries go to stderr when the CSV itself goes to stdout.
    info = sys.stdout if args.out and not args.json else sys.stderr
    summary = result.summary()
    shown = summary[summary["kind"].isin(kinds)]
    report = {
        "run": str(args.run),
        "kinds": {r.kind: {"examined": r.examined, "flagged": r.flagged} for r in shown.itertuples()},
    }
    print(summary[summary["kind"].isin(kinds)].to_string(index=False), file=info)
    from analysis.search.graph import recorded_searches

    # which searches ran (exact, or approximate with the recall measured on a sample)
    attrs = result.mismatch.attrs
    if attrs.get("search"):
        print(f"mismatched pairs: ranks {attrs['ranks']}; {attrs['search']}", file=info)
        report["mismatch"] = {
            "ranks": attrs["ranks"],
            "recall": attrs.get("recall"),
            "searches": [
                {
                    "gallery": gallery,
                    "kind": attrs.get("search_kinds", {}).get(gallery),
                    "recall": attrs.get("search_recalls", {}).get(gallery),
                    "description": text,
                }
                for gallery, text in attrs["search"].items()
            ],
        }
    report["label_probes"] = list(result.labels.attrs.get("probes", []))
    for probe in result.labels.attrs.get("probes", []):
        print(f"labels: {probe}", file=info)
    report["shared_graphs"] = recorded_searches(run_)
    for graph in report["shared_graphs"]:
        print(f"shared neighbour graph: {graph}", file=info)
    if args.evaluate:
        from analysis.data.truth import pair_truth

        truth = pair_truth(run_)
        if truth is None:
            report["evaluation"] = None
            print("no planted truth beside this dataset; nothing to evaluate", file=info)
        else:
            evaluation = evaluate_on_truth(result, truth)
            report["evaluation"] = evaluation.to_dict(orient="records")
            print(evaluation.to_string(index=False, float_format="%.3f"), file=info)
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(out, index=False)
        except OSError as exc:
            raise NegScopeError(f"cannot write {out}: {exc}") from exc
        print(f"wrote {len(table)} rows to {out}", file=info)
    else:
        table.to_csv(sys.stdout, index=False)
    if args.json:
        report.update(rows_written=len(table), out=str(args.out))
        write_json(report)
    return 0
