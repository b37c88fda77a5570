"""``python -m analysis export RUN --out DIR``: corrected training data with the review decisions applied.

Examples::

    python -m analysis export RUN --out corrected/
    wrote corrected/: pairs.csv (1797 rows), exclusions.jsonl, beir/, decisions.jsonl (pairs_out 1794, ...)

    python -m analysis export RUN --out corrected/ --format st --style triplet
    python -m analysis export RUN --out corrected/ --rule majority
    python -m analysis export RUN --out corrected/ --overwrite       # replace an existing export folder

The folder must be new or empty and may not lie inside the dataset's folder; ``--overwrite`` writes a new
folder beside it and swaps it in. What each decision does: docs/review.md. Decisions are read from the
workspace's review database (``--db`` to use another one).
"""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "Export corrected training data (sentence-transformers table, exclusions, BEIR, audit log) to a new folder."
FORMAT_CHOICES = ("all", "st", "exclusions", "beir", "decisions")
RULE_CHOICES = ("latest", "majority", "adjudicator", "unanimous")  # analysis.review.decisions.RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="export folder (new or empty)")
    parser.add_argument(
        "--format", dest="fmt", choices=FORMAT_CHOICES, nargs="+", default=["all"], help="what to write (all)"
    )
    parser.add_argument("--db", default=None, help="review database (default: the workspace's)")
    parser.add_argument("--style", choices=("ntuple", "triplet"), default="ntuple", help="st layout (ntuple)")
    parser.add_argument("--rule", choices=RULE_CHOICES, default="latest", help="adjudication rule (latest)")
    parser.add_argument("--adjudicator", default=None, help="annotator whose decisions win (--rule adjudicator)")
    parser.add_argument(
        "--no-extra-positive-pairs",
        action="store_true",
        help="do not add listed (given/in-batch) false negatives as extra positive pairs (mined ones always are)",
    )
    parser.add_argument("--keep-duplicates", action="store_true", help="ignore duplicate decisions")
    parser.add_argument("--keep-mismatched", action="store_true", help="keep pairs decided 'mismatched'")
    parser.add_argument("--no-relabels", action="store_true", help="ignore corrected class labels")
    parser.add_argument("--drop-unsure", action="store_true", help="also remove given negatives decided 'unsure'")
    parser.add_argument("--no-images", action="store_true", help="do not copy the images beside the table")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")


def run(args: argparse.Namespace) -> int:
    """Write the export and say what it holds."""
    from analysis.errors import NegScopeError
    from analysis.review.corrected import corrected_from_store
    from analysis.review.export import FORMATS, write_export
    from analysis.review.store import ReviewStore
    from analysis.runs import workspace
    from analysis.runs.folder import load_run

    run_ = load_run(args.run)
    store = ReviewStore(args.db or workspace.review_db_path())
    corrected = corrected_from_store(
        run_,
        store,
        rule=args.rule,
        adjudicator=args.adjudicator,
        extra_positive_pairs=not args.no_extra_positive_pairs,
        drop_duplicates=not args.keep_duplicates,
        drop_mismatched=not args.keep_mismatched,
        apply_relabels=not args.no_relabels,
        drop_unsure=args.drop_unsure,
    )
    formats = list(FORMATS) if "all" in args.fmt else list(args.fmt)
    try:
        result = write_export(
            corrected,
            args.out,
            formats=formats,
            style=args.style,
            copy_images=not args.no_images,
            overwrite=args.overwrite,
        )
    except OSError as exc:
        raise NegScopeError(f"cannot write {args.out}: {exc}") from exc
    details = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    print(f"wrote {result.path}: {len(result.files)} files ({details})")
    return 0
