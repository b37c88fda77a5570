"""``python -m analysis export RUN --format st|beir|decisions --out PATH``: corrected training data.

Examples::

    python -m analysis export RUN --format st --out corrected/train.csv --add-positive-pairs
    wrote corrected/train.csv: 1797 rows (pairs 1797, negatives_removed 212, positive_pairs_added 212 ...)

    python -m analysis export RUN --format beir --out corrected_beir      # corpus.jsonl, queries.jsonl, qrels/
    python -m analysis export RUN --format decisions --out audit.jsonl    # every decision, oldest first

Decisions are read from the workspace's review database (``--db`` to use another one).
"""

from __future__ import annotations

import argparse

from analysis.errors import NegScopeError
from analysis.review.export import FORMATS, ST_STYLES, export
from analysis.review.store import ReviewStore
from analysis.runs import workspace
from analysis.runs.folder import load_run

NAME = "export"
HELP = "Export corrected training data (sentence-transformers, BEIR) or the decision audit log (JSONL)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, required=True, help="what to write")
    parser.add_argument("--out", required=True, metavar="PATH", help="file (st, decisions) or folder (beir, st)")
    parser.add_argument("--db", default=None, help="review database (default: the workspace's)")
    parser.add_argument("--style", choices=ST_STYLES, default="ntuple", help="st: n-tuples or triplets (ntuple)")
    parser.add_argument(
        "--add-positive-pairs", action="store_true", help="st: add decided false negatives as extra positive pairs"
    )
    parser.add_argument("--drop-unsure", action="store_true", help="st: also remove negatives decided 'unsure'")
    parser.add_argument(
        "--keep-mismatched", action="store_true", help="st, beir: keep pairs decided 'mismatched' on the label page"
    )
    parser.add_argument("--no-relabels", action="store_true", help="st: ignore corrected class labels")


def run(args: argparse.Namespace) -> int:
    """Write the export and say what it holds."""
    run_ = load_run(args.run)
    db = args.db or workspace.review_db_path()
    store = ReviewStore(db)
    options: dict = {}
    if args.fmt == "st":
        options = {
            "style": args.style,
            "add_positive_pairs": args.add_positive_pairs,
            "drop_unsure": args.drop_unsure,
            "drop_mismatched": not args.keep_mismatched,
            "apply_relabels": not args.no_relabels,
        }
    elif args.fmt == "beir":
        options = {"drop_mismatched": not args.keep_mismatched}
    try:
        result = export(run_, store, args.out, fmt=args.fmt, **options)
    except OSError as exc:
        raise NegScopeError(f"cannot write {args.out}: {exc}") from exc
    details = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    print(f"wrote {result.path}: {result.rows} rows ({details})")
    return 0
