"""``python -m analysis false-negatives RUN --out candidates.csv``: ranked false-negative candidates.

Example::

    python -m analysis false-negatives ~/.negscope/runs/run-3f2a9c0d --out candidates.csv
    candidates: 14376 (given 14376, mined 0 new), flagged 1203; neighbour search: text: exact search
    wrote 14376 rows to candidates.csv

The CSV has one row per candidate: ``pair_id`` (the dataset's ``id`` where it has one), ``anchor_id``,
``candidate_id`` (item ids of the run), ``source`` (given | in_batch | mined), ``score`` (0..1, higher = more
likely a false negative), ``flagged``, ``reason``; sorted by score, highest first. ``--evidence`` appends
the evidence columns (pos_sim, neg_sim, rank, sim_to_positive ...); ``other_mode`` among them is empty unless
``--learn`` is given (its weight is 0 in both presets, so it is computed only to learn a weight for it). Without ``--out`` the CSV goes to stdout.

One-to-many data, a cross-encoder judge, and learning from the decisions recorded for the run::

    python -m analysis false-negatives RUN --weights one_to_many --cross-encoder ce/ --learn --out queue.csv
    learned from 200 decisions (121 false negatives), 5-fold cross-validated: precision 0.66, recall 0.70, AUPRC 0.71
    log-odds weights (preset + learned change): sim_diff +2.000, ...

``--learn`` appends ``learned_score`` and ``decision`` and puts the undecided rows first, by learned score or
(``--learn-order uncertainty``) most uncertain first.

``--json`` (with ``--out``) prints one JSON object instead of the text lines: ``candidates``, ``by_source``,
``flagged``, ``rows_written``, ``out``, ``searches`` (each neighbour search: ``search`` candidates |
anchor_neighbours, ``kind`` exact | ivf | hnsw | ivfpq, ``params``, measured ``recall`` at ``recall_k``,
``description``), ``shared_graphs`` and, with ``--evaluate``, ``evaluation``.

The file is written by pyarrow's CSV writer (strings quoted, booleans ``true``/``false``, floats in their shortest
round-trip form, NaN as an empty field); ``pandas.read_csv`` reads it back to the same values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from analysis.choices import FN_QUEUE_ORDERS, FN_WEIGHT_PRESETS, INDEX_KINDS, NEGATIVE_SOURCES
from analysis.commands._json import write_json
from analysis.errors import NegScopeError

if TYPE_CHECKING:  # annotations only: the command stays light at import
    import pandas as pd

    from analysis.review.store import ReviewStore
    from analysis.runs.folder import Run

NAME = "false-negatives"
HELP = "Rank listed and mined negatives by how likely they are false negatives; write them as CSV."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``false-negatives`` options to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--out", metavar="CSV", default=None, help="CSV file to write (default: stdout)")
    parser.add_argument(
        "--sources",
        default=",".join(NEGATIVE_SOURCES),
        help=f"comma-separated candidate sources (default: {','.join(NEGATIVE_SOURCES)})",
    )
    parser.add_argument("--mine-k", type=int, default=10, help="corpus-wide neighbours mined per anchor (10)")
    parser.add_argument("--rank-depth", type=int, default=100, help="neighbours searched for the rank evidence (100)")
    parser.add_argument("--mutual-k", type=int, default=10, help="neighbourhood of the mutual-kNN test (10)")
    parser.add_argument("--clusters", type=int, default=None, help="k-means cells per modality (default sqrt(n/2))")
    parser.add_argument("--no-labels", action="store_true", help="do not use class labels as evidence")
    parser.add_argument("--guide", metavar="RUN2", default=None, help="run of the same data with a guide checkpoint")
    parser.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="auto",
        help="neighbour search (auto: from the work to do; ivfpq, re-ranked from the shards, when the corpus "
        "would not fit in memory)",
    )
    flag = parser.add_mutually_exclusive_group()
    flag.add_argument("--threshold", type=float, default=0.5, help="flag when score >= this (0.5)")
    flag.add_argument(
        "--margin-absolute", type=float, default=None, metavar="M", help="flag when neg_sim > pos_sim - M instead"
    )
    flag.add_argument(
        "--margin-relative",
        type=float,
        default=None,
        metavar="M",
        help="flag when neg_sim > pos_sim - |pos_sim| * M instead (sign-safe relative margin)",
    )
    parser.add_argument(
        "--weights",
        default="paraphrase",
        metavar="PRESET",
        help=f"evidence weight preset: {' | '.join(FN_WEIGHT_PRESETS)} (paraphrase: valid matches look like the "
        "positive; one_to_many: several different valid matches per anchor)",
    )
    parser.add_argument(
        "--learn",
        action="store_true",
        help="re-rank with weights learned from the review decisions recorded for this run (cross-validated "
        "logistic regression; needs 5 decided false negatives and 5 negatives); adds learned_score, decision",
    )
    parser.add_argument(
        "--learn-order",
        default="score",
        metavar="ORDER",
        help=f"order of the undecided rows with --learn: {' | '.join(FN_QUEUE_ORDERS)} (uncertainty sampling)",
    )
    parser.add_argument("--db", default=None, help="review database for --learn (default: the workspace's)")
    parser.add_argument(
        "--cross-encoder",
        metavar="DIR",
        default=None,
        help="local sentence-transformers CrossEncoder folder (safetensors) judging (anchor, candidate) and "
        "(anchor, positive) of the top candidates",
    )
    parser.add_argument(
        "--judge-top", type=int, default=1000, help="candidates the cross-encoder judges, highest first (1000)"
    )
    parser.add_argument("--flagged-only", action="store_true", help="write only the flagged rows")
    parser.add_argument("--evidence", action="store_true", help="append the evidence columns")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the counts, the output path and each neighbour search (kind, parameters, measured recall) as "
        "one JSON object (needs --out)",
    )
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="also print AUPRC and precision@100 against the planted truth, when the dataset has one",
    )


def run(args: argparse.Namespace) -> int:
    """Find the candidates and write them (``Settings`` checks the options)."""
    from analysis.detectors.false_negatives import (
        DETECTOR_COLUMNS,
        EVIDENCE_COLUMNS,
        Settings,
        find_false_negatives,
        flag_by,
        quality_on_truth,
        weight_preset,
    )
    from analysis.runs.folder import load_run

    settings = Settings(
        sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
        mine_k=args.mine_k,
        rank_depth=args.rank_depth,
        mutual_k=args.mutual_k,
        n_clusters=args.clusters,
        use_labels=not args.no_labels,
        threshold=args.threshold,
        index_kind=args.index,
        weights=weight_preset(args.weights),
        judge_top=args.judge_top,
        mode_evidence=args.learn,  # other_mode is weighted 0 in the presets: computed only to learn from it
    )
    if args.learn_order not in FN_QUEUE_ORDERS:
        raise NegScopeError(f"unknown --learn-order {args.learn_order!r}; expected one of {', '.join(FN_QUEUE_ORDERS)}")
    if args.json and not args.out:
        raise NegScopeError("--json needs --out (the CSV cannot share stdout with the JSON)")
    run_ = load_run(args.run)
    store = _review_store(args) if args.learn else None  # checked before the search, which may take long
    guide = load_run(args.guide) if args.guide else None
    judge = None
    if args.cross_encoder:
        from analysis.detectors.cross_encoder import CrossEncoderJudge

        judge = CrossEncoderJudge(args.cross_encoder)
    table = find_false_negatives(run_, settings=settings, guide=guide, judge=judge)
    if args.margin_absolute is not None:
        table["flagged"] = flag_by(table, method="absolute", value=args.margin_absolute)
    elif args.margin_relative is not None:
        table["flagged"] = flag_by(table, method="relative", value=args.margin_relative)
    info = sys.stdout if args.out and not args.json else sys.stderr
    searches = list(table.attrs.get("searches", []))
    counts = table["source"].value_counts().to_dict()
    report = {"run": str(args.run), "candidates": len(table), "by_source": counts}
    report["flagged"] = int(table["flagged"].sum())
    by_source = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(
        f"candidates: {len(table)} ({by_source}), flagged {int(table['flagged'].sum())}; "
        f"neighbour search: {table.attrs.get('index', '')}",
        file=info,
    )
    if args.evaluate:
        from analysis.data.truth import negative_truth

        truth = negative_truth(run_)
        if truth is None:
            report["evaluation"] = None
            print("no planted truth beside this dataset; nothing to evaluate", file=info)
        else:
            q = quality_on_truth(table, truth)
            report["evaluation"] = q
            print(
                f"AUPRC {q['auprc']:.3f} (baseline neg_sim - pos_sim {q['auprc_baseline']:.3f}, random "
                f"{q['prevalence']:.3f}); precision@{q['k']} {q['precision_at_k']:.3f} "
                f"(baseline {q['precision_at_k_baseline']:.3f}) over {q['n']} listed negatives",
                file=info,
            )
    if args.learn:
        table = _learned_queue(run_, table, store, args, info)
    if args.flagged_only:
        table = table[table["flagged"]]
    columns = list(DETECTOR_COLUMNS) + (list(EVIDENCE_COLUMNS) if args.evidence else [])
    columns += ["learned_score", "decision"] if args.learn else []
    table = table[columns]
    if args.out:
        out = Path(args.out)
        write_csv(table, out)
        print(f"wrote {len(table)} rows to {out}", file=info)
    else:
        table.to_csv(sys.stdout, index=False)
    if args.json:
        from analysis.search.graph import recorded_searches

        report.update(rows_written=len(table), out=str(args.out), searches=searches)
        report["shared_graphs"] = recorded_searches(run_)
        write_json(report)
    return 0


def write_csv(table: pd.DataFrame, out: Path) -> None:
    """Write ``table`` to ``out`` with pyarrow's CSV writer (several times pandas' ``to_csv`` on a million rows;
    strings quoted, booleans true/false, NaN and None as empty fields), pandas' where pyarrow cannot convert a
    column (mixed Python objects)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            arrow = pa.Table.from_pandas(table, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table.to_csv(out, index=False)
            return
        pa_csv.write_csv(arrow, out, pa_csv.WriteOptions(quoting_style="needed"))
    except OSError as exc:
        raise NegScopeError(f"cannot write {out}: {exc}") from exc


def _review_store(args: argparse.Namespace) -> ReviewStore:
    """The review database ``--learn`` reads (``--db`` or the workspace's); it must exist."""
    from analysis.review.store import ReviewStore
    from analysis.runs import workspace

    db = Path(args.db) if args.db else workspace.review_db_path()
    if not db.is_file():
        raise NegScopeError(f"--learn: no review database at {db} (decide some candidates first, or pass --db)")
    return ReviewStore(db)


def _learned_queue(
    run_: Run, table: pd.DataFrame, store: ReviewStore, args: argparse.Namespace, info: TextIO
) -> pd.DataFrame:
    """``table`` re-ranked by weights learned from the run's recorded decisions (latest decision per
    candidate); prints the learned weights and the cross-validated figures."""
    from analysis.detectors.false_negatives import with_decisions
    from analysis.detectors.fn_learning import fit_weights, rerank
    from analysis.review.decisions import current_decisions, dataset_keys, negative_decisions

    decisions = negative_decisions(run_, current_decisions(store, dataset_keys(run_), kind="negative"))
    table = with_decisions(table, decisions)
    learned = fit_weights(table)
    print(
        f"learned from {learned.n_decided} decisions ({learned.n_false_negative} false negatives), "
        f"{learned.folds}-fold cross-validated: precision {learned.cv_precision:.2f}, recall "
        f"{learned.cv_recall:.2f}, AUPRC {learned.cv_auprc:.2f}",
        file=info,
    )
    weights = learned.weight_table()
    print(
        "log-odds weights (preset + learned change): "
        + ", ".join(f"{r.evidence} {r.learned:+.3f}" for r in weights.itertuples(index=False)),
        file=info,
    )
    return rerank(table, learned, order=args.learn_order)
